"""The public demo's trust pieces: the committed example slices, the example gallery and the Results tab.

- comparison_overlay colours a hand-made reference/prediction pair as its legend says;
- the committed examples are few, small, listed with source and licence, and serve example_paths();
- a gallery click puts the example (a list of one file) in the upload box and picks its model;
- the Results tab shows eval.json's scores, sorts the real per-slice scores both ways, and draws a
  real BRISC test slice with the shipped segmenter (tests that read the shared data are slow)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from _tiny_models import REPO
from test_medical_io import nifti_display_slices, phantom, phantom_file, write_dicom, write_nifti
from tumorlens import examples as examples_module
from tumorlens.app_gallery import THUMBNAIL_PX, example_choice, example_gallery
from tumorlens.app_results import (BEST_FIRST, NEEDS_DATA, WORST_FIRST, SlicePager, classifier_markdown,
                                   confusion_image, read_scores, results_tab, scored_slices, sort_slices)
from tumorlens.data import TUMOR_CLASSES, brisc2025
from tumorlens.examples import committed_examples, example_label, example_paths
from tumorlens.inference import Pipeline, Segmentation
from tumorlens.registry import BRISC_CLASSIFIER, BRISC_SEGMENTER, LGG_SEGMENTER
from tumorlens.segmenter_bank import SegmenterBank
from tumorlens.visualize import AGREEMENT_RGB, EXTRA_RGB, MISSED_RGB, comparison_overlay

EXAMPLES = REPO / "space" / "examples"
SHIPPED_SEGMENTER = REPO / "models" / BRISC_SEGMENTER
SHIPPED_LGG = REPO / "models" / LGG_SEGMENTER
SHIPPED_CLASSIFIER = REPO / "models" / BRISC_CLASSIFIER
NOWHERE = "/nonexistent/tumorlens-data"


def handler(demo: gr.Blocks, block: gr.components.Component, event: str):
    """The function the page runs on `block`'s `event`."""
    found = [f for f in demo.fns.values() if (block._id, event) in f.targets]
    assert len(found) == 1, f"{len(found)} handlers for {event} on {block.elem_id}"
    return found[0]


class EmptySegmenter:
    """Stands in for the BRISC segmenter where only the page's plumbing is tested: it marks nothing."""

    record = None

    def segment(self, rgb):
        blank = np.zeros(rgb.shape[:2], np.float32)
        return Segmentation(blank, blank > 0, 0.5)


def bank_of_shipped_scores() -> SegmenterBank:
    """The shipped folders' records and scores (both segmenters, the classifier); no model run."""
    return SegmenterBank(Pipeline(EmptySegmenter()), {"brisc2025": str(SHIPPED_SEGMENTER), "lgg": str(SHIPPED_LGG)},
                         pipeline_locations=(str(SHIPPED_SEGMENTER), str(SHIPPED_CLASSIFIER)))


# -- the comparison overlay ----------------------------------------------------------------
def test_comparison_overlay_colours_agreement_misses_and_extras():
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0] = 90  # a coloured slice: the background turns grey
    reference = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], bool)
    prediction = np.array([[0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]], bool)
    full = comparison_overlay(rgb, reference, prediction, alpha=1.0)
    assert tuple(full[0, 0]) == MISSED_RGB == (255, 0, 0)      # red: missed
    assert tuple(full[0, 1]) == AGREEMENT_RGB == (255, 255, 0)  # yellow: both
    assert tuple(full[0, 2]) == EXTRA_RGB == (0, 255, 0)        # green: extra
    assert (full[1:] == 30).all() and (full[0, 3] == 30).all()  # elsewhere: the grey of the slice
    blended = comparison_overlay(rgb, reference, prediction)
    assert blended[0, 0, 0] > blended[0, 0, 1] == blended[0, 0, 2]
    assert blended[0, 1, 0] == blended[0, 1, 1] > blended[0, 1, 2]
    assert blended[0, 2, 1] > blended[0, 2, 0] == blended[0, 2, 2]
    assert (blended[2] == 30).all()
    with pytest.raises(ValueError, match="same height and width"):
        comparison_overlay(rgb, reference, prediction[:2])


