"""Done-when of "Scans as people have them": a 3-D NIfTI and a shuffled multi-file DICOM series of the same
volume give the same per-slice masks and the same volume in cm³, in the CLI (`tumorlens predict`) and in
the app (its handler functions), with the shipped models.

The volume is made of real BRISC 2025 test slices (four glioma, one healthy; 256 x 256, int16) with
0.5 x 0.45 x 5 mm voxels. The NIfTI stores it the way DICOM-born files are stored (LPS axes); the series
writes each slice as a single-frame MR file with pydicom, the geometry in its headers, file names and
InstanceNumbers shuffled against position."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from test_dicom_series import dicom_bytes
from test_medical_io import gray, real_slice, write_nifti
from tumorlens.__main__ import main as cli
from tumorlens.app import Request, SegmenterBank, analyze_with_model, exports_for_ui, result_key
from tumorlens.inference import Pipeline
from tumorlens.paths import MODELS_DIR
from tumorlens.registry import BRISC_CLASSIFIER, BRISC_SEGMENTER
from tumorlens.scan_analysis import RecentResults

SEGMENTER, CLASSIFIER = MODELS_DIR / BRISC_SEGMENTER, MODELS_DIR / BRISC_CLASSIFIER
SIDE = 256
ZOOMS = (0.5, 0.45, 5.0)               # NIfTI x (columns), y (rows), z (slices), mm
VOXEL_CM3 = ZOOMS[0] * ZOOMS[1] * ZOOMS[2] / 1000


@pytest.fixture(scope="module")
def same_volume(data_home, tmp_path_factory):
    """(the NIfTI, the series folder) of one volume of real slices."""
    display = [gray(real_slice("glioma", i), (SIDE, SIDE)) for i in range(4)]
    display.insert(2, gray(real_slice("no_tumor", 0), (SIDE, SIDE)))
    folder = tmp_path_factory.mktemp("same-volume")
    nifti = write_nifti(folder / "volume.nii.gz", display, zooms=ZOOMS, storage="lps")
    # display pixel (r, c) of slice k is RAS voxel (n-1-c, n-1-r, k), at LPS (c*zx - (n-1)*zx, r*zy - (n-1)*zy, k*zz)
    zx, zy, zz = ZOOMS
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(7)
    instances, names = rng.permutation(len(display)) + 1, rng.permutation(len(display))
    files = folder / "series"
    files.mkdir()
    for k, pixels in enumerate(display):
        blob = dicom_bytes(pixels.astype(np.int16) * 3 + 7, iop=(1, 0, 0, 0, 1, 0),
                           ipp=(-(SIDE - 1) * zx, -(SIDE - 1) * zy, k * zz), spacing=(zy, zx), study=study,
                           series=series, frame=frame, instance=int(instances[k]), description="BRISC stack")
        (files / f"{names[k] * 7919 % 1000:03d}x").write_bytes(blob)
    # shuffled: neither the names nor the instance numbers follow the slices' positions
    z_by_name = [float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in sorted(files.iterdir())]
    assert z_by_name != sorted(z_by_name) and list(instances) != sorted(instances)
    assert [pydicom.dcmread(io.BytesIO(p.read_bytes())).InstanceNumber for p in sorted(files.iterdir())] != \
        list(range(1, 6))
    return nifti, files


@pytest.fixture(scope="module")
def shipped():
    for folder in (SEGMENTER, CLASSIFIER):
        assert (folder / "config.json").is_file(), f"{folder} is missing"
    return Pipeline.from_pretrained(str(SEGMENTER), str(CLASSIFIER), runtime="torch")


def slice_masks(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) == 255 for p in sorted(folder.glob("slice_*.png"))]


def assert_same(nifti_masks, series_masks):
    assert len(nifti_masks) == len(series_masks) == 5
    for k, (a, b) in enumerate(zip(nifti_masks, series_masks)):
        assert a.shape == b.shape == (SIDE, SIDE) and np.array_equal(a, b), k
    counts = [int(m.sum()) for m in nifti_masks]
    assert sum(c > 0 for c in counts) >= 3, f"the shipped segmenter should find the gliomas: {counts}"


def test_the_cli_gives_the_same_masks_and_volume(same_volume, tmp_path):
    nifti, series = same_volume
    out = tmp_path / "out"
    assert cli(["predict", str(nifti), str(series), "--out", str(out), "--seg-model", str(SEGMENTER),
                "--cls-model", str(CLASSIFIER), "--runtime", "torch", "--format", "png,nifti,report"]) == 0
    with open(out / "predictions.csv", newline="") as f:
        a, b = list(csv.DictReader(f))
    assert (a["file"], b["file"]) == (str(nifti), str(series))
    assert a["status"] == b["status"] == "ok" and a["slices"] == b["slices"] == "5"
    assert_same(slice_masks(out / a["mask_file"]), slice_masks(out / b["mask_file"]))
    assert a["tumor_pixels"] == b["tumor_pixels"] and a["tumor_slices"] == b["tumor_slices"]
    assert a["slice"] == b["slice"] and a["predicted_class"] == b["predicted_class"]
    assert float(a["volume_cm3"]) > 0
    assert float(a["volume_cm3"]) == pytest.approx(float(b["volume_cm3"]), abs=VOXEL_CM3)
    assert float(a["volume_cm3"]) == pytest.approx(int(a["tumor_pixels"]) * VOXEL_CM3, abs=1e-4)
    # both NIfTI masks land on the same voxels in world space
    masks = [nib.as_closest_canonical(nib.load(str(out / row["nifti_mask_file"]))) for row in (a, b)]
    np.testing.assert_allclose(masks[0].affine, masks[1].affine, atol=1e-3)
    assert np.array_equal(np.asarray(masks[0].dataobj), np.asarray(masks[1].dataobj))
    reports = [(out / row["report_file"]).read_text(encoding="utf-8") for row in (a, b)]
    assert all(f"{float(a['volume_cm3']):,.3f} cm³" in text for text in reports)


def test_the_app_gives_the_same_masks_and_volume(same_volume, shipped, tmp_path):
    nifti, series = same_volume
    bank, recent = SegmenterBank(shipped, {}, pipeline_locations=(str(SEGMENTER), str(CLASSIFIER))), RecentResults()
    requests = [Request(str(nifti), whole_volume=True),
                Request([str(p) for p in sorted(series.iterdir())], whole_volume=True)]  # a multi-file upload
    sizes, masks, volumes = [], [], []
    for k, request in enumerate(requests):
        *_, verdict, size = analyze_with_model(bank, request, None, recent)
        result, _ = recent.get(result_key(bank, request))
        outputs = exports_for_ui(bank, request, tmp_path / f"page{k}", recent)
        sizes.append(size)
        masks.append(slice_masks(outputs.written["png"]))
        volumes.append(result.volume_cm3)
        assert "Tumor found" in verdict and f"{result.volume_cm3:,.3f} cm³" in size
        assert f"{result.volume_cm3:,.3f} cm³" in outputs.written["report"].read_text(encoding="utf-8")
    assert_same(*masks)
    assert volumes[0] > 0 and volumes[0] == pytest.approx(volumes[1], abs=VOXEL_CM3)
    # the same numbers on the page, but for the file kind and where the spacing came from
    assert sizes[0].replace("NIfTI", "DICOM") == sizes[1]
