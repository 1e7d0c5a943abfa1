"""A DICOM series given as a folder or a .zip of slice files (tumorlens.dicom_series through read_scan).

The series are built here from a real volume: nibabel's own test scan `anatomical.nii` (33 x 41 x 25,
2 mm, int16), each slice written as a single-frame MR DICOM file with pydicom, the headers carrying
the volume's geometry (ImagePositionPatient / ImageOrientationPatient / PixelSpacing), InstanceNumbers
shuffled against position and file names shuffled on disk. The non-image DICOM is pydicom's own
structured report (`reportsi.dcm`, from the wheel's test_files folder). SimpleITK (GDCM) reads the
same folder as an independent check of the order and geometry."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (ExplicitVRLittleEndian, GrayscaleSoftcopyPresentationStateStorage, MRImageStorage,
                         generate_uid)

from tumorlens import dicom_series, upload_files
from tumorlens.decode import window
from tumorlens.errors import BudgetError, DataError, public_message
from tumorlens.medical_io import RequestBudget, read_nifti, read_scan
from tumorlens.predict import collect_inputs, predict
from tumorlens.scan_export import write_dicom_seg, write_nifti_mask

ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # in the wheel: no download
REPORT = PYDICOM_FILES / "reportsi.dcm"  # a Basic Text SR: no PixelData


def anatomical() -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(ANATOMICAL))
    return np.asarray(img.dataobj).astype(np.int16), img.affine


def dicom_bytes(pixels: np.ndarray, *, iop, ipp, spacing=(2.0, 2.0), study: str, series: str, frame: str,
                instance: int, description: str = "T1 anatomical", sop_class=MRImageStorage) -> bytes:
    """One single-frame MR slice (int16) as the bytes of a DICOM file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, meta.MediaStorageSOPInstanceUID, "MR"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Anatomical^Nibabel", "NIB001", "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.StudyID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "20240101", "120000", "", ""
    ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = 1, description, instance
    ds.Manufacturer = "nibabel test data"
    if pixels is not None:
        ds.ImageOrientationPatient = [f"{v:g}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.6g}" for v in ipp]
        ds.PixelSpacing, ds.SliceThickness = [f"{s:g}" for s in spacing], 2.0
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(pixels).astype("<i2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def series_files(*, keep=None, rows_anterior: bool = False, description: str = "T1 anatomical", study=None,
                 frame=None, seed: int = 0) -> tuple[dict[str, bytes], dict]:
    """anatomical.nii's slices (those in `keep`, default all) as {shuffled file name: DICOM bytes}.

    Standard axial: rows run from anterior to posterior (IOP 1 0 0 / 0 1 0), so slice k of the volume
    is shown exactly as read_scan shows the NIfTI's slice k. `rows_anterior` stores the rows the other
    way (column direction 0 -1 0): the slice normal then points down, so along it the order reverses."""
    data, affine = anatomical()
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    n_i, n_j, n_k = data.shape
    keep = list(range(n_k)) if keep is None else list(keep)
    study, frame, series = study or generate_uid(), frame or generate_uid(), generate_uid()
    rng = np.random.default_rng(seed)
    instances = rng.permutation(len(keep)) + 1          # InstanceNumbers: shuffled against position
    names = rng.permutation(len(keep))                   # file names: shuffled against position
    files, uids = {}, []
    for n, k in enumerate(keep):
        if rows_anterior:   # row r = j (anterior-going rows), voxel (0, 0, k) at the top left
            pixels, iop, corner = data[:, :, k].T, (1, 0, 0, 0, -1, 0), (0, 0, k, 1)
        else:               # row r = n_j - 1 - j, voxel (0, n_j - 1, k) at the top left
            pixels, iop, corner = data[:, ::-1, k].T, (1, 0, 0, 0, 1, 0), (0, n_j - 1, k, 1)
        blob = dicom_bytes(pixels, iop=iop, ipp=(lps @ corner)[:3], study=study, series=series, frame=frame,
                           instance=int(instances[n]), description=description)
        uids.append(pydicom.dcmread(io.BytesIO(blob)).SOPInstanceUID)
        # DICOM files need no suffix: every other one has none (they carry the DICM preamble)
        files[f"IM{names[n]:04d}" + (".dcm" if n % 2 else "")] = blob
    return files, {"series": series, "study": study, "frame": frame, "keep": keep, "sop_uids": uids,
                   "instances": instances}


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(blob)
    return folder


