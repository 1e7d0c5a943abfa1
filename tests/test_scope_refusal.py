"""The out-of-scope gate where users meet it: `analyze_scan`, the app's /analyze and /explain (with the
"analyze anyway" override), the exports, and `tumorlens predict` (refused rows, --no-scope-check, --cam).
The shipped models and gate on a photo and on real BRISC 2025 test slices."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from _tiny_models import REPO
from test_app import free_port
from tumorlens.app import Request, SegmenterBank, analyze_with_model, build_demo, explain_for_ui, launch_options
from tumorlens.inference import Pipeline
from tumorlens.scan_analysis import RecentResults, analyze_scan, load_scan
from tumorlens.scan_verdict import report
from tumorlens.scan_outputs import FORMATS, write_outputs
from tumorlens.scope_gate import REFUSAL, load_gate

SEGMENTER = REPO / "models" / "tumorlens-unet-mobilenetv2-brisc2025"
CLASSIFIER = REPO / "models" / "tumorlens-efficientnet-lite0-brisc2025"
GLIOMA = "brisc2025/classification_task/test/glioma/brisc2025_test_00003_gl_ax_t1.jpg"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline():
    return Pipeline.from_pretrained(SEGMENTER, CLASSIFIER, runtime="torch")


@pytest.fixture(scope="module")
def gate():
    found = load_gate(CLASSIFIER)
    assert found is not None, "the shipped classifier folder has no scope_gate.safetensors"
    return found


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A photograph (scikit-image's astronaut), as a user would upload it."""
    from skimage import data
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def test_analyze_scan_refuses_a_photo_unless_asked_anyway(pipeline, gate, photo, data_home, tmp_path):
    scan = load_scan(photo)
    refused = analyze_scan(pipeline, scan, scope_gate=gate)
    assert refused.refused and refused.segmentation is None and not refused.analysis.class_probabilities
    verdict, size = report(refused)
    assert verdict.startswith("### Not analyzed") and REFUSAL in verdict and "Analyze anyway" in verdict
    assert "Tumor found" not in verdict and size == ""
    outputs = write_outputs(refused, tmp_path / "refused", formats=FORMATS, stem="photo", name=photo.name)
    assert "scope check refused" in outputs.skipped["png"] and outputs.download("report") is not None

    anyway = analyze_scan(pipeline, scan, scope_gate=gate, analyze_anyway=True)
    assert not anyway.refused and anyway.analyzed_anyway and anyway.segmentation is not None
    verdict, size = report(anyway)
    assert "**Analyzed anyway:**" in verdict and "Scope check:" in size

    slice_ = analyze_scan(pipeline, load_scan(data_home / GLIOMA), scope_gate=gate)
    assert slice_.scope.in_scope and not slice_.refused and slice_.segmentation.area_px > 0
    assert f"scope score {slice_.scope.score:.2f}" in report(slice_)[1]
    # without a gate nothing is checked, as before
    assert analyze_scan(pipeline, scan).scope is None


def test_the_app_refuses_a_photo_and_analyzes_it_anyway_when_asked(pipeline, gate, photo, data_home):
    demo = build_demo(pipeline, [], segmenters={}, scope_gate=gate)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        from gradio_client import Client
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        params = [p["parameter_name"] for p in client.view_api(print_info=False, return_format="dict")
                  ["named_endpoints"]["/analyze"]["parameters"]]
        assert params[-1] == "analyze_anyway"
        overlay, mask, heat, uncertainty, label, verdict, size = client.predict(
            handle_file(str(photo)), 0.5, None, api_name="/analyze")
        assert verdict.startswith("### Not analyzed") and mask is None and heat is None and not label  # no tumor type
        assert client.predict(handle_file(str(photo)), 0.5, None, api_name="/explain") is None
        overlay, mask, heat, uncertainty, label, verdict, size = client.predict(
            handle_file(str(photo)), 0.5, None, -1, False, None, True, api_name="/analyze")
        assert "Analyzed anyway" in verdict and mask is not None and label["label"]
        # an in-scope slice: all the maps, and the tumor type's explanation with its colour bar
        glioma = str(data_home / GLIOMA)
        overlay, mask, heat, uncertainty, label, verdict, size = client.predict(
            handle_file(glioma), 0.5, None, api_name="/analyze")
        assert "Not analyzed" not in verdict and label["label"] == "glioma" and uncertainty is not None
        cam = client.predict(handle_file(glioma), 0.5, None, api_name="/explain")
        width, height = Image.open(cam).size
        assert height == 512 and width > 512
    finally:
        demo.close()


def test_explain_reuses_the_analysis_the_page_shows(pipeline, gate, data_home):
    bank = SegmenterBank(pipeline, {}, scope_gate=gate)
    recent = RecentResults()
    request = Request(str(data_home / GLIOMA))
    analyze_with_model(bank, request, recent=recent)
    calls = []
    original = pipeline.segmenter.probabilities
    pipeline.segmenter.probabilities = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        image = explain_for_ui(bank, request, recent)
    finally:
        pipeline.segmenter.probabilities = original
    assert calls == [] and image.shape[0] == 512 and image.shape[1] > 512


def test_predict_refuses_out_of_scope_files_and_writes_cams(photo, data_home, tmp_path):
    from tumorlens.__main__ import main
    glioma = data_home / GLIOMA
    out = tmp_path / "out"
    assert main(["predict", str(photo), str(glioma), "--out", str(out), "--cam"]) == 0
    rows = {r["file"]: r for r in csv.DictReader(open(out / "predictions.csv"))}
    refused, kept = rows[str(photo)], rows[str(glioma)]
    assert refused["status"] == "refused" and refused["in_scope"] == "False" and float(refused["scope_score"]) < 0.5
    assert refused["mask_file"] == "" and not list(out.glob("astronaut*"))
    assert kept["status"] == "ok" and kept["in_scope"] == "True" and kept["predicted_class"] == "glioma"
    cam = np.asarray(Image.open(out / kept["cam_file"]))
    assert cam.shape[0] == 512 and cam.shape[1] > 512
    anyway = tmp_path / "anyway"
    assert main(["predict", str(photo), "--out", str(anyway), "--no-scope-check"]) == 0
    row = next(csv.DictReader(open(anyway / "predictions.csv")))
    assert row["status"] == "ok" and row["in_scope"] == "" and row["mask_file"]
