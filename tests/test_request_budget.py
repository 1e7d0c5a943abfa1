"""Bounded cost per request (medical_io.RequestBudget), NaN/inf handled alike by every reader, no
server folder in an error message, and the predict CLI refusing impossible settings. Data-free: every
file is built here (the fast lane); the stand-in pipeline of test_scan_analysis runs no model."""

from __future__ import annotations

import math
from pathlib import Path

import gradio as gr
import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageFile

from test_medical_io import BAD_INPUTS, phantom, write_dicom
from test_scan_analysis import stand_in_pipeline
from tumorlens import medical_io, predict as predict_module
from tumorlens.__main__ import main as cli
from tumorlens.app import Request, analyze_for_ui, inspect_for_ui
from tumorlens.bench.request_budget import write_long_nifti, write_nan_tiffs, write_png_bomb
from tumorlens.errors import BudgetError, DataError, public_message
from tumorlens.medical_io import APP_BUDGET, CLI_BUDGET, RequestBudget, read_header, read_scan
from tumorlens.preprocess import decode_image
from tumorlens.scan_analysis import analyze_scan, load_scan


def _no_decoding(monkeypatch):
    """Any pixel decode from here on fails the test."""
    def refuse(*_, **__):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(Image.Image, "load", refuse)


# -- plain images: pixels and decoded bytes, from the header ---------------------------------------
def test_the_16_bit_png_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    bomb = write_png_bomb(tmp_path / "bomb.png")  # 6300 x 6300 16-bit zeros in ~80 KB
    assert bomb.stat().st_size < 200_000
    header = read_header(bomb)
    assert (header.width, header.height, header.mode) == (6300, 6300, "I;16")
    _no_decoding(monkeypatch)
    with pytest.raises(BudgetError, match=r"6300x6300 \(39,690,000 pixels\), over the 4,194,304 pixel limit"):
        read_scan(bomb, budget=APP_BUDGET)
    with pytest.raises(gr.Error, match="Cannot read this image: image is 6300x6300"):
        inspect_for_ui(str(bomb))
    with pytest.raises(gr.Error, match="pixel limit"):
        analyze_for_ui(stand_in_pipeline(), Request(str(bomb), 0.5))


def test_decoded_bytes_count_the_mode_not_just_pixels(tmp_path):
    """Same pixels, 4 bytes a pixel (float) over a byte budget that 1 byte a pixel (8-bit) fits."""
    budget = RequestBudget(max_image_pixels=10**6, max_decoded_bytes=300_000)
    Image.fromarray(phantom(0, (400, 400))).save(eight := tmp_path / "eight.png")
    tifffile.imwrite(flt := tmp_path / "float.tif", phantom(0, (400, 400)).astype(np.float32))
    assert read_scan(eight, budget=budget).shape == (400, 400)
    with pytest.raises(BudgetError, match=r"400x400 in mode F, 1 MB once decoded, over the 0 MB decoding limit"):
        read_scan(flt, budget=budget)


def test_a_16_bit_png_under_the_budget_still_works(tmp_path):
    g = phantom(0, (1024, 768))
    Image.fromarray(g.astype(np.uint16) * 200 + 1000).save(path := tmp_path / "sixteen.png")
    scan = read_scan(path, budget=APP_BUDGET)
    assert scan.shape == (768, 1024) and scan.rgb(0).dtype == np.uint8
    assert scan.rgb(0)[..., 0].max() == 255 and scan.nonfinite == 0
    verdict = analyze_for_ui(stand_in_pipeline(), Request(str(path), 0.5))[5]
    assert "Tumor" in verdict


def test_the_batch_budget_is_larger_but_still_refuses_absurd_images(tmp_path):
    big = write_png_bomb(tmp_path / "big.png", side=3000, bit_depth=8)  # 9 Mpx: over the app's, under the CLI's
    with pytest.raises(BudgetError):
        read_scan(big, budget=APP_BUDGET)
    assert read_header(big).total_pixels <= CLI_BUDGET.max_image_pixels
    huge = write_png_bomb(tmp_path / "huge.png", side=7000, bit_depth=8)  # 49 Mpx: over both
    with pytest.raises(BudgetError, match="over the 40,000,000 pixel limit"):
        read_scan(huge)


