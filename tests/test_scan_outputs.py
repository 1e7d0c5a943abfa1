"""The exports of one analysis (tumorlens.scan_outputs.write_outputs), the one path `tumorlens predict`
and the app's downloads share: which formats each input gets, each read back with the library that
owns its format, skipped formats said with a reason, and nothing written outside the output folder.

Inputs are built here (no shared data): the shuffled DICOM series of nibabel's `anatomical.nii`
(tests/test_dicom_series.py), the same volume as one enhanced multi-frame DICOM file, pydicom's
MR_small.dcm, a generated PNG and NIfTI; the stand-in pipeline (tumor = bright pixels) makes every
mask known."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, generate_uid

from test_dicom_series import anatomical, series_files, write_folder
from test_medical_io import write_dicom
from test_scan_analysis import TUMOR, phantom, phantom_volume, stand_in_pipeline, write_phantom_nifti
from test_scan_report import Page
from tumorlens.errors import ConfigError
from tumorlens.medical_io import read_scan
from tumorlens.scan_analysis import LARGEST, analyze_scan
from tumorlens.scan_outputs import FORMATS, input_sha256, parse_formats, safe_stem, write_outputs
from tumorlens.visualize import overlay_outline

MR_SMALL = get_testdata_file("MR_small.dcm")


def tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def png_mask(path: Path) -> np.ndarray:
    img = Image.open(path)
    assert img.format == "PNG" and img.mode == "L"
    arr = np.asarray(img)
    assert set(np.unique(arr)) <= {0, 255}
    return arr == 255


def whole(scan, threshold: float = 0.35):
    """Every slice segmented; at 0.35 the stand-in's mask is the brighter tissue (window value >= 99)."""
    return analyze_scan(stand_in_pipeline(), scan, whole_volume=True, slice_index=LARGEST, threshold=threshold)


# -- a DICOM series: every format ------------------------------------------------------------
def test_a_series_gets_every_format_each_readable_by_its_own_library(tmp_path):
    files, info = series_files(rows_anterior=True)
    scan = read_scan(write_folder(tmp_path / "in" / "series", files))
    result = whole(scan)
    masks = result.masks
    assert len(masks) == 25 and 0 < sum(int(m.sum()) for m in masks) and len({int(m.sum()) for m in masks}) > 10
    before = tree(tmp_path)
    out = tmp_path / "out"
    outputs = write_outputs(result, out, formats=FORMATS, stem="study.zip#1.2.3")
    assert outputs.skipped == {}
    assert {fmt: outputs.name(fmt) for fmt in FORMATS} == {
        "png": "study_1.2.3_masks/", "nifti": "study_1.2.3_mask.nii.gz", "dicom-seg": "study_1.2.3_seg.dcm",
        "secondary-capture": "study_1.2.3_overlay/", "report": "study_1.2.3_report.html"}
    # nothing but the output folder's contents is new
    new = [p for p in tree(tmp_path) if p not in before]
    assert "out" in new and all(p == "out" or p.startswith("out/") for p in new)

    # PNG: one per slice, at the slice's size, exactly the mask
    pngs = sorted((out / "study_1.2.3_masks").iterdir())
    assert [p.name for p in pngs] == [f"slice_{i:03d}.png" for i in range(25)]
    for k, p in enumerate(pngs):
        assert np.array_equal(png_mask(p), masks[k]), k

    # NIfTI: the series' affine, the masks on its voxel grid
    saved = nib.load(str(out / "study_1.2.3_mask.nii.gz"))
    np.testing.assert_allclose(saved.affine, scan.affine)
    data = np.asarray(saved.dataobj)
    assert data.shape == (33, 41, 25) and data.dtype == np.uint8
    assert all(np.array_equal(data[:, :, k].T.astype(bool), masks[k]) for k in range(25))

    # DICOM SEG: highdicom and pydicom read it; it references exactly the input's instances
    raw = pydicom.dcmread(out / "study_1.2.3_seg.dcm")
    assert raw.Modality == "SEG" and raw.StudyInstanceUID == info["study"]
    refs = raw.ReferencedSeriesSequence[0]
    assert refs.SeriesInstanceUID == info["series"]
    assert sorted(r.ReferencedSOPInstanceUID for r in refs.ReferencedInstanceSequence) == sorted(info["sop_uids"])
    seg = hd.seg.segread(out / "study_1.2.3_seg.dcm")
    order = [ds.SOPInstanceUID for ds in scan.datasets]
    frames = seg.get_pixels_by_source_instance(order, segment_numbers=[1])[..., 0]
    assert all(np.array_equal(frames[k].astype(bool), masks[k]) for k in range(25))

    # Secondary Capture: one per slice, one new series in the input's study, each naming its source slice,
    # its pixels the outline burned into that slice
    captures = sorted((out / "study_1.2.3_overlay").iterdir())
    assert len(captures) == 25
    series = set()
    for k, p in enumerate(captures):
        sc = pydicom.dcmread(p)
        assert sc.SOPClassUID.name == "Secondary Capture Image Storage" and sc.Modality == "OT"
        assert sc.StudyInstanceUID == info["study"] and sc.PatientID == "NIB001"
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == order[k]
        assert list(sc.PatientOrientation) == ["L", "A"]  # rows stored anterior-first
        assert np.array_equal(sc.pixel_array, overlay_outline(scan.rgb(k), masks[k])), k
        series.add(sc.SeriesInstanceUID)
    assert len(series) == 1 and series.isdisjoint({info["series"], raw.SeriesInstanceUID})

    # the report: the analysis' numbers, the checksum of the folder's listing
    page = Page((out / "study_1.2.3_report.html").read_text(encoding="utf-8"))
    assert page.field("volume").startswith(f"{result.volume_cm3:,.3f} cm³")
    assert page.field("tumor_slices").startswith(f"{result.tumor_slices} of 25")
    listing = "".join(f"{hashlib.sha256((tmp_path / 'in' / 'series' / n).read_bytes()).hexdigest()}  {n}\n"
                      for n in sorted(files))
    assert page.field("sha256") == hashlib.sha256(listing.encode()).hexdigest() == input_sha256(scan)
    assert page.field("source_name") == "series"

    # a folder output as one download: a zip of its files
    with zipfile.ZipFile(outputs.download("png")) as zf:
        assert sorted(zf.namelist()) == [f"study_1.2.3_masks/slice_{i:03d}.png" for i in range(25)]
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(zf.read(zf.namelist()[3])))) == 255, masks[3])


