"""Figshare as extra BRISC training data: copies of BRISC validation and test images never enter."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tumorlens.data import TUMOR_CLASSES, figshare
from tumorlens.errors import ConfigError
from tumorlens.training.specs import DataSpec
from tumorlens.training.splits import train_val_packs


def _data(**kw) -> DataSpec:
    return DataSpec(**{"extra_train": "figshare", **kw})


def _plant(figshare_root, figshare_id: int, brisc_root, split: str, name: str) -> None:
    """Copy a Figshare slice into BRISC as BRISC did (resized, re-encoded JPEG)."""
    im = Image.open(figshare_root / "images" / f"{figshare_id}.jpg").convert("L").resize((300, 300), Image.BILINEAR)
    im.save(brisc_root / "classification_task" / split / "glioma" / name, quality=90)


@pytest.fixture
def trees(data_home, tmp_path, monkeypatch):
    from conftest import build_brisc_tree, build_figshare_tree
    from tumorlens import audit
    monkeypatch.setenv(audit.CACHE_ENV, str(tmp_path / "audit-cache"))
    monkeypatch.setenv("TUMORLENS_CACHE", str(tmp_path / "packs"))
    root = tmp_path / "data"
    build_brisc_tree(data_home, root / "brisc2025")
    build_figshare_tree(data_home, root / "figshare")
    _plant(root / "figshare", 1, root / "brisc2025", "test", "brisc2025_test_09999_gl_ax_t1.jpg")
    _plant(root / "figshare", 2, root / "brisc2025", "train", "brisc2025_train_09999_gl_ax_t1.jpg")
    return root


def test_figshare_copies_of_brisc_test_stay_out_and_the_rest_joins_training(trees):
    packs = train_val_packs("classification", 64, _data(root=trees / "brisc2025"))
    train, val, class_names = packs.train, packs.val, packs.class_names
    assert class_names == list(TUMOR_CLASSES)
    added = [i for i, n in enumerate(train["file_names"]) if not str(n).startswith("brisc2025_")]
    names = {str(train["file_names"][i]) for i in added}
    # 6 slices less the copy of a test image, and the copy of a train image if the split put it in validation
    left_out = {"1.jpg"} | ({"2.jpg"} if "brisc2025_train_09999_gl_ax_t1.jpg" in set(val["file_names"]) else set())
    assert names == {f"{i}.jpg" for i in range(1, 7)} - left_out
    assert all(str(n).startswith("brisc2025_") for n in val["file_names"])  # validation stays BRISC only
    fs = figshare.load(trees / "figshare")["train"]
    truth = dict(zip(fs["file_name"], fs["label"]))
    assert [int(train["labels"][i]) for i in added] == [truth[str(train["file_names"][i])] for i in added]
    assert set(np.asarray(train["labels"])[added]) <= {TUMOR_CLASSES.index(c) for c in ("glioma", "meningioma", "pituitary")}
    assert packs.provenance["extra_train"] == "figshare"
    assert packs.provenance["n_extra"] == 6 - len(left_out) and packs.provenance["n_extra_excluded"] == len(left_out)


def test_a_copy_of_a_validation_image_is_found_as_for_test(trees):
    from tumorlens import audit
    planted = "brisc2025_train_09999_gl_ax_t1.jpg"
    assert audit.duplicates_of_brisc("figshare", {planted}, trees, progress=False) == {"2.jpg"}
    assert audit.duplicates_of_brisc("figshare", set(), trees, progress=False) == set()
    with pytest.raises(ValueError, match="not in BRISC"):
        audit.duplicates_of_brisc("figshare", {"no_such_image.jpg"}, trees, progress=False)


def test_segmentation_packs_keep_figshare_masks(trees):
    train = train_val_packs("segmentation", 64, _data(root=trees / "brisc2025")).train
    added = [i for i, n in enumerate(train["file_names"]) if not str(n).startswith("brisc2025_")]
    assert len(added) >= 4 and train["masks"][added].any(axis=(1, 2)).all()


def test_extra_figshare_cannot_be_combined_with_leaving_figshare_out(trees):
    with pytest.raises(ConfigError, match="cannot be combined"):
        train_val_packs("classification", 64, _data(root=trees / "brisc2025", exclude_duplicates_of="figshare"))
    with pytest.raises(ConfigError, match="brisc2025 only"):
        train_val_packs("segmentation", 64, _data(dataset="lgg"))


@pytest.mark.parametrize("kind, folder", [("classifier", "models/tumorlens-efficientnet-lite0-brisc2025"),
                                          ("segmenter", "models/tumorlens-unet-mobilenetv2-brisc2025")])
def test_the_card_names_the_added_figshare_slices(kind, folder, tmp_path):
    import json
    import shutil

    from tumorlens.hub import write_card
    model = tmp_path / "model"
    shutil.copytree(folder, model)
    info_path = model / "training_info.json"
    info = json.loads(info_path.read_text())
    info["data"] = {k: v for k, v in info.get("data", {}).items() if not k.startswith("extra")}  # as if BRISC only
    info_path.write_text(json.dumps(info))
    ev = json.loads((model / "eval.json").read_text())
    ev.pop("without_extra_data_copies", None)
    (model / "eval.json").write_text(json.dumps(ev))
    assert "Figshare brain tumor dataset" not in write_card(model, kind).read_text()
    info["data"] = {**info.get("data", {}), "extra_train": "figshare", "n_extra": 2576, "n_extra_excluded": 488}
    info_path.write_text(json.dumps(info))
    card = write_card(model, kind).read_text()
    assert "2576 slices of the Figshare brain tumor dataset" in card and "less the 488" in card
    assert "Figshare brain tumor dataset (CC BY 4.0)" in card and "two public 2-D datasets" in card
    ev_path = model / "eval.json"
    ev = json.loads(ev_path.read_text())
    score = {"accuracy": 0.9964, "macro_f1": 0.99} if kind == "classifier" else {"dice": {"mean": 0.8765, "median": 0.9}}
    ev["without_extra_data_copies"] = {"extra_train": "figshare", "n": 840, **score}
    ev_path.write_text(json.dumps(ev))
    card = write_card(model, kind).read_text()
    assert "the audit finds in the added Figshare data removed (n=840) | " + ("99.64%" if kind == "classifier" else "0.8765") in card


def test_the_score_without_test_images_found_in_the_added_data(trees, tmp_path):
    import json

    from tumorlens.evaluate import _extra_data_check
    from tumorlens.data import brisc2025
    names = list(brisc2025.load_classification(trees / "brisc2025")["test"]["file_name"])
    model = tmp_path / "m"
    model.mkdir()
    assert _extra_data_check(model, trees / "brisc2025", names, lambda keep: {}) is None  # no record: no check
    (model / "training_info.json").write_text(json.dumps({"data": {"extra_train": "figshare"}}))
    check = _extra_data_check(model, trees / "brisc2025", names, lambda keep: {"n": int(keep.sum())})
    assert check["removed"] == ["brisc2025_test_09999_gl_ax_t1.jpg"] and check["n"] == len(names) - 1