# -- committed examples --------------------------------------------------------------------
def test_committed_examples_are_few_small_and_listed_with_licence():
    found = committed_examples()
    readme = (EXAMPLES / "README.md").read_text()
    images = sorted(p.name for p in EXAMPLES.iterdir() if p.name != "README.md")
    assert 1 <= len(found) <= 8 and sorted(Path(e.path).name for e in found) == images
    for example in found:
        path = Path(example.path)
        assert path.stat().st_size < 150_000 and path.parent == EXAMPLES
        row = next(line for line in readme.splitlines() if f"`{path.name}`" in line)
        assert "CC BY 4.0" in row and example.label in row and example.dataset in ("brisc2025", "figshare")
        assert example.label in TUMOR_CLASSES and "TCGA" not in path.name  # LGG (CC BY-NC-SA) never committed
    assert "arXiv 2506.14318" in readme and "10.6084/m9.figshare.1512427" in readme
    brisc = [e for e in found if e.dataset == "brisc2025"]
    assert sorted(e.label for e in brisc) == sorted(TUMOR_CLASSES)
    for example in brisc:  # a test-split slice whose name says the class the README gives
        meta = brisc2025.parse_file_name(Path(example.path).name)
        assert meta["split"] == "test" and meta["label"] == example.label
        assert Image.open(example.path).size == (512, 512)
    assert len([e for e in found if e.dataset == "figshare"]) <= 3


def test_example_paths_are_the_committed_brisc_slices_without_a_hub_dataset(monkeypatch):
    monkeypatch.delenv(examples_module.EXAMPLES_DATASET_ENV, raising=False)
    paths = example_paths()
    assert [Path(p).parent for p in paths] == [EXAMPLES] * 4
    assert [example_label(p) for p in paths] == ["glioma", "meningioma", "healthy (no tumor)", "pituitary"]
    figshare = [e.path for e in committed_examples() if e.dataset == "figshare"]
    assert all(example_label(p).endswith("(Figshare)") for p in figshare)


def test_unlisted_or_missing_example_files_are_left_out(tmp_path, caplog):
    phantom_file(tmp_path / "listed.jpg")
    phantom_file(tmp_path / "unlisted.jpg")
    (tmp_path / "README.md").write_text(
        "| file | class | dataset | original | licence |\n|---|---|---|---|---|\n"
        "| `listed.jpg` | glioma | BRISC 2025 (`brisc2025`) | x | CC BY 4.0 |\n"
        "| `gone.jpg` | pituitary | BRISC 2025 (`brisc2025`) | y | CC BY 4.0 |\n")
    found = committed_examples(tmp_path)
    assert [(Path(e.path).name, e.label, e.dataset) for e in found] == [("listed.jpg", "glioma", "brisc2025")]
    assert "gone.jpg" in caplog.text and "unlisted.jpg is not listed" in caplog.text


def test_example_paths_fall_back_to_the_dataset_location_without_the_folder(monkeypatch, tmp_path, data_home):
    monkeypatch.delenv(examples_module.EXAMPLES_DATASET_ENV, raising=False)
    monkeypatch.setattr(examples_module, "EXAMPLES_FOLDERS", (tmp_path / "none",))
    paths = example_paths()
    assert [Path(p).parent.name for p in paths] == list(TUMOR_CLASSES)
    assert all(Path(p).resolve().is_relative_to((data_home / "brisc2025").resolve()) for p in paths)


