"""read_scan: plain images, DICOM and NIfTI built here from generated slices (`phantom`) with known
spacing, orientation and windowing, and every kind of bad file turned into a clear DataError. No test
here reads the shared data: they run in the fast lane.

The builders (`write_dicom`, `write_nifti`, `BAD_INPUTS`) are reused by the app tests, and so is
`real_slice` (a real BRISC test slice, for the tests that run a model)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from tumorlens import medical_io
from tumorlens.errors import DataError
from tumorlens.medical_io import MAX_UPLOAD_BYTES, read_scan
from tumorlens.preprocess import decode_image

REPO = Path(__file__).resolve().parents[1]
BRISC = REPO.parent / "shared" / "data" / "brisc2025"


def real_slice(cls: str = "glioma", i: int = 0) -> Path:
    """The i-th real BRISC test slice of a class: reads the shared data (for slow tests only)."""
    return sorted((BRISC / "classification_task" / "test" / cls).glob("*.jpg"))[i]


def phantom(i: int = 0, size: tuple[int, int] = (256, 224)) -> np.ndarray:
    """A generated stand-in for a grayscale MRI slice, `size` = (width, height) as in gray(): a
    head-like oval with a skull ring, a tissue gradient, texture and a bright blob placed by `i`.
    No two alike, none symmetric (orientation mistakes show), the full 0..255 range used."""
    w, h = size
    rng = np.random.default_rng(i)
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    r = np.hypot(xx / 0.85, yy / 0.95)
    img = np.where(r < 1, 90 + 40 * xx + 25 * yy, 0.0) + np.where((r > 0.88) & (r < 1), 100, 0)
    cx, cy = rng.uniform(-0.5, 0.5, 2)
    img += 110 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02) + rng.normal(0, 6, img.shape) * (r < 1)
    img = np.clip(img, 0, None)
    return np.rint(img * 255 / img.max()).astype(np.uint8)


def phantom_file(path: Path, i: int = 0, size: tuple[int, int] = (256, 224)) -> Path:
    """`phantom(i, size)` written as a grayscale JPEG, as the datasets store slices."""
    Image.fromarray(phantom(i, size)).save(path, quality=90)
    return path


def gray(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    img = Image.open(path).convert("L")
    if size:
        img = img.resize(size, Image.BILINEAR)
    return np.asarray(img)


def window(arr: np.ndarray) -> np.ndarray:
    """The min-max window read_scan applies (over the whole stack)."""
    arr = arr.astype(np.float64)
    return np.clip(np.rint((arr - arr.min()) * 255.0 / (arr.max() - arr.min())), 0, 255).astype(np.uint8)


# -- builders ------------------------------------------------------------------------------
def write_dicom(path: Path, pixels: np.ndarray, *, spacing=(0.6, 0.7), slope: float = 1.0, intercept: float = 0.0,
                photometric: str = "MONOCHROME2", thickness: float | None = None, between: float | None = None,
                pixel_data: bool = True, enhanced: bool = False, preamble: bool = True, rows_cols=None) -> Path:
    """A DICOM MR file: `pixels` is rows x cols (one frame) or frames x rows x cols, stored as uint16."""
    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns = rows_cols or pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    measures = Dataset()
    if spacing is not None:
        (measures if enhanced else ds).PixelSpacing = [f"{s:g}" for s in spacing]
    if thickness is not None:
        (measures if enhanced else ds).SliceThickness = thickness
    if between is not None:
        (measures if enhanced else ds).SpacingBetweenSlices = between
    if enhanced:
        group = Dataset()
        group.PixelMeasuresSequence = Sequence([measures])
        ds.SharedFunctionalGroupsSequence = Sequence([group])
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    if pixel_data:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.preamble = None
        pydicom.dcmwrite(path, ds, enforce_file_format=False)
    return path


def to_ras_volume(display_slices) -> np.ndarray:
    """Inverse of read_scan's NIfTI display: slice k shown as rows=anterior..posterior,
    cols=patient right..left -> data[x, y, k] on RAS+ axes."""
    return np.stack([np.asarray(s)[::-1, ::-1].T for s in display_slices], axis=-1)


def write_nifti(path: Path, display_slices, zooms=(0.9, 0.8, 2.5), *, storage: str = "ras",
                dtype=np.int16, scale: float = 3.0) -> Path:
    """A NIfTI volume whose slices, read the way read_scan shows them, are `display_slices`.
    storage: 'ras' (axes as read), 'lps' (x and y flipped) or 'xzy' (axes 1 and 2 swapped)."""
    data = to_ras_volume(display_slices).astype(np.float64) * scale + 7
    zx, zy, zz = zooms
    nx, ny, nz = data.shape
    if storage == "ras":
        affine = np.diag([zx, zy, zz, 1.0])
    elif storage == "lps":
        data = data[::-1, ::-1, :]
        affine = np.array([[-zx, 0, 0, (nx - 1) * zx], [0, -zy, 0, (ny - 1) * zy], [0, 0, zz, 0], [0, 0, 0, 1]])
    elif storage == "xzy":
        data = data.transpose(0, 2, 1)
        affine = np.array([[zx, 0, 0, 0], [0, 0, zy, 0], [0, zz, 0, 0], [0, 0, 0, 1]], dtype=float)
    else:
        raise ValueError(storage)
    img = nib.Nifti1Image(data.astype(dtype), affine)
    nib.save(img, str(path))
    return path


def nifti_display_slices(n: int = 4, size=(160, 128)) -> list[np.ndarray]:
    """`n` different generated slices of one shape (width, height)."""
    return [phantom(k, size) for k in range(n)]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _bad_zero_byte(d: Path) -> Path:
    (p := d / "empty.png").write_bytes(b"")
    return p


def _bad_not_an_image(d: Path) -> Path:
    (p := d / "notes.png").write_text("this is a text file, not a scan\n" * 20)
    return p


def _bad_corrupt(d: Path) -> Path:
    rng = np.random.default_rng(0)
    (p := d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return p


def _bad_truncated(d: Path) -> Path:
    data = phantom_file(d / "whole.jpg").read_bytes()
    (p := d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return p


def _bad_one_pixel(d: Path) -> Path:
    (p := d / "one_pixel.png").write_bytes(_png(np.zeros((1, 1), np.uint8)))
    return p


def _bad_enormous(d: Path) -> Path:
    p = d / "enormous.png"  # 8000 x 6000 = 48 Mpx of zeros: a small file, a huge image
    Image.new("L", (8000, 6000)).save(p, optimize=False)
    return p


def _bad_multi_frame(d: Path) -> Path:
    frames = [Image.fromarray(phantom(i, (64, 64))) for i in range(3)]
    p = d / "stack.tif"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    return p


def _bad_dicom_no_pixels(d: Path) -> Path:
    return write_dicom(d / "no_pixels.dcm", np.zeros((32, 32)), pixel_data=False)


def _bad_dicom_truncated(d: Path) -> Path:
    full = write_dicom(d / "full.dcm", np.full((64, 64), 100))
    (p := d / "truncated.dcm").write_bytes(full.read_bytes()[:3000])
    return p


def _bad_dicom_huge(d: Path) -> Path:  # the header claims 10000 x 10000; the check comes before decoding
    return write_dicom(d / "huge.dcm", np.zeros((16, 16)), rows_cols=(10000, 10000))


def _bad_nifti_4d(d: Path) -> Path:
    p = d / "timeseries.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 4, 3), np.int16), np.eye(4)), str(p))
    return p


def _bad_nifti_truncated(d: Path) -> Path:
    full = write_nifti(d / "full.nii", nifti_display_slices(3, (64, 48)))
    (p := d / "truncated.nii").write_bytes(full.read_bytes()[:5000])
    return p


def _bad_nifti_garbage(d: Path) -> Path:
    (p := d / "garbage.nii.gz").write_bytes(gzip.compress(b"no header here" * 40))
    return p


def _bad_over_cap(d: Path) -> Path:
    p = d / "huge_upload.png"  # sparse: takes no disk space
    with open(p, "wb") as f:
        f.truncate(MAX_UPLOAD_BYTES + 1)
    return p


# name -> (builder(tmp dir) -> path, what the error message must say)
BAD_INPUTS = {
    "zero_byte": (_bad_zero_byte, r"empty \(0 bytes\)"),
    "not_an_image": (_bad_not_an_image, r"not a readable image"),
    "corrupt": (_bad_corrupt, r"not a readable image"),
    "truncated": (_bad_truncated, r"not a readable image"),
    "one_by_one": (_bad_one_pixel, r"1x1; at least 16 px a side"),
    "enormous": (_bad_enormous, r"8000x6000 \(48,000,000 pixels\), over the [\d,]+ pixel limit"),
    "multi_frame": (_bad_multi_frame, r"3 frames; give a single 2-D slice"),
    "dicom_no_pixel_data": (_bad_dicom_no_pixels, r"DICOM file has no pixel data"),
    "dicom_truncated": (_bad_dicom_truncated, r"cannot decode the DICOM pixel data"),
    "dicom_huge": (_bad_dicom_huge, r"10000x10000 \(100,000,000 pixels\), over the [\d,]+ pixel limit"),
    "nifti_4d": (_bad_nifti_4d, r"NIfTI is 4-D \(32, 32, 4, 3\)"),
    "nifti_truncated": (_bad_nifti_truncated, r"cannot read the NIfTI voxel data"),
    "nifti_garbage": (_bad_nifti_garbage, r"not a readable NIfTI file"),
    "over_upload_cap": (_bad_over_cap, r"over the 100 MB upload limit"),
}


# -- plain images --------------------------------------------------------------------------
def test_plain_image_is_one_slice_without_spacing(tmp_path):
    path = phantom_file(tmp_path / "slice.jpg", 2)
    scan = read_scan(path)
    assert scan.kind == "image" and scan.n_slices == 1 and not scan.is_volume
    assert scan.pixel_spacing_mm is None and scan.voxel_volume_mm3 is None
    np.testing.assert_array_equal(scan.rgb(0), decode_image(path))
    with pytest.raises(DataError, match="slice 1 is out of range"):
        scan.rgb(1)


def test_16_bit_png_is_windowed_not_rejected(tmp_path):
    g = phantom()
    path = tmp_path / "sixteen.png"
    Image.fromarray(g.astype(np.uint16) * 200 + 1000).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = read_scan(path).rgb(0)
    assert rgb.dtype == np.uint8 and rgb.shape == g.shape + (3,)
    assert np.abs(rgb[..., 0].astype(int) - window(g).astype(int)).max() <= 1


def test_rgba_png_is_composited_not_rejected(tmp_path):
    rgb = np.dstack([phantom(1), phantom(2), phantom(3)])
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, : rgb.shape[1] // 2] = 0  # left half transparent -> black
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    out = read_scan(path).rgb(0)
    np.testing.assert_array_equal(out[:, rgb.shape[1] // 2:], rgb[:, rgb.shape[1] // 2:])
    assert not out[:, : rgb.shape[1] // 2].any()


# -- DICOM ---------------------------------------------------------------------------------
def test_dicom_slice_with_rescale_and_pixel_spacing(tmp_path):
    g = phantom()
    stored = g.astype(np.uint16) * 3 + 50          # modality value = 0.5 * stored - 20 = 1.5 g + 5
    path = write_dicom(tmp_path / "slice.dcm", stored, spacing=(0.6, 0.7), slope=0.5, intercept=-20)
    scan = read_scan(path)
    assert scan.kind == "dicom" and scan.n_slices == 1
    assert scan.pixel_spacing_mm == (0.6, 0.7) and scan.slice_thickness_mm is None
    np.testing.assert_array_equal(scan.slices[0], window(g))
    assert scan.rgb(0).shape == g.shape + (3,)
    assert "pixel spacing 0.6 x 0.7 mm" in scan.describe()


def test_dicom_without_extension_or_preamble_is_still_read(tmp_path):
    g = phantom(0, (96, 80))
    plain = write_dicom(tmp_path / "IM0001", g)
    assert read_scan(plain).kind == "dicom"
    bare = write_dicom(tmp_path / "bare.dcm", g, preamble=False)
    assert bare.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_scan(bare).slices[0], window(g))


def test_dicom_monochrome1_is_inverted(tmp_path):
    g = phantom(0, (96, 80))
    scan = read_scan(write_dicom(tmp_path / "m1.dcm", g, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(scan.slices[0], 255 - window(g))


def test_multi_frame_dicom_is_a_volume_with_slice_spacing(tmp_path):
    frames = np.stack(nifti_display_slices(3, (80, 64)))
    scan = read_scan(write_dicom(tmp_path / "multi.dcm", frames, spacing=(0.5, 0.5), thickness=3.0, between=3.5))
    assert scan.n_slices == 3 and scan.is_volume and scan.shape == (64, 80)
    assert scan.slice_thickness_mm == 3.5                     # SpacingBetweenSlices wins over SliceThickness
    assert scan.voxel_volume_mm3 == pytest.approx(0.5 * 0.5 * 3.5)
    np.testing.assert_array_equal(np.stack(scan.slices), window(frames))  # one window for all frames


def test_enhanced_dicom_spacing_from_functional_groups(tmp_path):
    frames = np.stack(nifti_display_slices(2, (64, 64)))
    scan = read_scan(write_dicom(tmp_path / "enh.dcm", frames, spacing=(0.8, 0.9), thickness=2.0, enhanced=True))
    assert scan.pixel_spacing_mm == (0.8, 0.9) and scan.slice_thickness_mm == 2.0


def test_dicom_without_spacing_says_so(tmp_path):
    scan = read_scan(write_dicom(tmp_path / "nospacing.dcm", phantom(0, (64, 64)), spacing=None))
    assert scan.pixel_spacing_mm is None and any("PixelSpacing" in n for n in scan.notes)


# -- NIfTI ---------------------------------------------------------------------------------
@pytest.mark.parametrize("storage", ["ras", "lps", "xzy"])
def test_nifti_volume_slices_orientation_and_spacing(tmp_path, storage):
    shown = nifti_display_slices(4, (160, 128))  # 128 rows x 160 cols each
    path = write_nifti(tmp_path / f"vol_{storage}.nii.gz", shown, zooms=(0.9, 0.8, 2.5), storage=storage)
    scan = read_scan(path)
    assert scan.kind == "nifti" and scan.n_slices == 4 and scan.shape == (128, 160)
    assert scan.pixel_spacing_mm == (0.8, 0.9)      # rows run along y (0.8 mm), columns along x (0.9 mm)
    assert scan.slice_thickness_mm == 2.5
    assert scan.voxel_volume_mm3 == pytest.approx(0.9 * 0.8 * 2.5)
    np.testing.assert_array_equal(np.stack(scan.slices), window(np.stack(shown)))


def test_uncompressed_and_2d_nifti(tmp_path):
    shown = nifti_display_slices(2, (96, 80))
    assert read_scan(write_nifti(tmp_path / "vol.nii", shown)).n_slices == 2
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(to_ras_volume(shown[:1])[..., 0].astype(np.int16), np.diag([0.5, 0.5, 1, 1])), str(flat))
    scan = read_scan(flat)
    assert scan.n_slices == 1 and scan.pixel_spacing_mm == (0.5, 0.5) and scan.slice_thickness_mm is None
    np.testing.assert_array_equal(scan.slices[0], window(shown[0]))


def test_nifti_with_a_trailing_axis_of_one_is_a_3d_volume(tmp_path):
    data = to_ras_volume(nifti_display_slices(3, (64, 48)))[..., None].astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path := tmp_path / "v.nii.gz"))
    assert read_scan(path).n_slices == 3


def test_volume_and_slice_caps(tmp_path, monkeypatch):
    path = write_nifti(tmp_path / "vol.nii.gz", nifti_display_slices(4, (64, 48)))
    monkeypatch.setattr(medical_io, "MAX_VOLUME_VOXELS", 64 * 48 * 3)
    with pytest.raises(DataError, match="64x48x4, over the 9,216 voxel limit"):
        read_scan(path)
    monkeypatch.setattr(medical_io, "MAX_SLICES", 2)
    with pytest.raises(DataError, match="4 slices, over the 2 slice limit"):
        read_scan(path)


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_a_clear_data_error(tmp_path, name):
    build, message = BAD_INPUTS[name]
    with pytest.raises(DataError, match=message) as info:
        read_scan(build(tmp_path))
    assert info.value.reason and "Traceback" not in info.value.reason


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_scan(tmp_path / "nope.png")
    with pytest.raises(DataError, match="no file given"):
        read_scan(None)