def write_zip(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in files.items():
            zf.writestr(prefix + name, blob)
    return path


def nifti_display() -> list[np.ndarray]:
    """How read_scan shows anatomical.nii itself: the slices a series of it must show."""
    return read_nifti(ANATOMICAL).slices


def expected_slices(keep, rows_anterior=False) -> np.ndarray:
    """The DICOM slices of `keep` in position order, windowed over the stack as read_scan windows."""
    data, _ = anatomical()
    stack = np.stack([data[:, :, k].T if rows_anterior else data[:, ::-1, k].T for k in keep]).astype(np.float32)
    return window(stack)[0]


# -- one series: order, geometry, folder == zip ---------------------------------------------
def test_a_series_folder_reads_as_the_volume_in_position_order(tmp_path):
    files, info = series_files()
    folder = write_folder(tmp_path / "series", files)
    # neither the file names nor the instance numbers give the order
    by_name = [info["sop_uids"].index(pydicom.dcmread(folder / n).SOPInstanceUID) for n in sorted(files)]
    assert by_name != sorted(by_name) and list(info["instances"]) != sorted(info["instances"])

    scan = read_scan(folder)
    nifti = nifti_display()
    assert scan.kind == "dicom" and scan.is_volume and scan.n_slices == len(nifti) == 25
    assert scan.shape == (41, 33) and scan.pixel_spacing_mm == (2.0, 2.0) and scan.slice_thickness_mm == pytest.approx(2.0)
    for k in range(25):  # slice k is the NIfTI's slice k, shown the same way, pixel for pixel
        assert np.array_equal(scan.slices[k], nifti[k]), k
    assert [ds.SOPInstanceUID for ds in scan.datasets] == info["sop_uids"]
    assert all("PixelData" not in ds for ds in scan.datasets)  # headers only
    assert scan.notes == []
    # voxel (col, row, slice) -> RAS mm: the corner of slice 0 and the steps along each axis
    _, affine = anatomical()
    np.testing.assert_allclose(scan.affine @ [0, 0, 0, 1], affine @ [0, 40, 0, 1])
    np.testing.assert_allclose(scan.affine[:3, :3], [[-2, 0, 0], [0, -2, 0], [0, 0, 2]])
    assert "25 slices" in scan.describe() and "slice spacing 2 mm" in scan.describe()


def test_the_order_follows_the_slice_normal_not_the_z_coordinate(tmp_path):
    # rows stored anterior-first: the normal (row x column direction) points to the feet, so the
    # first slice along it is the top one, and each is the NIfTI's slice upside down
    files, info = series_files(rows_anterior=True)
    scan = read_scan(write_folder(tmp_path / "series", files))
    nifti = nifti_display()
    for m in range(25):
        assert np.array_equal(scan.slices[m], nifti[24 - m][::-1]), m
    assert [ds.SOPInstanceUID for ds in scan.datasets] == info["sop_uids"][::-1]
    z = [float(ds.ImagePositionPatient[2]) for ds in scan.datasets]
    assert z == sorted(z, reverse=True)
    np.testing.assert_allclose(scan.affine[:3, 2], [0, 0, -2])


def test_simpleitk_reads_the_same_order_and_geometry(tmp_path):
    import SimpleITK as sitk
    files, info = series_files(rows_anterior=True, seed=3)
    folder = write_folder(tmp_path / "series", files)
    scan = read_scan(folder)
    reader = sitk.ImageSeriesReader()
    (uid,) = reader.GetGDCMSeriesIDs(str(folder))
    names = reader.GetGDCMSeriesFileNames(str(folder), uid)
    assert [pydicom.dcmread(n).SOPInstanceUID for n in names] == [ds.SOPInstanceUID for ds in scan.datasets]
    reader.SetFileNames(names)
    img = reader.Execute()
    direction = np.array(img.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3], lps[:3, 3] = direction * np.array(img.GetSpacing()), img.GetOrigin()
    np.testing.assert_allclose(np.diag([-1, -1, 1, 1]) @ lps, scan.affine, atol=1e-4)
    assert np.array_equal(window(sitk.GetArrayFromImage(img).astype(np.float32))[0], np.stack(scan.slices))


def test_a_zip_reads_as_its_folder_does(tmp_path):
    files, _ = series_files()
    folder = read_scan(write_folder(tmp_path / "series", files))
    zipped = read_scan(write_zip(tmp_path / "series.zip", files, prefix="export/MR/"))
    assert zipped.n_slices == 25 and zipped.source.endswith("series.zip")
    assert all(np.array_equal(a, b) for a, b in zip(folder.slices, zipped.slices))
    np.testing.assert_allclose(zipped.affine, folder.affine)
    assert [d.SOPInstanceUID for d in zipped.datasets] == [d.SOPInstanceUID for d in folder.datasets]


def test_the_budget_is_checked_before_any_pixel_is_decoded(tmp_path, monkeypatch):
    files, _ = series_files()
    folder = write_folder(tmp_path / "series", files)
    monkeypatch.setattr(dicom_series, "_decode", lambda *a: pytest.fail("decoded before the budget check"))
    with pytest.raises(BudgetError, match=r"33x41x25 \(33,825 voxels\)"):
        read_scan(folder, budget=RequestBudget(max_total_pixels=10_000))


def test_several_files_of_one_upload_read_as_their_folder_does(tmp_path, monkeypatch):
    """A multi-file upload (each file in its own folder, as a browser's uploads land) is one series, read
    where the files are; a scan of its own among them, or too many files, is a clear error."""
    big, big_info = series_files(seed=5)
    small, small_info = series_files(keep=range(5, 15), description="short stack", seed=6)
    folder = read_scan(write_folder(tmp_path / "series", big))
    paths = []
    for k, (name, blob) in enumerate({**big, **{f"s{n}": b for n, b in small.items()}}.items()):
        (tmp_path / "up" / str(k)).mkdir(parents=True)
        paths.append(tmp_path / "up" / str(k) / name)
        paths[-1].write_bytes(blob)
    scan = read_scan(paths)
    assert scan.n_slices == 25 and all(np.array_equal(a, b) for a, b in zip(scan.slices, folder.slices))
    assert [d.SOPInstanceUID for d in scan.datasets] == big_info["sop_uids"]
    np.testing.assert_allclose(scan.affine, folder.affine)
    assert scan.files == tuple(str(p) for p in paths) and Path(scan.source) == tmp_path / "up"
    assert f"'short stack' ({small_info['series']}), 10 slices" in scan.notes[0]
    assert scan.notes[0].endswith("To read another, give only that series' files.")
    assert read_scan(paths, series_uid=small_info["series"]).n_slices == 10
    assert read_scan(paths[:1]).n_slices == 1  # one file is just that file

    (tmp_path / "up" / "scan.nii.gz").write_bytes(ANATOMICAL.read_bytes())
    with pytest.raises(DataError, match=r"4 files came together, .* 'scan.nii.gz' is a scan of its own"):
        read_scan(paths[:3] + [tmp_path / "up" / "scan.nii.gz"])
    monkeypatch.setattr(upload_files, "MAX_SERIES_FILES", 5)
    with pytest.raises(DataError, match=r"35 files, over the 5 file limit"):
        read_scan(paths)


# -- what makes a series unusable -------------------------------------------------------------
def test_a_missing_slice_is_an_error_naming_the_gap(tmp_path):
    files, _ = series_files(keep=[k for k in range(25) if k != 12])
    with pytest.raises(DataError) as err:
        read_scan(write_folder(tmp_path / "series", files))
    reason = err.value.reason
    # slice 12 sat at z = -16 + 2*12 = 8 mm: the gap runs from 6 to 10 mm
    assert "unevenly spaced" in reason and "2 mm apart" in reason and "4 mm gap between slice 11 and 12 of 24" in reason
    assert "at 6.00 and 10.00 mm" in reason and "a slice is missing" in reason


@pytest.mark.parametrize("change, expected", [
    ("size", "differ in size (33x41: 24 files, 32x41: 1 file)"),
    ("orientation", "differ in orientation"),
    ("position", "lie at the same position"),
])
def test_a_mixed_series_is_an_error(tmp_path, change, expected):
    files, info = series_files()
    name = sorted(files)[5]
    ds = pydicom.dcmread(io.BytesIO(files[name]))
    if change == "size":  # one slice cropped by a column
        pixels = ds.pixel_array[:, :-1]
        ds.Columns, ds.PixelData = pixels.shape[1], np.ascontiguousarray(pixels).astype("<i2").tobytes()
    elif change == "orientation":
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]  # a coronal slice in an axial series
    else:
        ds.ImagePositionPatient = pydicom.dcmread(io.BytesIO(files[sorted(files)[6]])).ImagePositionPatient
    buf = io.BytesIO()
    ds.save_as(buf)
    files[name] = buf.getvalue()
    with pytest.raises(DataError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_scan(write_folder(tmp_path / "series", files))


# -- several series ---------------------------------------------------------------------------
def test_the_series_with_the_most_slices_is_read_and_the_others_listed(tmp_path):
    big, big_info = series_files(seed=1)
    small, small_info = series_files(keep=range(5, 15), description="short stack", study=big_info["study"],
                                     frame=big_info["frame"], seed=2)
    folder = tmp_path / "study"
    write_folder(folder / "a", big)
    write_folder(folder / "b", small)
    archive = write_zip(tmp_path / "study.zip", {**{"a/" + k: v for k, v in big.items()},
                                                   **{"b/" + k: v for k, v in small.items()}})
    for source in (folder, archive):
        scan = read_scan(source)
        assert scan.n_slices == 25 and [d.SeriesInstanceUID for d in scan.datasets][0] == big_info["series"]
        (note,) = scan.notes
        assert "2 series here" in note and "'T1 anatomical'" in note and "(the most slices)" in note
        assert f"'short stack' ({small_info['series']}), 10 slices" in note
        assert f"{source.name}#UID" in note

        # the other one, by name: path#UID, or series_uid=
        for other in (read_scan(f"{source}#{small_info['series']}"), read_scan(source, series_uid=small_info["series"])):
            assert other.n_slices == 10
            assert np.array_equal(np.stack(other.slices), expected_slices(range(5, 15)))
            assert [d.SOPInstanceUID for d in other.datasets] == small_info["sop_uids"]
            assert f"'T1 anatomical' ({big_info['series']}), 25 slices" in other.notes[0]
    with pytest.raises(DataError, match=r"no series has SeriesInstanceUID 1\.2\.3; here: 'T1 anatomical'"):
        read_scan(folder, series_uid="1.2.3")
    with pytest.raises(DataError, match="is not a SeriesInstanceUID"):
        read_scan(f"{archive}#first")
    with pytest.raises(DataError, match="from a folder or a .zip, not one file"):
        read_scan(f"{folder / 'a' / sorted(big)[0]}#{big_info['series']}")


# -- what is not an image ---------------------------------------------------------------------
def test_dicom_without_pixel_data_is_left_out_with_a_note(tmp_path):
    files, info = series_files()
    # pydicom's structured report, and a presentation state in the series itself
    files["report.dcm"] = REPORT.read_bytes()
    files["PS0001"] = dicom_bytes(None, iop=None, ipp=None, study=info["study"], series=info["series"],
                                  frame=info["frame"], instance=99, sop_class=GrayscaleSoftcopyPresentationStateStorage)
    files["readme.txt"] = b"exported by a PACS"
    files["copy/IM_again"] = files[sorted(files)[0]]  # one slice twice: read once
    scan = read_scan(write_folder(tmp_path / "series", files))
    assert scan.n_slices == 25 and len({ds.SOPInstanceUID for ds in scan.datasets}) == 25
    assert np.array_equal(np.stack(scan.slices), np.stack(nifti_display()))
    assert scan.notes == ["left out DICOM files without an image (no PixelData): 1 Basic Text SR Storage, "
                          "1 Grayscale Softcopy Presentation State Storage",
                          "read once 1 file repeating an instance (same SOPInstanceUID)",
                          "left out 1 file that is not DICOM"]


def test_only_non_image_dicom_is_an_error(tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "report.dcm").write_bytes(REPORT.read_bytes())
    with pytest.raises(DataError, match=r"holds no DICOM image: only DICOM files without pixel data "
                                        r"\(1 Basic Text SR Storage\)"):
        read_scan(folder)


def test_a_zip_without_dicom_is_an_error(tmp_path):
    archive = write_zip(tmp_path / "photos.zip", {"notes.txt": b"hello", "scan.png": b"\x89PNG\r\n\x1a\n" + bytes(200),
                                                   "data": bytes(300)})
    with pytest.raises(DataError, match=r"the zip holds no DICOM file \(3 other files\)"):
        read_scan(archive)
    (tmp_path / "not.zip").write_bytes(b"PK" + bytes(100))
    with pytest.raises(DataError, match="not a readable zip file"):
        read_scan(tmp_path / "not.zip")


# -- hostile zips: refused from the directory, before any member is inflated ----------------------
@pytest.fixture
def no_inflating(monkeypatch):
    """Fails a test when any zip member is opened for reading."""
    def refuse(self, name, mode="r", *args, **kwargs):
        if mode == "r":
            raise AssertionError(f"a member was inflated: {name}")
        return real(self, name, mode, *args, **kwargs)
    real = zipfile.ZipFile.open
    return lambda: monkeypatch.setattr(zipfile.ZipFile, "open", refuse)


def test_a_zip_bomb_is_refused_by_its_ratio(tmp_path, no_inflating):
    files, _ = series_files(keep=range(3))
    files["bomb.dcm"] = bytes(16 * 2**20)  # 16 MB of zeros: about 16 kB packed
    archive = write_zip(tmp_path / "bomb.zip", files)
    assert archive.stat().st_size < 200_000
    no_inflating()
    with pytest.raises(DataError, match=r"zip member 'bomb.dcm' inflates [\d,]+ times \(over 100\): refused as a zip bomb"):
        read_scan(archive)


def test_zip_sizes_and_member_counts_are_capped(tmp_path, monkeypatch, no_inflating):
    block = np.random.default_rng(0).bytes(16_384)
    archive = write_zip(tmp_path / "big.zip", {"big.dcm": block * 192})  # 3 MB, packs about 60-fold
    many = write_zip(tmp_path / "many.zip", {f"IM{i}": b"x" for i in range(6)})
    no_inflating()
    with pytest.raises(DataError, match=r"zip member 'big.dcm' unpacks to 3 MB, over the 1 MB limit per file"):
        read_scan(archive, max_bytes=2**20)
    monkeypatch.setattr(upload_files, "MAX_SERIES_BYTES", 2 * 2**20)
    with pytest.raises(DataError, match=r"the zip unpacks to 3 MB, over the 2 MB limit"):
        read_scan(archive)
    monkeypatch.setattr(upload_files, "MAX_SERIES_FILES", 5)
    with pytest.raises(DataError, match=r"the zip holds 6 members, over the 5 limit"):
        read_scan(many)


@pytest.mark.parametrize("name, why", [
    ("../evil.dcm", "a path out of the zip's folder ('..')"),
    ("series/../../evil.dcm", "a path out of the zip's folder ('..')"),
    ("/tmp/evil_tumorlens_test.dcm", "an absolute path"),
    ("C:/evil.dcm", "an absolute path"),
    ("link.dcm", "a symbolic link"),
])
def test_unsafe_member_names_are_refused_and_nothing_is_written(tmp_path, name, why, no_inflating):
    files, _ = series_files(keep=range(3))
    inside = tmp_path / "upload"
    inside.mkdir()
    archive = write_zip(inside / "series.zip", files)
    with zipfile.ZipFile(archive, "a") as zf:
        info = zipfile.ZipInfo(name)
        if why == "a symbolic link":
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
        else:
            zf.writestr(info, next(iter(files.values())))
    before = sorted(p for p in tmp_path.rglob("*"))
    no_inflating()
    with pytest.raises(DataError) as err:
        read_scan(archive)
    assert err.value.reason == f"the zip holds an unsafe member '{name}' ({why}); nothing was extracted"
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not Path("/tmp/evil_tumorlens_test.dcm").exists() and not (tmp_path / "evil.dcm").exists()
    assert str(tmp_path) not in public_message(str(err.value), archive)


# -- masks written back -------------------------------------------------------------------------
def masks_of(scan) -> list[np.ndarray]:
    return [s > 100 for s in scan.slices]  # the brighter tissue, a different outline on each slice


def test_a_dicom_seg_references_every_source_instance(tmp_path):
    import highdicom as hd
    files, info = series_files(rows_anterior=True)
    scan = read_scan(write_folder(tmp_path / "series", files))
    masks = masks_of(scan)
    assert 0 < sum(m.sum() for m in masks) and len({int(m.sum()) for m in masks}) > 10
    out = write_dicom_seg(scan, masks, tmp_path / "seg.dcm")

    raw = pydicom.dcmread(out)
    (series_ref,) = raw.ReferencedSeriesSequence
    assert series_ref.SeriesInstanceUID == info["series"] and raw.StudyInstanceUID == info["study"]
    assert sorted(r.ReferencedSOPInstanceUID for r in series_ref.ReferencedInstanceSequence) == sorted(info["sop_uids"])
    assert raw.FrameOfReferenceUID == info["frame"] and raw.NumberOfFrames == 25

    seg = hd.seg.segread(out)
    assert {uid for _, _, uid in seg.get_source_image_uids()} == set(info["sop_uids"])
    order = [ds.SOPInstanceUID for ds in scan.datasets]
    pixels = seg.get_pixels_by_source_instance(order, segment_numbers=[1])[..., 0]
    assert pixels.shape == (25, 41, 33)
    for k in range(25):  # each frame is the mask of the slice it references
        assert np.array_equal(pixels[k].astype(bool), masks[k]), k


def test_a_nifti_mask_of_a_series_lands_on_the_volume(tmp_path):
    files, _ = series_files(rows_anterior=True)
    scan = read_scan(write_folder(tmp_path / "series", files))
    out = write_nifti_mask(scan, masks_of(scan), tmp_path / "mask.nii.gz")
    saved = nib.load(str(out))
    assert saved.shape == (33, 41, 25) and saved.get_data_dtype() == np.uint8
    np.testing.assert_allclose(saved.affine, scan.affine)
    # in world space the mask is the bright tissue of the volume the series was cut from
    data, affine = anatomical()
    truth = nib.as_closest_canonical(nib.Nifti1Image((window(data.astype(np.float32))[0] > 100).astype(np.uint8), affine))
    mask = nib.as_closest_canonical(saved)
    np.testing.assert_allclose(mask.affine, truth.affine, atol=1e-4)
    assert np.array_equal(np.asarray(mask.dataobj), np.asarray(truth.dataobj))
    assert 0 < int(np.asarray(mask.dataobj).sum()) < mask.shape[0] * mask.shape[1] * mask.shape[2]


# -- tumorlens predict ----------------------------------------------------------------------------
def test_predict_reads_a_series_folder_or_zip_as_one_volume(tmp_path):
    from test_scan_analysis import stand_in_pipeline
    files, info = series_files()
    study = tmp_path / "study"
    write_folder(study / "series1", files)
    small, _ = series_files(keep=range(5, 15), seed=4)
    write_folder(study / "series2", small)
    inputs = write_folder(tmp_path / "in", {"notes.txt": b"not a scan"})
    archive = write_zip(inputs / "series.zip", files)

    # a study folder: one input per folder of slices; a folder with a zip: the zip is one input
    assert collect_inputs([str(study)]) == [study / "series1", study / "series2"]
    assert collect_inputs([str(inputs)]) == [archive]
    assert collect_inputs([str(study / "series1")]) == [study / "series1"]

    out = tmp_path / "out"
    rows = predict([str(study / "series1"), str(archive)], out, stand_in_pipeline())
    assert len(rows) == 2
    with open(out / "predictions.csv", newline="") as f:
        saved = list(csv.DictReader(f))
    assert [r["file"] for r in saved] == [str(study / "series1"), str(archive)]
    for row, stem in zip(saved, ("series1", "series")):
        assert row["status"] == "ok" and row["slices"] == "25" and row["mask_file"] == f"{stem}_masks/"
        assert len(list((out / f"{stem}_masks").glob("slice_*.png"))) == 25
        assert float(row["volume_cm3"]) == pytest.approx(int(row["tumor_pixels"]) * 8 / 1000, abs=1e-3)
        seg = pydicom.dcmread(out / row["dicom_seg_file"])
        assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 25