# -- the example gallery -------------------------------------------------------------------
def test_gallery_thumbnails_and_a_click_set_the_upload_and_the_model(tmp_path):
    """An image, a NIfTI volume, a DICOM file and a 3-channel slice all render; a click gives the
    upload box a list of one file (the example's own name and bytes) and the example's model."""
    rgb_path = tmp_path / "TCGA_XX_0000_19990101_7.png"
    Image.fromarray(np.stack([phantom(1), phantom(2), phantom(3)], axis=-1)).save(rgb_path)
    rows = [(committed_examples()[0].path, "brisc2025"),
            (str(write_nifti(tmp_path / "head.nii.gz", nifti_display_slices())), "brisc2025"),
            (str(write_dicom(tmp_path / "slice.dcm", phantom(4).astype(np.uint16))), "brisc2025"),
            (str(rgb_path), "lgg")]
    labels = ["glioma", "volume", "dicom", "LGG: TCGA_XX_0000_19990101, slice 7"]
    with gr.Blocks() as demo:
        model = gr.Dropdown(["brisc2025", "lgg"], value="brisc2025")
        upload = gr.File(file_count="multiple", type="filepath")
        gallery = example_gallery(rows, labels, upload, model, folder=tmp_path / "gallery")
    assert gallery.elem_id == "examples" and gallery.visible
    items = gallery.value  # Gradio's copies of the thumbnails, with their captions
    assert [item["caption"] for item in items] == labels
    for item in items:
        with Image.open(item["image"]["path"]) as thumb:
            assert thumb.size == (THUMBNAIL_PX, THUMBNAIL_PX) and thumb.format == "PNG"
    select = handler(demo, gallery, "select")
    assert [o._id for o in select.outputs] == [upload._id, model._id]
    for index, (path, name) in enumerate(rows):
        files, chosen = select.fn(gr.SelectData(gallery, {"index": index, "value": None}))
        assert chosen == name and len(files) == 1
        assert Path(files[0]).name == Path(path).name and Path(files[0]).read_bytes() == Path(path).read_bytes()
    assert example_choice(rows, 99) == (gr.skip(), gr.skip())  # a stale page changes nothing