def test_an_enhanced_multi_frame_file_places_its_nifti_mask_as_the_series_does(tmp_path):
    """The anatomical volume as one enhanced MR file whose frames carry their own positions: its NIfTI mask
    lands on the same voxels in world space as the mask of the same volume given as a series."""
    files, _ = series_files()
    series = read_scan(write_folder(tmp_path / "series", files))
    data, affine = anatomical()
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    n_i, n_j, n_k = data.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = EnhancedMRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = EnhancedMRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "NIB001", "Anatomical^Nibabel", "", "O"
    ds.StudyID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "20240101", "1200", "", ""
    ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = 1, 1, "nibabel test data"
    shared, measures, plane = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = ["2", "2"], 2.0
    plane.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Sequence([measures]), Sequence([plane])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in range(n_k):
        position, group = Dataset(), Dataset()
        position.ImagePositionPatient = [f"{v:g}" for v in (lps @ [0, n_j - 1, k, 1])[:3]]
        group.PlanePositionSequence = Sequence([position])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    pixels = np.stack([data[:, ::-1, k].T for k in range(n_k)])
    ds.NumberOfFrames, (ds.Rows, ds.Columns) = n_k, pixels.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.ascontiguousarray(pixels).astype("<i2").tobytes()
    ds.save_as(tmp_path / "volume.dcm", enforce_file_format=True)

    single = read_scan(tmp_path / "volume.dcm")
    assert single.n_slices == 25 and single.datasets is None
    np.testing.assert_allclose(single.affine, series.affine, atol=1e-6)
    results = [whole(series), whole(single)]
    assert all(np.array_equal(a, b) for a, b in zip(results[0].masks, results[1].masks))
    saved = [nib.load(str(write_outputs(r, tmp_path / name, formats=["nifti"]).written["nifti"]))
             for r, name in zip(results, ("a", "b"))]
    np.testing.assert_allclose(saved[0].affine, saved[1].affine)
    assert np.array_equal(np.asarray(saved[0].dataobj), np.asarray(saved[1].dataobj))
    # its SEG references the one file, frame by frame
    seg = pydicom.dcmread(write_outputs(results[1], tmp_path / "c", formats=["dicom-seg"]).written["dicom-seg"])
    assert seg.NumberOfFrames == 25
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID


# -- what each input cannot have ----------------------------------------------------------------
def test_one_dicom_slice_gets_a_placed_nifti_a_seg_and_a_capture(tmp_path):
    scan = read_scan(MR_SMALL)
    result = analyze_scan(stand_in_pipeline(), scan)
    outputs = write_outputs(result, tmp_path, formats="png,nifti,dicom-seg,secondary-capture")
    assert outputs.skipped == {} and set(outputs.written) == {"png", "nifti", "dicom-seg", "secondary-capture"}
    source = pydicom.dcmread(MR_SMALL)
    mask = result.segmentation.mask
    assert np.array_equal(png_mask(tmp_path / "MR_small_mask.png"), mask) and mask.shape == (64, 64)
    saved = nib.load(str(tmp_path / "MR_small_mask.nii.gz"))
    # voxel (0, 0) sits at ImagePositionPatient, in RAS; one step along a row is 0.3125 mm to the left
    np.testing.assert_allclose(saved.affine @ [0, 0, 0, 1], [-v if i < 2 else v for i, v in
                                                             enumerate(map(float, source.ImagePositionPatient))] + [1],
                               atol=1e-4)
    np.testing.assert_allclose(saved.affine[:3, 0], [-0.3125, 0, 0], atol=1e-6)
    assert np.array_equal(np.asarray(saved.dataobj)[:, :, 0].T.astype(bool), mask)
    sc = pydicom.dcmread(tmp_path / "MR_small_overlay.dcm")
    assert sc.StudyInstanceUID == source.StudyInstanceUID and list(sc.PatientOrientation) == ["L", "P"]
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert pydicom.dcmread(tmp_path / "MR_small_seg.dcm").ReferencedSeriesSequence[0].SeriesInstanceUID == \
        source.SeriesInstanceUID


