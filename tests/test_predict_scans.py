"""`tumorlens predict` on every format the app reads: NIfTI volumes, DICOM files (one slice and
multi-frame), plain images; one CSV row per input, per-slice masks, a bad file an error row.

Built here: synthetic phantoms (tests/test_scan_analysis.py) and pydicom's own MR_small.dcm; the
stand-in pipeline makes each mask known, and one run through the CLI uses the shipped segmenter."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from _tiny_models import REPO
from test_medical_io import write_dicom
from test_scan_analysis import TUMOR, phantom, phantom_volume, stand_in_pipeline, write_phantom_nifti
from tumorlens.__main__ import main as cli
from tumorlens.medical_io import read_scan
from tumorlens.predict import collect_inputs, predict

SHIPPED_SEGMENTER = REPO / "models" / "tumorlens-unet-mobilenetv2-brisc2025"
MR_SMALL = get_testdata_file("MR_small.dcm")  # 64 x 64, PixelSpacing 0.3125 mm, ships with pydicom


def read_rows(out: Path) -> dict[str, dict]:
    with open(out / "predictions.csv", newline="") as f:
        return {Path(r["file"]).name: r for r in csv.DictReader(f)}


def mask_png(path: Path) -> np.ndarray:
    mask = np.asarray(Image.open(path))
    assert set(np.unique(mask)) <= {0, 255}
    return mask == 255


def test_predict_nifti_volume_masks_per_slice_and_cm3(tmp_path):
    radii = (0, 4, 9, 6, 0, 3)
    volume = phantom_volume(radii)
    path = write_phantom_nifti(tmp_path / "brain.nii.gz", volume, zooms=(0.9, 0.8, 2.5))
    scan = read_scan(path)
    out = tmp_path / "out"
    (returned,) = predict([str(path)], out, stand_in_pipeline())
    counts = [int((volume[..., k] == TUMOR).sum()) for k in range(len(radii))]
    row = read_rows(out)["brain.nii.gz"]
    assert row == {k: str(v) for k, v in returned.items()}  # the CSV holds what predict returned
    assert row["status"] == "ok" and row["mask_file"] == "brain_masks/"
    assert (row["slices"], row["tumor_slices"], row["tumor_found"]) == ("6", "4", "True")
    assert int(row["tumor_pixels"]) == sum(counts)
    assert float(row["tumor_percent"]) == pytest.approx(100 * sum(counts) / volume.size, abs=1e-4)
    assert float(row["volume_cm3"]) == pytest.approx(sum(counts) * 0.9 * 0.8 * 2.5 / 1000, abs=1e-4)
    assert row["area_mm2"] == ""  # a volume has a volume, not one area
    # the tumor type is that of the slice with the most tumor
    assert row["slice"] == "2" and row["predicted_class"] == "glioma"
    files = sorted((out / "brain_masks").iterdir())
    assert [f.name for f in files] == [f"slice_{i:03d}.png" for i in range(6)]
    for i, f in enumerate(files):
        mask = mask_png(f)
        assert mask.shape == scan.shape and mask.sum() == counts[i]
        assert np.array_equal(mask, scan.slices[i] == 255)  # each slice as the app shows it


def test_predict_dicom_files_and_a_bad_one(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    # pydicom's MR slice: one row with an area in mm² from its header spacing
    (inputs / "mr_small.dcm").write_bytes(Path(MR_SMALL).read_bytes())
    # a multi-frame DICOM: a volume with a slice spacing, so cm³
    frames = np.moveaxis(phantom_volume((0, 5, 8), shape=(64, 72)), -1, 0).astype(np.uint16) * 4
    write_dicom(inputs / "frames.dcm", frames, spacing=(0.5, 0.6), between=3.0)
    Image.fromarray(phantom()).save(inputs / "slice.png")
    (inputs / "broken.dcm").write_bytes(b"DICM" * 100)
    (inputs / "notes.txt").write_text("not a scan")  # folders give scans only

    out = tmp_path / "out"
    pipeline = stand_in_pipeline()
    assert [p.name for p in collect_inputs([str(inputs)])] == ["broken.dcm", "frames.dcm", "mr_small.dcm", "slice.png"]
    rows = predict([str(inputs)], out, pipeline, pixel_spacing_mm=0.5)
    assert len(rows) == 4
    by_name = read_rows(out)

    bad = by_name["broken.dcm"]
    assert bad["status"].startswith("error:") and "broken.dcm" in bad["status"] and bad["mask_file"] == ""

    mr = by_name["mr_small.dcm"]
    scan = read_scan(MR_SMALL)
    expected = pipeline.segmenter.segment(scan.rgb(0)).mask
    assert mr["status"] == "ok" and mr["mask_file"] == "mr_small_mask.png" and mr["slices"] == "1"
    assert np.array_equal(mask_png(out / "mr_small_mask.png"), expected)
    assert int(mr["tumor_pixels"]) == expected.sum()
    # the header's 0.3125 mm wins over --pixel-spacing, which is for files without one
    assert float(mr["area_mm2"]) == pytest.approx(expected.sum() * 0.3125 ** 2, abs=0.01)
    assert mr["volume_cm3"] == mr["tumor_slices"] == mr["slice"] == ""

    vol = by_name["frames.dcm"]
    counts = [int((phantom((64, 72), (40, 50, r) if r else None) == TUMOR).sum()) for r in (0, 5, 8)]
    assert vol["status"] == "ok" and vol["mask_file"] == "frames_masks/"
    assert (vol["slices"], vol["tumor_slices"], vol["slice"]) == ("3", "2", "2")
    assert int(vol["tumor_pixels"]) == sum(counts)
    assert float(vol["volume_cm3"]) == pytest.approx(sum(counts) * 0.5 * 0.6 * 3.0 / 1000, abs=1e-4)
    assert [int(mask_png(f).sum()) for f in sorted((out / "frames_masks").iterdir())] == counts

    png = by_name["slice.png"]
    assert png["mask_file"] == "slice_mask.png" and int(png["tumor_pixels"]) == (phantom() == TUMOR).sum()
    assert float(png["area_mm2"]) == pytest.approx(int(png["tumor_pixels"]) * 0.25, abs=0.01)


@pytest.mark.skipif(not (SHIPPED_SEGMENTER / "config.json").is_file(),
                    reason=f"the shipped segmenter is not trained yet ({SHIPPED_SEGMENTER.relative_to(REPO)})")
def test_predict_cli_reads_nifti_and_dicom_with_the_shipped_segmenter(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_phantom_nifti(inputs / "vol.nii", phantom_volume((0, 6, 0), shape=(64, 64)))
    (inputs / "mr.dcm").write_bytes(Path(MR_SMALL).read_bytes())
    (inputs / "empty.nii.gz").write_bytes(b"")
    out = tmp_path / "out"
    assert cli(["predict", str(inputs), "--out", str(out), "--seg-model", str(SHIPPED_SEGMENTER),
                "--no-cls", "--runtime", "torch", "--no-scope-check"]) == 1  # synthetic phantoms: no gate
    # one bad file: non-zero, the others still written
    rows = read_rows(out)
    assert set(rows) == {"vol.nii", "mr.dcm", "empty.nii.gz"}
    assert rows["empty.nii.gz"]["status"].startswith("error: file is empty (0 bytes)")
    vol, mr = rows["vol.nii"], rows["mr.dcm"]
    assert vol["status"] == mr["status"] == "ok"
    assert vol["slices"] == "3" and vol["mask_file"] == "vol_masks/" and vol["volume_cm3"] != ""
    assert len(list((out / "vol_masks").glob("slice_*.png"))) == 3
    assert int(vol["tumor_pixels"]) == sum(int(mask_png(f).sum()) for f in (out / "vol_masks").iterdir())
    # the NIfTI input also gets its mask as a volume in its own geometry: same affine, same voxel count
    import nibabel as nib
    saved, source = nib.load(str(out / vol["nifti_mask_file"])), nib.load(str(inputs / "vol.nii"))
    assert np.allclose(saved.affine, source.affine) and saved.shape == source.shape
    assert int(np.asarray(saved.dataobj).sum()) == int(vol["tumor_pixels"])
    assert mr["slices"] == "1" and mask_png(out / mr["mask_file"]).shape == (64, 64)
    # the DICOM input also gets a DICOM Segmentation: it references the input, its frame is the mask
    import highdicom as hd
    import pydicom
    seg, source = hd.seg.segread(out / mr["dicom_seg_file"]), pydicom.dcmread(MR_SMALL)
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    assert referenced == source.SOPInstanceUID and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    frame = np.asarray(seg.pixel_array)
    assert np.array_equal(frame.reshape(64, 64).astype(bool), mask_png(out / mr["mask_file"]).astype(bool))
    assert pydicom.dcmread(out / mr["dicom_seg_file"]).Modality == "SEG"
    assert mr["predicted_class"] == "" and float(mr["area_mm2"]) == pytest.approx(int(mr["tumor_pixels"]) * 0.3125 ** 2,
                                                                       abs=0.01)


def test_predict_formats_names_notes_and_skips(tmp_path, caplog):
    """--format picks the outputs; a series picked from a study zip by UID gets safe names; the reader's
    notes (the other series) reach the log; a format an input cannot have is skipped on its row."""
    import logging

    import pydicom
    from test_dicom_series import series_files, write_zip
    big, _ = series_files(seed=1)
    small, small_info = series_files(keep=range(5, 15), description="short stack", seed=2)
    archive = write_zip(tmp_path / "study.zip", {**{"a/" + k: v for k, v in big.items()},
                                                  **{"b/" + k: v for k, v in small.items()}})
    png = tmp_path / "slice.png"
    Image.fromarray(phantom()).save(png)
    out = tmp_path / "out"
    picked = f"{archive}#{small_info['series']}"
    with caplog.at_level(logging.INFO, logger="tumorlens.predict"):
        rows = predict([picked, str(archive), str(png)], out, stand_in_pipeline(),
                       formats=("png", "dicom-seg", "secondary-capture", "report"))
    by_file = {r["file"]: r for r in rows}
    series = by_file[picked]
    stem = f"study_{small_info['series']}"
    assert series["status"] == "ok" and series["slices"] == 10
    assert (series["mask_file"], series["dicom_seg_file"], series["secondary_capture_file"], series["report_file"]) == (
        f"{stem}_masks/", f"{stem}_seg.dcm", f"{stem}_overlay/", f"{stem}_report.html")
    assert series["nifti_mask_file"] == "" and series["skipped"] == ""  # nifti was not asked for
    seg = pydicom.dcmread(out / series["dicom_seg_file"])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == small_info["series"]
    assert len(list((out / f"{stem}_overlay").iterdir())) == 10
    # the same zip without a pick: the larger series, under the zip's own stem; the log lists the other
    whole = by_file[str(archive)]
    assert whole["slices"] == 25 and whole["mask_file"] == "study_masks/"
    assert f"'short stack' ({small_info['series']}), 10 slices" in caplog.text and "study.zip#UID" in caplog.text
    image = by_file[str(png)]
    assert image["mask_file"] == "slice_mask.png" and image["report_file"] == "slice_report.html"
    assert image["dicom_seg_file"] == image["secondary_capture_file"] == ""
    assert image["skipped"].startswith("dicom-seg: a DICOM Segmentation references DICOM source images")
    assert "no dicom-seg output" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "predictions.csv", f"{stem}_masks", f"{stem}_seg.dcm", f"{stem}_overlay", f"{stem}_report.html",
        "study_masks", "study_seg.dcm", "study_overlay", "study_report.html", "slice_mask.png", "slice_report.html"])
    with open(out / "predictions.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[-9:] == ["nifti_mask_file", "dicom_seg_file", "secondary_capture_file", "report_file",
                           "cam_file", "nonfinite_pixels", "in_scope", "scope_score", "skipped"]


def test_predict_refuses_an_unknown_format_before_loading_models(tmp_path, capsys):
    assert cli(["predict", str(tmp_path), "--out", str(tmp_path / "out"), "--format", "png,stl"]) == 2
    err = capsys.readouterr().err
    assert "error: --format png,stl: unknown output format 'stl'" in err and "dicom-seg" in err
    assert not (tmp_path / "out").exists()
