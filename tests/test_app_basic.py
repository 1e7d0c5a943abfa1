"""The Gradio app answers its named API endpoint and turns bad input into a clear error."""

from __future__ import annotations

import socket

import pytest
from gradio_client import Client, handle_file

from _tiny_models import REPO, train_tiny
from tumorlens.app import build_demo, example_paths
from tumorlens.inference import Pipeline

BRISC = REPO.parent / "shared" / "data" / "brisc2025"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("app")
    seg, cls = train_tiny("segmenter", work)[1], train_tiny("classifier", work)[1]
    demo = build_demo(Pipeline.from_pretrained(seg, cls, runtime="torch"), example_paths())
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    demo.close()


def test_examples_come_from_the_dataset_one_per_class():
    paths = example_paths()
    assert len(paths) == 4 and all(str(BRISC) in p for p in paths)
    assert [p.split("/")[-2] for p in paths] == ["glioma", "meningioma", "no_tumor", "pituitary"]


def test_analyze_endpoint_returns_every_output(served, tmp_path):
    image = sorted((BRISC / "classification_task" / "test" / "glioma").glob("*.jpg"))[0]
    overlay, mask, heat, label, verdict, area = served.predict(handle_file(str(image)), 0.5, 0.5, api_name="/analyze")
    assert label["label"] in ("glioma", "meningioma", "no_tumor", "pituitary") and len(label["confidences"]) == 4
    assert "tumor found" in verdict.lower()
    assert "px" in area and ("mm²" in area if "No tumor" not in verdict else True)


def test_bad_upload_is_a_clear_error_and_the_app_keeps_serving(served, tmp_path):
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"this is not a PNG")
    with pytest.raises(Exception, match="Cannot read this image"):
        served.predict(handle_file(str(bad)), 0.5, None, api_name="/analyze")
    image = sorted((BRISC / "classification_task" / "test" / "no_tumor").glob("*.jpg"))[0]
    assert served.predict(handle_file(str(image)), 0.5, None, api_name="/analyze")[3]["label"]
