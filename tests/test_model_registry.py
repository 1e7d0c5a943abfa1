"""The segmenters available by name (each folder under models/, named by its metadata.json: brisc2025,
lgg), each model's record, and the places that pick a model by them: the predict CLI, the app's
model menu and the Space bundle.

The LGG model is not shipped yet, so an LGG stand-in is trained here by the real script (one step
on 8 kaggle_3m slices) and run on real LGG test slices; `models/` is swapped for a folder of
stand-ins where a test needs both models "shipped"."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import threading
import time
from argparse import Namespace
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from _tiny_models import REPO  # also puts train/ on sys.path
from tumorlens import postprocess, registry
from tumorlens.__main__ import main as cli
from tumorlens.app import NO_TUMOR_TYPE_NOTE, SegmenterBank, build_demo, pipeline_for_ui
from tumorlens.data import TUMOR_CLASSES, lgg
from tumorlens.examples import example_label, lgg_example_paths
from tumorlens.inference import Pipeline, Segmenter
from tumorlens.model_record import METADATA_NAME, read_record
from tumorlens.registry import (BRISC_CLASSIFIER, BRISC_SEGMENTER, LGG_SEGMENTER, UnknownModelError,
                                available_segmenters, default_model, hub_repo, resolve_model, segmenter_name)
from tumorlens.predict import pick_classifier
from tumorlens.preprocess import decode_image, decode_mask
from tumorlens.space_bundle import SPACE_CONFIG_NAME, build_space, space_settings

BRISC_SLICE = sorted((REPO.parent / "shared" / "data" / "brisc2025" / "classification_task" / "test" / "glioma")
                     .glob("*.jpg"))[0]
# distinct thresholds tell the two stand-ins (same weights) apart in the app
STAND_IN_THRESHOLDS = {"brisc2025": 0.35, "lgg": 0.65}
SHIPPED_MODELS = REPO / "models"  # the real ones (tests below swap registry.MODELS_DIR)
SEGMENTER_FOLDERS = {"brisc2025": BRISC_SEGMENTER, "lgg": LGG_SEGMENTER}
# the menu labels the app showed when they were a table in code: the records keep them
MENU_LABELS = {"brisc2025": "BRISC 2025 - T1 contrast-enhanced, 1 channel",
               "lgg": "LGG - FLAIR abnormality, 3-channel pre-contrast/FLAIR/post-contrast"}


@pytest.fixture(scope="session")
def tiny_lgg(tmp_path_factory, data_home) -> Path:
    """An LGG segmenter folder in the Hub layout from train/train_segmenter.py --dataset lgg."""
    import train_segmenter

    root = tmp_path_factory.getbasetemp() / "tiny-models"
    out = root / "out-lgg-segmenter"
    if not (out / "config.json").is_file():
        train_segmenter.main(["--dataset", "lgg", "--limit", "8", "--max-steps", "1", "--batch-size", "4",
                              "--threads", "1", "--skip-eval", "--run-dir", str(root / "run-lgg-segmenter"),
                              "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def lgg_test_slices(data_home) -> list[Path]:
    """Three real LGG test slices (3-channel: pre-contrast, FLAIR, post-contrast), spread over the split."""
    test = lgg.load(check="none")["test"].cast_column("image", datasets.Image(decode=False))
    paths = [Path(row["path"]) for row in test["image"]]
    return [paths[0], paths[len(paths) // 2], paths[-1]]


@pytest.fixture
def models_dir(tmp_path, monkeypatch, tiny_lgg) -> Path:
    """models/ swapped for stand-ins of both shipped segmenters (the tiny LGG weights, linked; each
    shipped folder's own metadata.json) and a classifier folder that is only ever looked at, never loaded."""
    models = tmp_path / "models"
    for name, folder_name in SEGMENTER_FOLDERS.items():
        folder = models / folder_name
        folder.mkdir(parents=True)
        for f in tiny_lgg.iterdir():
            if f.is_file() and f.name not in (postprocess.INFERENCE_CONFIG_NAME, METADATA_NAME):
                (folder / f.name).symlink_to(f)
        shutil.copy(SHIPPED_MODELS / folder_name / METADATA_NAME, folder / METADATA_NAME)
        tuned = json.loads((tiny_lgg / postprocess.INFERENCE_CONFIG_NAME).read_text())
        (folder / postprocess.INFERENCE_CONFIG_NAME).write_text(json.dumps({**tuned, "threshold": STAND_IN_THRESHOLDS[name]}))
    classifier = models / registry.DEFAULT_MODELS["classifier"][1]
    classifier.mkdir()
    (classifier / "config.json").write_text("{}")
    monkeypatch.setattr(registry, "MODELS_DIR", models)
    for env in ("TUMORLENS_SEG_MODEL", "TUMORLENS_CLS_MODEL"):
        monkeypatch.delenv(env, raising=False)
    return models


class CountingClassifier:
    """Stands in for the BRISC classifier: even odds, and a count of the images it was shown."""

    label_names = list(TUMOR_CLASSES)
    needs_masks = False  # a whole-slice classifier

    def __init__(self):
        self.images = 0

    def probabilities(self, images, masks=None):
        self.images += len(images)
        return np.full((len(images), len(self.label_names)), 1 / len(self.label_names), np.float32)


# -- the registry --------------------------------------------------------------------------
def test_names_folders_and_repo_ids_resolve(models_dir, tiny_lgg, monkeypatch):
    lgg_folder = models_dir / LGG_SEGMENTER
    assert available_segmenters() == {"brisc2025": str(models_dir / BRISC_SEGMENTER), "lgg": str(lgg_folder)}
    assert resolve_model("lgg") == str(lgg_folder)
    assert resolve_model(str(tiny_lgg)) == str(tiny_lgg)
    assert resolve_model("someone/lgg-segmenter") == "someone/lgg-segmenter"
    assert segmenter_name("lgg") == segmenter_name(lgg_folder) == "lgg"
    assert segmenter_name(tiny_lgg) is None and segmenter_name("someone/x") is None
    # default_model keeps its ways: the shipped BRISC folder, the environment over it
    assert default_model("segmenter") == str(models_dir / BRISC_SEGMENTER)
    monkeypatch.setenv("TUMORLENS_SEG_MODEL", "someone/other")
    assert default_model("segmenter") == "someone/other"


def test_unknown_and_unshipped_names_say_what_to_pass(models_dir):
    with pytest.raises(UnknownModelError, match=r"unknown segmenter 'lgg2': pass one of brisc2025, lgg, "
                                                r"a model folder or a Hub repo id \(owner/name\)"):
        resolve_model("lgg2")
    with pytest.raises(UnknownModelError, match="unknown segmenter './no/such/folder'"):
        resolve_model("./no/such/folder")
    with pytest.raises(UnknownModelError, match="unknown classifier 'none-such'"):
        resolve_model("none-such", "classifier")
    shutil.rmtree(models_dir / LGG_SEGMENTER)
    assert list(available_segmenters()) == ["brisc2025"]
    with pytest.raises(UnknownModelError, match=r"unknown segmenter 'lgg': pass one of brisc2025, a model folder"):
        resolve_model("lgg")


# -- the predict CLI -----------------------------------------------------------------------
def test_predict_cli_lgg_stand_in_without_classifier(tiny_lgg, lgg_test_slices, tmp_path):
    out = tmp_path / "out"
    rc = cli(["predict", *map(str, lgg_test_slices), "--out", str(out), "--seg-model", str(tiny_lgg), "--no-cls",
              "--runtime", "torch"])
    assert rc == 0
    with open(out / "predictions.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert not any(c.startswith("prob_") for c in reader.fieldnames)
    assert [r["status"] for r in rows] == ["ok"] * 3 and all(r["predicted_class"] == "" for r in rows)
    segmenter = Segmenter.from_pretrained(tiny_lgg, runtime="torch")
    for path, row in zip(lgg_test_slices, rows):
        rgb = decode_image(path)
        assert not np.array_equal(rgb[..., 0], rgb[..., 1])  # three sequences reach the model, not gray
        mask = np.asarray(Image.open(out / row["mask_file"]))
        assert mask.shape == rgb.shape[:2] and set(np.unique(mask)) <= {0, 255}
        assert int(row["tumor_pixels"]) == int((mask == 255).sum()) == segmenter.segment(rgb).area_px


def test_predict_lgg_by_name_runs_no_classifier_unless_asked(models_dir, lgg_test_slices, tmp_path, caplog):
    def args(**kw):
        return Namespace(**{"no_classifier": False, "cls_model": None, **kw})

    shipped_classifier = str(models_dir / registry.DEFAULT_MODELS["classifier"][1])
    with caplog.at_level(logging.INFO, logger="tumorlens.predict"):
        assert pick_classifier(args(), "lgg") is None
        assert pick_classifier(args(), str(models_dir / LGG_SEGMENTER)) is None
    assert "segmenter lgg: the tumor-type classifier (trained on BRISC 2025 T1c slices) does not apply" in caplog.text
    assert pick_classifier(args(), "brisc2025") == pick_classifier(args(), None) == shipped_classifier
    assert pick_classifier(args(cls_model="someone/cls"), "lgg") == "someone/cls"
    assert pick_classifier(args(cls_model="none"), "brisc2025") is None
    assert pick_classifier(args(no_classifier=True), "brisc2025") is None

    out = tmp_path / "out"
    assert cli(["predict", str(lgg_test_slices[0]), "--out", str(out), "--seg-model", "lgg", "--runtime", "torch"]) == 0
    (row,) = list(csv.DictReader(open(out / "predictions.csv")))
    assert row["status"] == "ok" and row["predicted_class"] == "" and "prob_glioma" not in row
    assert cli(["predict", str(lgg_test_slices[0]), "--out", str(out), "--seg-model", "lgg3"]) == 2


# -- the app -------------------------------------------------------------------------------
def test_app_menu_offers_both_and_switching_runs_the_chosen_model(models_dir, lgg_test_slices):
    brisc_folder, lgg_folder = (str(models_dir / SEGMENTER_FOLDERS[n]) for n in ("brisc2025", "lgg"))
    classifier = CountingClassifier()
    pipeline = Pipeline(Segmenter.from_pretrained(brisc_folder, runtime="torch"), classifier)
    loads = []

    def load(location):
        loads.append(location)
        return Segmenter.from_pretrained(resolve_model(location), runtime="torch")

    lgg_slice = str(lgg_test_slices[0])
    demo = build_demo(pipeline, [str(BRISC_SLICE), (lgg_slice, "lgg")], load_segmenter=load)
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    menu = blocks["model"]
    assert menu.visible and menu.value == "brisc2025"
    assert [tuple(c) for c in menu.choices] == [(MENU_LABELS["brisc2025"], "brisc2025"), (MENU_LABELS["lgg"], "lgg")]
    assert blocks["threshold"].value == STAND_IN_THRESHOLDS["brisc2025"]
    assert loads == []  # the LGG model waits until it is chosen
    fns = {fn.name: fn.fn for fn in demo.fns.values()}

    *_, label, verdict, _ = fns["analyze"](str(BRISC_SLICE), None, None, -1, False, None, progress=None)
    assert list(label) == list(TUMOR_CLASSES) and classifier.images == 1

    threshold, *images, label_box, verdict, size = fns["switch_model"]("lgg", lgg_slice, None, -1, False,
                                                                       False, progress=None)
    assert loads == [lgg_folder]
    assert threshold["value"] == STAND_IN_THRESHOLDS["lgg"]  # the slider moves to the LGG model's own
    assert label_box == {"__type__": "update", "value": None, "label": NO_TUMOR_TYPE_NOTE}
    expected = Segmenter.from_pretrained(lgg_folder, runtime="torch").segment(decode_image(lgg_slice))
    assert expected.threshold == STAND_IN_THRESHOLDS["lgg"]
    assert np.array_equal(images[1] > 0, expected.mask) and NO_TUMOR_TYPE_NOTE in verdict
    assert classifier.images == 1  # the BRISC classifier never sees an LGG slice

    # the API: model as the last, optional argument; the loaded model is kept
    *_, label, verdict, _ = fns["analyze"](lgg_slice, None, None, -1, False, "lgg", progress=None)
    assert label is None and NO_TUMOR_TYPE_NOTE in verdict and loads == [lgg_folder]
    *_, label, _, _ = fns["analyze"](str(BRISC_SLICE), None, None, -1, False, "brisc2025", progress=None)
    assert label is not None and classifier.images == 2
    with pytest.raises(Exception, match="unknown segmentation model 'lgg2': choose one of brisc2025, lgg"):
        fns["analyze"](lgg_slice, None, None, -1, False, "lgg2", progress=None)


def test_one_segmenter_means_no_menu(models_dir):
    pipeline = Pipeline(Segmenter.from_pretrained(models_dir / BRISC_SEGMENTER, runtime="torch"))
    demo = build_demo(pipeline, segmenters={})
    menu = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model")
    assert not menu.visible and [tuple(c)[1] for c in menu.choices] == ["brisc2025"]


def test_models_load_once_across_threads_and_a_broken_one_is_a_clear_error():
    ready = Pipeline(None, CountingClassifier())
    calls = []

    def slow_load(location):
        calls.append(location)
        time.sleep(0.2)
        return object.__new__(Segmenter)

    lgg_location = str(SHIPPED_MODELS / LGG_SEGMENTER)  # its record names it; the stub never loads it
    bank = SegmenterBank(ready, {"lgg": lgg_location}, load_segmenter=slow_load)
    got = []
    threads = [threading.Thread(target=lambda: got.append(bank.get("lgg"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [lgg_location] and len({id(p) for p in got}) == 1 and got[0].classifier is None

    def broken(location):
        raise OSError("no such model")

    bank = SegmenterBank(ready, {"lgg": lgg_location}, load_segmenter=broken)
    with pytest.raises(Exception, match=r"Cannot load the LGG model \(OSError: no such model\); the other models still work"):
        pipeline_for_ui(bank, "lgg")
    assert pipeline_for_ui(bank, "brisc2025") is ready


@pytest.mark.usefixtures("data_home")
def test_lgg_examples_come_from_the_test_split_with_an_abnormality():
    paths = lgg_example_paths()
    test_patients = set(lgg.load(check="none")["test"]["patient_id"])
    assert len(paths) == 3 and len({Path(p).parent for p in paths}) == 3
    for p in paths:
        assert "_".join(Path(p).parent.name.split("_")[:3]) in test_patients
        assert decode_mask(Path(p).with_name(Path(p).stem + "_mask.png")).any()
    case, number = Path(paths[0]).stem.rsplit("_", 1)
    assert example_label(paths[0], "lgg") == f"LGG: {case}, slice {number}"
    assert example_label(str(BRISC_SLICE), "brisc2025") == "glioma"
    assert lgg_example_paths("/nonexistent/lgg") == []


# -- the Space bundle ----------------------------------------------------------------------
def test_space_bundle_references_the_lgg_model_when_shipped(models_dir, tmp_path):
    out = build_space(tmp_path / "space")
    config = json.loads((out / SPACE_CONFIG_NAME).read_text())
    assert config["segmenters"] == {"lgg": hub_repo(LGG_SEGMENTER)}
    from huggingface_hub import SpaceCard

    assert hub_repo(LGG_SEGMENTER) in SpaceCard.load(out / "README.md").data.models
    assert space_settings(out)["segmenters"] == {"lgg": hub_repo(LGG_SEGMENTER),
                                                 "brisc2025": config["seg_model"]}
    out = build_space(tmp_path / "chosen", segmenters={"lgg": "someone/lgg"})
    assert json.loads((out / SPACE_CONFIG_NAME).read_text())["segmenters"] == {"lgg": "someone/lgg"}
    out = build_space(tmp_path / "without", segmenters={})
    assert "segmenters" not in json.loads((out / SPACE_CONFIG_NAME).read_text())
    out = build_space(tmp_path / "weights", include_weights=True)
    lgg_ref = f"models/{LGG_SEGMENTER}"
    assert json.loads((out / SPACE_CONFIG_NAME).read_text())["segmenters"] == {"lgg": lgg_ref}
    assert (out / lgg_ref / "model.safetensors").is_file()
    assert space_settings(out)["segmenters"]["lgg"] == str(out / lgg_ref)
    shutil.rmtree(models_dir / LGG_SEGMENTER)
    out = build_space(tmp_path / "unshipped")
    assert "segmenters" not in json.loads((out / SPACE_CONFIG_NAME).read_text())


# -- one record per model, in its folder ---------------------------------------------------
@pytest.mark.parametrize("folder, name, task, tumor_types", [
    (BRISC_SEGMENTER, "brisc2025", "segmentation", True),
    (LGG_SEGMENTER, "lgg", "segmentation", False),
    (BRISC_CLASSIFIER, "brisc2025", "classification", True),
])
def test_each_shipped_folder_states_its_record(folder, name, task, tumor_types):
    record = read_record(SHIPPED_MODELS / folder)
    assert (record.name, record.task, record.tumor_types, record.has_metadata) == (name, task, tumor_types, True)
    assert record.modality == "MRI" and len(record.channels) == 3 and "Research use only" in record.intended_use
    # the input contract and the clean-up come from the folder's own files, not from metadata.json
    stored = json.loads((SHIPPED_MODELS / folder / METADATA_NAME).read_text())
    assert stored["schema"] == "tumorlens.model/1" and "threshold" not in stored and "input_size" not in stored
    tuned = json.loads((SHIPPED_MODELS / folder / postprocess.INFERENCE_CONFIG_NAME).read_text())
    assert record.threshold == tuned.get("threshold")
    pre = json.loads((SHIPPED_MODELS / folder / "preprocessor_config.json").read_text())
    assert (record.input_size, record.mean, record.std) == (pre["input_size"], tuple(pre["mean"]), tuple(pre["std"]))
    if task == "segmentation":
        assert record.title == MENU_LABELS[name] and record.threshold is not None
    else:
        assert record.tta_hflip is tuned["tta_hflip"]
    if name == "lgg":
        assert record.channels == ("pre-contrast", "FLAIR", "post-contrast")


@pytest.fixture
def models_with(tmp_path, monkeypatch):
    """A models/ holding the shipped folders (linked) plus copies of the BRISC segmenter under other
    names: `models_with(copy_name, keep_metadata)` adds one and returns its folder."""
    models = tmp_path / "models"
    models.mkdir()
    for folder in (BRISC_SEGMENTER, LGG_SEGMENTER, BRISC_CLASSIFIER):
        (models / folder).symlink_to(SHIPPED_MODELS / folder, target_is_directory=True)
    monkeypatch.setattr(registry, "MODELS_DIR", models)
    for env in ("TUMORLENS_SEG_MODEL", "TUMORLENS_CLS_MODEL"):
        monkeypatch.delenv(env, raising=False)

    def add(copy_name: str, keep_metadata: bool = True) -> Path:
        copy = models / copy_name
        shutil.copytree(SHIPPED_MODELS / BRISC_SEGMENTER, copy)
        if not keep_metadata:
            (copy / METADATA_NAME).unlink()
        return copy
    return add


def generated_slice(path: Path) -> Path:
    """A small grey slice with a bright blob: enough for a model to run on."""
    yy, xx = np.mgrid[:96, :96]
    image = (40 + 160 * (((yy - 50) ** 2 + (xx - 40) ** 2) < 200)).astype(np.uint8)
    Image.fromarray(image).save(path)
    return path


def test_a_copied_segmenter_folder_loads_in_the_menu_and_in_predict(models_with, tmp_path, caplog):
    copy = models_with("my-brisc-copy")  # metadata.json still says brisc2025: the folder's name keys it
    assert available_segmenters() == {"brisc2025": str(copy.parent / BRISC_SEGMENTER),
                                      "my-brisc-copy": str(copy), "lgg": str(copy.parent / LGG_SEGMENTER)}
    assert resolve_model("my-brisc-copy") == str(copy) and segmenter_name(copy) == "my-brisc-copy"

    classifier = CountingClassifier()
    bank = SegmenterBank(Pipeline(None, classifier), available_segmenters(),
                         load_segmenter=lambda location: Segmenter.from_pretrained(location, runtime="torch"))
    assert ("my-brisc-copy" in bank.names and bank.tumor_types("my-brisc-copy")
            and bank.record("my-brisc-copy").short == "BRISC 2025")
    labels = dict((name, label) for label, name in bank.choices)
    assert labels["brisc2025"] == MENU_LABELS["brisc2025"] and labels["lgg"] == MENU_LABELS["lgg"]
    assert labels["my-brisc-copy"] == f"{MENU_LABELS['brisc2025']} (my-brisc-copy)"  # a shared label says which
    copied = bank.get("my-brisc-copy")
    assert copied.classifier is classifier and copied.segmenter.record.trained_on == "brisc2025"
    assert copied.segmenter.threshold == read_record(copy).threshold

    png = generated_slice(tmp_path / "slice.png")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="tumorlens.predict"):
        assert cli(["predict", str(png), "--out", str(out), "--seg-model", "my-brisc-copy", "--runtime", "torch",
                    "--no-scope-check"]) == 0  # a drawn slice, not an MRI
    assert "does not apply" not in caplog.text
    (row,) = list(csv.DictReader(open(out / "predictions.csv")))
    assert row["status"] == "ok" and (out / row["mask_file"]).is_file()
    assert row["predicted_class"] in TUMOR_CLASSES  # the classifier ran: the copy's record says tumor types apply


def test_a_folder_without_metadata_gets_a_record_that_runs_no_classifier(models_with, tmp_path, caplog):
    bare = models_with("someone-elses-unet", keep_metadata=False)
    record = read_record(bare)
    assert (record.name, record.title, record.task, record.has_metadata) == ("someone-elses-unet",) * 2 + (
        "segmentation", False)
    assert record.tumor_types is False and record.channels == ("unknown",) * 3
    assert record.threshold == read_record(SHIPPED_MODELS / BRISC_SEGMENTER).threshold  # its own files still count
    assert available_segmenters()["someone-elses-unet"] == str(bare)

    png = generated_slice(tmp_path / "slice.png")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="tumorlens.predict"):
        assert cli(["predict", str(png), "--out", str(out), "--seg-model", str(bare), "--runtime", "torch",
                    "--no-scope-check"]) == 0  # a drawn slice, not an MRI
    assert "segmenter someone-elses-unet: the tumor-type classifier" in caplog.text and METADATA_NAME in caplog.text
    with open(out / "predictions.csv") as f:
        reader = csv.DictReader(f)
        (row,) = list(reader)
    assert row["status"] == "ok" and (out / row["mask_file"]).is_file() and row["predicted_class"] == ""
    assert not any(c.startswith("prob_") for c in reader.fieldnames)
    bank = SegmenterBank(Pipeline(None, CountingClassifier()), available_segmenters(), load_segmenter=None)
    assert not bank.tumor_types("someone-elses-unet") and bank.tumor_types("brisc2025")