def test_gallery_leaves_out_an_unreadable_example_and_keeps_rows_paired(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    good = committed_examples()[1].path
    with gr.Blocks() as demo:
        model = gr.Dropdown(["brisc2025", "lgg"], value="brisc2025")
        upload = gr.File(file_count="multiple", type="filepath")
        gallery = example_gallery([(str(tmp_path / "broken.jpg"), "lgg"), (good, "brisc2025")], ["broken", "good"],
                                  upload, model, folder=tmp_path / "gallery")
    assert [item["caption"] for item in gallery.value] == ["good"]
    files, chosen = handler(demo, gallery, "select").fn(gr.SelectData(gallery, {"index": 0, "value": None}))
    assert Path(files[0]).name == Path(good).name and chosen == "brisc2025"
    with gr.Blocks():
        assert not example_gallery([], [], gr.File(file_count="multiple"), gr.Dropdown(["a"])).visible


# -- the Results tab -----------------------------------------------------------------------
@pytest.mark.parametrize("folder", [SHIPPED_SEGMENTER, SHIPPED_LGG])
def test_slices_sort_worst_and_best_first_from_a_real_eval_json(folder):
    scores = json.loads((folder / "eval.json").read_text())
    rows = scored_slices(scores)
    assert len(rows) == scores["n_tumor_slices"]  # the slices the mean Dice counts
    assert np.isclose(np.mean([r["dice"] for r in rows]), scores["dice_mean"])
    worst, best = sort_slices(rows, WORST_FIRST), sort_slices(rows, BEST_FIRST)
    dices = [r["dice"] for r in worst]
    assert dices == sorted(dices) and dices[0] == min(r["dice"] for r in rows)
    assert [r["dice"] for r in best] == sorted(dices, reverse=True)
    assert {r["file_name"] for r in worst} == {r["file_name"] for r in best} == {r["file_name"] for r in rows}
    with pytest.raises(ValueError):
        sort_slices(rows, "random")


def test_results_tab_shows_the_scores_and_says_the_pager_needs_the_data():
    bank = bank_of_shipped_scores()
    with gr.Blocks() as demo:
        with gr.Tab("Results"):
            pager = results_tab(bank, data_home=NOWHERE)
    texts = [c["props"].get("value") or "" for c in demo.get_config_file()["components"] if c["type"] == "markdown"]
    page = "\n".join(texts)
    seg = json.loads((SHIPPED_SEGMENTER / "eval.json").read_text())
    cls = json.loads((SHIPPED_CLASSIFIER / "eval.json").read_text())
    assert f"| {seg['dice_mean']:.3f} | {seg['dice_median']:.3f} | {seg['miou']:.3f} |" in page
    for group in ("glioma", "coronal", "large"):
        assert re.search(rf"\| {group}\b", page)
    assert f"{cls['accuracy']:.4f}" in page and "| pituitary |" in page
    assert NEEDS_DATA in page and "$TUMORLENS_DATA" in page and NOWHERE not in page
    assert any(c["props"].get("elem_id") == "results-confusion" for c in demo.get_config_file()["components"])
    assert pager.pageable == ["brisc2025", "lgg"]
    image, caption, rank = pager.page("brisc2025", WORST_FIRST, 10_000)  # out of range: the last one
    assert image is None and rank == seg["n_tumor_slices"] and NEEDS_DATA in caption
    assert pager.page("nope", BEST_FIRST, 1)[1].startswith("No scores for a model named 'nope'")


def test_confusion_matrix_is_drawn_from_eval_json_where_the_folder_has_no_picture(tmp_path):
    """confusion_matrix.png is git-ignored: a fresh clone's tab draws it from eval.json."""
    folder = tmp_path / "classifier"
    folder.mkdir()
    (folder / "eval.json").write_text((SHIPPED_CLASSIFIER / "eval.json").read_text())
    result = read_scores("classifier", "Tumor type", str(folder))
    chart = confusion_image(result, tmp_path / "drawn")
    assert Path(chart) == tmp_path / "drawn" / "confusion_matrix.png" and Image.open(chart).format == "PNG"
    missing = read_scores("classifier", "Tumor type", str(tmp_path))
    assert missing.scores is None and "no eval.json" in classifier_markdown(missing)


def test_results_buttons_step_through_the_slices(data_home):
    """The page's wiring, with a stand-in model that marks nothing: every red pixel is a miss."""
    bank = bank_of_shipped_scores()
    with gr.Blocks() as demo:
        with gr.Tab("Results"):
            results_tab(bank, data_home=data_home)
    blocks = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    step = handler(demo, blocks["results-next"], "click")
    second = sort_slices(scored_slices(json.loads((SHIPPED_SEGMENTER / "eval.json").read_text())), BEST_FIRST)[1]
    image, caption, rank = step.fn("brisc2025", BEST_FIRST, 1)
    assert rank == 2 and second["file_name"] in caption and "0.000 for the mask shown" in caption
    r, g, b = np.moveaxis(image.astype(np.int16), -1, 0)
    assert ((g == b) & (r - g >= 127)).sum() == second["true_px"]  # red: the whole reference, missed
    assert handler(demo, blocks["results-previous"], "click").fn("brisc2025", WORST_FIRST, 1)[2] == 1


def test_results_page_draws_a_real_brisc_test_slice_with_the_shipped_segmenter(data_home):
    pipeline = Pipeline.from_pretrained(SHIPPED_SEGMENTER, None, runtime="torch")
    bank = SegmenterBank(pipeline, {"brisc2025": str(SHIPPED_SEGMENTER)},
                         pipeline_locations=(str(SHIPPED_SEGMENTER), None))
    pager = SlicePager(bank, data_home)
    best = pager.slices("brisc2025", BEST_FIRST)[0]
    image, caption, rank = pager.page("brisc2025", BEST_FIRST, 1)
    assert rank == 1 and best["file_name"] in caption and f"Dice {best['dice']:.3f} in eval.json" in caption
    with Image.open(data_home / "brisc2025" / "segmentation_task" / "test" / "images" / best["file_name"]) as src:
        assert image.shape == (src.height, src.width, 3)
    shown = float(re.search(r"; (\d\.\d+) for the mask shown", caption).group(1))
    assert abs(shown - best["dice"]) < 0.02  # the right file and mask: the model scores it as eval.json did
    r, g, b = np.moveaxis(image.astype(np.int16), -1, 0)
    yellow = (r == g) & (r - b >= 127)  # grey blended half with (255, 255, 0)
    assert yellow.sum() > 0.9 * best["true_px"]

    class Broken:  # any failure of the model is a caption, never a traceback
        def segment(self, rgb):
            raise RuntimeError("out of memory")

    pager.bank.get = lambda name=None: Pipeline(Broken(), None)
    image, caption, _ = pager.page("brisc2025", WORST_FIRST, 3)
    assert image is None and "Cannot show this slice (RuntimeError: out of memory)" in caption