# -- volumes: whole-volume mode holds at most max_volume_slices ------------------------------------
def test_a_1024_slice_volume_is_refused_whole_with_the_cli_hint_but_one_slice_analyzes(tmp_path, monkeypatch):
    path = write_long_nifti(tmp_path / "long.nii.gz", slices=1024, side=16)
    header = read_header(path)
    assert (header.width, header.height, header.slices) == (16, 16, 1024)
    pipeline = stand_in_pipeline()
    hint = r"at most 64 slices per request here.*`tumorlens predict long\.nii\.gz --out DIR` for the whole volume"
    with pytest.raises(BudgetError, match=hint):
        analyze_scan(pipeline, read_scan(path, budget=APP_BUDGET), whole_volume=True, budget=APP_BUDGET)
    assert pipeline.segmenter.batches == []  # refused before any model call
    # the app refuses from the header, before the volume is decoded
    monkeypatch.setattr(medical_io, "read_nifti", lambda p: pytest.fail("the volume was decoded"))
    with pytest.raises(gr.Error, match=hint) as info:
        analyze_for_ui(pipeline, Request(str(path), 0.5, None, -1, True))
    assert str(tmp_path) not in info.value.message
    monkeypatch.undo()
    overlay, mask, heat, uncertainty, label, verdict, size = analyze_for_ui(pipeline, Request(str(path), 0.5, None, 700, False))
    assert overlay.shape == (16, 16, 3) and "slice 700 of 1024" in verdict
    assert sum(pipeline.segmenter.batches) == 1  # one slice segmented
    assert "at most 64 slices" in inspect_for_ui(str(path))[3]


def test_a_volume_at_the_slice_limit_runs_whole(tmp_path):
    path = write_long_nifti(tmp_path / "cap.nii.gz", slices=APP_BUDGET.max_volume_slices, side=16)
    verdict, size = analyze_for_ui(stand_in_pipeline(), Request(str(path), 0.5, None, -1, True))[5:]
    assert f"of {APP_BUDGET.max_volume_slices} slices" in size


def test_a_volume_over_the_voxel_budget_is_refused_from_the_header(tmp_path, monkeypatch):
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 40), np.int16), np.eye(4)), str(path))
    monkeypatch.setattr(medical_io, "read_nifti", lambda p: pytest.fail("the volume was decoded"))
    with pytest.raises(BudgetError, match=r"64x64x40 \(163,840 voxels\), over the 100,000 voxel limit.*tumorlens predict"):
        read_scan(path, budget=RequestBudget(max_total_pixels=100_000))
    dicom = write_dicom(tmp_path / "multi.dcm", np.zeros((40, 64, 64)))
    with pytest.raises(BudgetError, match="64x64x40"):
        read_scan(dicom, budget=RequestBudget(max_total_pixels=100_000))


# -- NaN / inf: left out of the window by every reader, and counted -------------------------------
def _float_slice() -> np.ndarray:
    return np.linspace(-50, 1200, 96 * 96, dtype=np.float32).reshape(96, 96)


def _dirty(clean: np.ndarray, n_nan=5, n_pos=4, n_neg=3) -> np.ndarray:
    dirty = clean.copy()
    spots = np.random.default_rng(1).choice(np.arange(1, clean.size - 1), n_nan + n_pos + n_neg, replace=False)
    dirty.flat[spots[:n_nan]] = np.nan
    dirty.flat[spots[n_nan:n_nan + n_pos]] = np.inf
    dirty.flat[spots[n_nan + n_pos:]] = -np.inf
    return dirty