def test_unsupported_formats_are_skipped_with_a_reason_and_leave_nothing(tmp_path):
    png = tmp_path / "slice.png"
    Image.fromarray(phantom()).save(png)
    outputs = write_outputs(analyze_scan(stand_in_pipeline(), read_scan(png)), tmp_path / "a", formats=FORMATS)
    assert set(outputs.written) == {"png", "report"}
    assert outputs.skipped == {
        "nifti": "a plain image has no voxel geometry (its mask is the PNG)",
        "dicom-seg": "a DICOM Segmentation references DICOM source images; this input is not DICOM",
        "secondary-capture": "a Secondary Capture joins the source's DICOM study; this input is not DICOM"}
    assert png_mask(tmp_path / "a" / "slice_mask.png").shape == phantom().shape
    assert tree(tmp_path / "a") == ["slice_mask.png", "slice_report.html"]

    # a DICOM file without UIDs, position or orientation: no NIfTI, the SEG fails and leaves no file
    dcm = write_dicom(tmp_path / "bare.dcm", phantom().astype(np.uint16) * 4)
    outputs = write_outputs(analyze_scan(stand_in_pipeline(), read_scan(dcm)), tmp_path / "b", formats=FORMATS)
    assert set(outputs.written) == {"png", "report"}
    assert outputs.skipped["nifti"].startswith("the DICOM header does not say where its pixels lie")
    assert outputs.skipped["dicom-seg"].startswith("cannot write a DICOM Segmentation for this file")
    assert "orientation" in outputs.skipped["secondary-capture"]
    assert tree(tmp_path / "b") == ["bare_mask.png", "bare_report.html"]

    # one slice of a volume: its PNG, not a volume's NIfTI
    nii = write_phantom_nifti(tmp_path / "vol.nii.gz", phantom_volume((0, 4, 9)))
    result = analyze_scan(stand_in_pipeline(), read_scan(nii), slice_index=2)
    outputs = write_outputs(result, tmp_path / "c", formats=["png", "nifti"])
    assert outputs.skipped == {"nifti": "a volume's mask needs every slice segmented: analyze the whole volume"}
    assert outputs.name("png") == "vol_slice_002_mask.png"
    assert int(png_mask(tmp_path / "c" / "vol_slice_002_mask.png").sum()) == int((phantom_volume((0, 4, 9))[..., 2]
                                                                                 == TUMOR).sum())
    # the default: the PNG and what the input supports, nothing said about the rest
    outputs = write_outputs(whole(read_scan(nii)), tmp_path / "d")
    assert set(outputs.written) == {"png", "nifti"} and outputs.skipped == {}


@pytest.mark.parametrize("name, stem", [
    ("study.zip#1.2.840.99", "study_1.2.840.99"), ("brain.nii.gz", "brain"), ("a#b.png", "a_b"),
    ("../../etc/passwd", "passwd"), ("..", "scan"), (".hidden.dcm", "hidden"), ("C:\\x\\y.dcm", "y"),
    ("<script>alert(1)<script> t1.jpg", "script_alert_1_script_t1"), ("", "scan"),
])
def test_names_are_sanitised_and_stay_in_the_folder(tmp_path, name, stem):
    assert safe_stem(name) == stem
    png = tmp_path / "in.png"
    Image.fromarray(phantom()).save(png)
    out = tmp_path / "deep" / "out"
    outputs = write_outputs(analyze_scan(stand_in_pipeline(), read_scan(png)), out, formats=["png"], stem=name)
    assert tree(tmp_path) == ["deep", "deep/out", f"deep/out/{stem}_mask.png", "in.png"]
    assert outputs.written["png"].parent == out


def test_format_lists_and_checksums(tmp_path):
    assert parse_formats("report, PNG,nifti") == ("png", "nifti", "report")
    assert parse_formats(["dicom-seg"]) == ("dicom-seg",)
    for bad in ("png,jpeg", "", " , "):
        with pytest.raises(ConfigError, match="choose from png,nifti,dicom-seg,secondary-capture,report"):
            parse_formats(bad)
    (tmp_path / "a.bin").write_bytes(b"one")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"two")
    sha = {n: hashlib.sha256(d).hexdigest() for n, d in (("a", b"one"), ("b", b"two"))}
    assert input_sha256(tmp_path / "a.bin") == sha["a"]
    assert input_sha256(tmp_path) == hashlib.sha256(f"{sha['a']}  a.bin\n{sha['b']}  sub/b.bin\n".encode()).hexdigest()
    assert input_sha256([tmp_path / "sub" / "b.bin", tmp_path / "a.bin"]) == hashlib.sha256(
        f"{sha['a']}  a.bin\n{sha['b']}  b.bin\n".encode()).hexdigest()