def _float_dicom(path: Path, pixels: np.ndarray) -> Path:
    write_dicom(path, np.zeros(pixels.shape, np.uint16))
    import pydicom
    ds = pydicom.dcmread(path)
    del ds.PixelData
    del ds.RescaleSlope, ds.RescaleIntercept
    ds.BitsAllocated = 32
    for key in ("BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, key)
    ds.FloatPixelData = pixels.astype(np.float32).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("kind", ["tiff", "dicom", "nifti"])
def test_nan_and_inf_are_left_out_of_the_window_and_reported_by_every_reader(tmp_path, kind):
    clean = _float_slice()
    dirty = _dirty(clean)
    if kind == "tiff":
        tifffile.imwrite(a := tmp_path / "clean.tif", clean)
        tifffile.imwrite(b := tmp_path / "dirty.tif", dirty)
    elif kind == "dicom":
        a, b = _float_dicom(tmp_path / "clean.dcm", clean), _float_dicom(tmp_path / "dirty.dcm", dirty)
    else:
        for name, arr in (("clean", clean), ("dirty", dirty)):
            nib.save(nib.Nifti1Image(arr[::-1, ::-1].T[..., None].copy(), np.eye(4)), str(tmp_path / f"{name}.nii"))
        a, b = tmp_path / "clean.nii", tmp_path / "dirty.nii"
    sa, sb = read_scan(a), read_scan(b)
    assert sa.nonfinite == 0 and sb.nonfinite == 12
    ga, gb = sa.rgb(0)[..., 0], sb.rgb(0)[..., 0]
    finite = np.isfinite(dirty)
    assert ga.max() == 255 and np.array_equal(ga[finite], gb[finite])  # same window
    bad = ~finite  # each takes its nearest finite neighbour's level: no black or white specks
    step = max(np.abs(np.diff(ga.astype(int), axis=k)).max() for k in (0, 1))  # the ramp's largest neighbour step
    assert np.abs(gb[bad].astype(int) - ga[bad].astype(int)).max() <= step
    assert any("12 pixels held no number" in n for n in sb.notes)
    _, size = analyze_for_ui(stand_in_pipeline(), Request(str(b), 0.5))[5:]
    assert "12 pixels held no number (NaN or infinity)" in size


def test_a_nan_tiff_gives_the_same_mask_as_its_clean_original(tmp_path):
    clean, dirty = write_nan_tiffs(tmp_path)
    pipeline = stand_in_pipeline()
    ma = analyze_scan(pipeline, read_scan(clean)).segmentation.mask
    mb = analyze_scan(pipeline, read_scan(dirty)).segmentation.mask
    assert ma.sum() > 0 and (ma != mb).sum() <= 200  # at most the NaN/inf pixels themselves


def test_predict_row_counts_nonfinite_pixels(tmp_path):
    tifffile.imwrite(path := tmp_path / "dirty.tif", _dirty(_float_slice()))
    rows = predict_module.predict([str(path)], tmp_path / "out", stand_in_pipeline(), threshold=0.5)
    assert rows[0]["status"] == "ok" and rows[0]["nonfinite_pixels"] == 12


# -- no server folder in an error message ----------------------------------------------------------
@pytest.mark.parametrize("name", ["not_an_image", "corrupt", "truncated", "dicom_truncated", "nifti_garbage",
                                  "nifti_truncated", "enormous"])
def test_error_messages_name_the_file_never_its_folder(tmp_path, name):
    folder = tmp_path / "gradio" / "0123456789abcdef"
    folder.mkdir(parents=True)
    path = BAD_INPUTS[name][0](folder)
    for call in (lambda: inspect_for_ui(str(path)), lambda: analyze_for_ui(stand_in_pipeline(), Request(str(path), 0.5))):
        with pytest.raises(gr.Error) as info:
            call()
        message = info.value.message
        assert str(tmp_path) not in message and "0123456789abcdef" not in message, message
    with pytest.raises(DataError) as info:
        load_scan(path)
    assert str(folder) not in info.value.reason


def test_public_message_cuts_any_absolute_path():
    text = "cannot identify image file '/tmp/gradio/ab12/scan one.png'; see /srv/app/models/seg/config.json"
    out = public_message(text, "/tmp/gradio/ab12/scan one.png")
    assert out == "cannot identify image file 'scan one.png'; see config.json"
    assert public_message("0.5 mm/px, an I/O error") == "0.5 mm/px, an I/O error"


# -- the predict CLI refuses impossible settings ---------------------------------------------------
@pytest.mark.parametrize("option, value, message", [
    ("--threshold", "0", "--threshold must lie strictly between 0 and 1"),
    ("--threshold", "1", "--threshold must lie strictly between 0 and 1"),
    ("--threshold", "1.5", "--threshold must lie strictly between 0 and 1"),
    ("--threshold", "-0.2", "--threshold must lie strictly between 0 and 1"),
    ("--threshold", "nan", "--threshold must lie strictly between 0 and 1"),
    ("--pixel-spacing", "0", "--pixel-spacing must be a positive number"),
    ("--pixel-spacing", "-0.5", "--pixel-spacing must be a positive number"),
    ("--pixel-spacing", "nan", "--pixel-spacing must be a positive number"),
    ("--pixel-spacing", "inf", "--pixel-spacing must be a positive number"),
    ("--out", "FILE", "is a file; give a folder"),
    ("--out", "FILE/sub", "is a file; give a folder"),
])
def test_predict_refuses_impossible_settings_before_loading_a_model(tmp_path, monkeypatch, capsys, option, value,
                                                                    message):
    monkeypatch.setattr(predict_module, "resolve_model", lambda *a, **k: pytest.fail("a model was looked up"))
    monkeypatch.setattr(predict_module.Pipeline, "from_pretrained", lambda *a, **k: pytest.fail("a model was loaded"))
    Image.fromarray(phantom()).save(image := tmp_path / "slice.png")
    (file := tmp_path / "FILE").write_text("not a folder")
    out = tmp_path / "out"
    argv = ["predict", str(image), "--out", str(out), "--seg-model", "x"]
    if option == "--out":
        argv[3] = str(tmp_path / value)
    else:
        argv += [option, value]
    before = sorted(tmp_path.rglob("*"))
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert sorted(tmp_path.rglob("*")) == before and file.read_text() == "not a folder"  # nothing written


def test_budget_numbers_are_what_the_docs_say():
    assert APP_BUDGET.max_image_pixels == 2048 * 2048 and APP_BUDGET.max_volume_slices == 64
    assert APP_BUDGET.max_total_pixels == 2 ** 25 and APP_BUDGET.max_decoded_bytes == 128 * 2 ** 20
    assert CLI_BUDGET.max_volume_slices is None and CLI_BUDGET.max_image_pixels == 40_000_000
    assert 6300 * 6300 > APP_BUDGET.max_image_pixels  # the bomb: refused
