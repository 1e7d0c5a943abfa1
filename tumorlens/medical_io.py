"""Read what a user uploads: a plain image, a DICOM file or a NIfTI volume, as 2-D slices.

`read_scan(path)` -> `Scan`: the slices (`Scan.rgb(i)` gives the model's H x W x 3 uint8 input), the
in-plane pixel spacing in mm when the file carries it and, for volumes, the slice spacing.

- Plain images (PNG, JPEG, TIFF, BMP): `tumorlens.decode` (16-bit and float data min-max windowed,
  RGBA composited on black, multi-page files refused); no spacing.
- DICOM (pydicom): modality LUT applied, MONOCHROME1 inverted, one window over all frames; spacing
  from PixelSpacing (or PixelMeasuresSequence); a multi-frame file is a volume (slice spacing from
  SpacingBetweenSlices, else SliceThickness); a file without pixel data is an error; `Scan.affine` when
  the headers say where the pixels lie (`dicom_geometry.file_affine`).
- NIfTI (nibabel): 3-D volumes and 2-D images; 4-D is an error. Reoriented to the closest RAS+ axes
  and cut along the last axis (axial for the usual head scans, shown the radiological way).
- A DICOM series (a folder or a `.zip` of slice files; `path#<SeriesInstanceUID>`): `dicom_series`.

Every failure raises `DataError` with a reason a user can act on, with no server folder in it. Limits:
`MAX_UPLOAD_BYTES` per upload, `decode.MIN_IMAGE_SIDE` a side, `MAX_SLICES` slices; what else a request
may cost is a `tumorlens.request_budget.RequestBudget`, checked from the header (`read_header`) before
any pixel is decoded. Non-finite values never set the window (`decode.window`); `Scan.nonfinite` counts them."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dicom_geometry import dicom_pixel_spacing, dicom_slice_spacing, file_affine, positive  # noqa: F401 - re-exported
from .errors import DataError, public_message
from .request_budget import (APP_BUDGET, CLI_BUDGET, RequestBudget, ScanHeader,  # noqa: F401 - re-exported
                             cli_command)
from .decode import (IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE, array_to_rgb, decode_image_counted, mode_bytes,
                     window)

MAX_UPLOAD_BYTES = 100 * 1024 * 1024
MAX_SLICES = 1024
MAX_VOLUME_VOXELS = 2 ** 26          # 512 x 512 x 256; the float32 working copy is then 256 MB
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SCAN_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES
KINDS = ("image", "dicom", "nifti")

@dataclass
class Scan:
    """One upload as 2-D slices, with what its header says about the size of a pixel."""

    kind: str                                          # 'image' | 'dicom' | 'nifti'
    slices: list[np.ndarray]                           # H x W or H x W x 3, uint8
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, col): mm per pixel down and across
    slice_thickness_mm: float | None = None            # distance between slice centres (volumes)
    source: str | None = None
    notes: list[str] = field(default_factory=list)
    nonfinite: int = 0                                 # NaN / +-inf values: left out of the window
    datasets: list | None = field(default=None, repr=False, compare=False)  # a series: slice headers, no pixels
    # DICOM whose headers place it: voxel (col, row, slice) -> RAS+ mm, for a NIfTI mask (dicom_geometry)
    affine: np.ndarray | None = field(default=None, repr=False, compare=False)
    files: tuple[str, ...] | None = None               # a multi-file upload: its files (source: their folder)

    @property
    def n_slices(self) -> int:
        return len(self.slices)

    @property
    def is_volume(self) -> bool:
        return self.n_slices > 1

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.slices[0].shape[:2])

    @property
    def voxel_volume_mm3(self) -> float | None:
        """mm³ per voxel, when both the pixel spacing and the slice spacing are known."""
        if self.pixel_spacing_mm is None or self.slice_thickness_mm is None:
            return None
        return float(self.pixel_spacing_mm[0]) * float(self.pixel_spacing_mm[1]) * float(self.slice_thickness_mm)

    def rgb(self, index: int = 0) -> np.ndarray:
        """Slice `index` as the H x W x 3 uint8 image the models take."""
        if not 0 <= index < self.n_slices:
            raise DataError(self.source, f"slice {index} is out of range: this scan has {self.n_slices} "
                                         f"slice{'s' if self.n_slices != 1 else ''} (0-{self.n_slices - 1})")
        return array_to_rgb(self.slices[index], self.source)

    def describe(self) -> str:
        h, w = self.shape
        what = {"image": "Image", "dicom": "DICOM", "nifti": "NIfTI"}[self.kind]
        text = f"{what}, {w}x{h} px"
        if self.is_volume:
            text += f", {self.n_slices} slices"
        if self.pixel_spacing_mm:
            text += f", pixel spacing {self.pixel_spacing_mm[0]:.4g} x {self.pixel_spacing_mm[1]:.4g} mm"
        if self.is_volume and self.slice_thickness_mm:
            text += f", slice spacing {self.slice_thickness_mm:.4g} mm"
        return text

    def nonfinite_note(self) -> str | None:
        """What the answer says about NaN / inf values, when the file had any."""
        if not self.nonfinite:
            return None
        n = self.nonfinite
        return (f"{n:,} pixel{'s' if n != 1 else ''} held no number (NaN or infinity): left out of the "
                "intensity window and filled from their nearest neighbours.")


# -- entry point ---------------------------------------------------------------------------
def detect_kind(path: Path) -> str:
    """'dicom', 'nifti' or 'image', from the name and, failing that, the first bytes."""
    name = path.name.lower()
    if name.endswith(".zip") or path.is_dir():
        return "dicom"  # a DICOM series (tumorlens.dicom_series)
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    with open(path, "rb") as f:
        head = f.read(544)
    if head[128:132] == b"DICM":
        return "dicom"
    if _is_nifti_header(head):
        return "nifti"
    return "image"


def _is_nifti_header(head: bytes) -> bool:
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return True
    return len(head) >= 540 and head[4:8] == b"n+2\x00"


def read_header(path: str | Path) -> ScanHeader | None:
    """The file's size from its header alone (PIL's size and mode, the DICOM header without its
    pixel data, the NIfTI header); None when the header cannot be read (the reader then explains)."""
    path = Path(path)
    kind = detect_kind(path)
    try:
        if kind == "image":
            from PIL import Image
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as img:
                    return ScanHeader("image", img.width, img.height, 1, mode_bytes(img.mode), img.mode)
        if kind == "dicom":
            import pydicom
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
            rows, cols = int(ds.Rows), int(ds.Columns)
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            samples = int(ds.get("SamplesPerPixel", 1) or 1)
            # one value per pixel becomes float32 (the modality LUT); RGB stays at its stored size
            per = 4 if samples == 1 else samples * max(1, int(ds.get("BitsAllocated", 8) or 8) // 8)
            return ScanHeader("dicom", cols, rows, frames, per)
        img = _load_nifti(path)
        rows, cols, n, _, _ = _nifti_geometry(img)
        return ScanHeader("nifti", cols, rows, n, 4)  # read as float32
    except DataError:
        raise
    except Exception:  # noqa: BLE001 - an unreadable header: the reader gives the full reason
        return None


def check_upload_size(path: Path, max_bytes: int = MAX_UPLOAD_BYTES) -> int:
    """The file's size in bytes; DataError when it is empty or over `max_bytes`."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(path, "file is empty (0 bytes)")
    if size > max_bytes:
        raise DataError(path, f"file is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB upload limit")
    return size


def read_scan(path: str | Path | list, *, max_bytes: int = MAX_UPLOAD_BYTES, budget: RequestBudget = CLI_BUDGET,
              series_uid: str | None = None) -> Scan:
    """An uploaded file (or a DICOM series: a folder, a .zip, or a list of its files) -> `Scan`. Raises
    DataError with a clear reason on anything unusable, and BudgetError (a DataError), before decoding, on
    a file over `budget` (the web app passes `APP_BUDGET`; the default is the batch tool's `CLI_BUDGET`)."""
    from .dicom_series import is_series_input, read_files, read_series, split_selection  # they import this module
    if isinstance(path, (list, tuple)):  # a multi-file upload: one file is just that file
        if len(path) > 1:
            return read_files(path, series_uid=series_uid, max_bytes=max_bytes, budget=budget)
        path = path[0] if path else None
    if path is None:
        raise DataError(None, "no file given")
    path, series_uid = split_selection(path, series_uid)
    if series_uid is not None or is_series_input(path):
        return read_series(path, series_uid=series_uid, max_bytes=max_bytes, budget=budget)
    if not path.is_file():
        raise DataError(path, "file not found")
    check_upload_size(path, max_bytes)
    kind = detect_kind(path)
    header = read_header(path)
    if header is not None:
        budget.check(header, str(path))
    if kind == "dicom":
        return read_dicom(path)
    if kind == "nifti":
        return read_nifti(path)
    rgb, nonfinite = decode_image_counted(path, max_pixels=budget.max_image_pixels, max_bytes=budget.max_decoded_bytes)
    scan = Scan("image", [rgb], None, None, str(path), nonfinite=nonfinite)
    return _with_nonfinite_note(scan)


def _with_nonfinite_note(scan: Scan) -> Scan:
    note = scan.nonfinite_note()
    if note:
        scan.notes.append(note)
    return scan


def _reason(exc: Exception, path: Path) -> str:
    """An exception's text as a reason: its class and message, no server folder in it."""
    return public_message(f"{exc.__class__.__name__}: {exc}", path)


# -- shared checks -------------------------------------------------------------------------
def _check_geometry(path: Path, rows: int, cols: int, n_slices: int) -> None:
    if rows * cols > MAX_IMAGE_PIXELS:
        raise DataError(path, f"slices are {cols}x{rows}, over the {MAX_IMAGE_PIXELS:,} pixel limit")
    if min(rows, cols) < MIN_IMAGE_SIDE:
        raise DataError(path, f"slices are {cols}x{rows}; at least {MIN_IMAGE_SIDE} px a side is needed")
    if n_slices < 1:
        raise DataError(path, "the file holds no slices")
    if n_slices > MAX_SLICES:
        raise DataError(path, f"{n_slices} slices, over the {MAX_SLICES} slice limit")
    if rows * cols * n_slices > MAX_VOLUME_VOXELS:
        raise DataError(path, f"volume is {cols}x{rows}x{n_slices}, over the {MAX_VOLUME_VOXELS:,} voxel limit")


# -- DICOM ---------------------------------------------------------------------------------
def read_dicom(path: Path) -> Scan:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        try:
            ds = pydicom.dcmread(str(path))
        except InvalidDicomError:
            # no 128-byte preamble: still DICOM if it parses into the elements an image has
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(str(path), force=True)
                looks_dicom = any(key in ds for key in ("SOPClassUID", "Modality", "Rows"))
            if not looks_dicom:
                raise DataError(path, "not a DICOM file (no DICOM header found)")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on garbage
        raise DataError(path, f"not a readable DICOM file ({_reason(exc, path)})") from exc

    if not any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DataError(path, "DICOM file has no pixel data (a report, a DICOMDIR or a header without an image)")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DataError(path, f"DICOM header lacks a usable image size ({exc})") from exc
    if samples not in (1, 3):
        raise DataError(path, f"DICOM has {samples} samples per pixel; only grayscale and RGB are supported")
    _check_geometry(path, rows, cols, frames)

    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - missing codec, truncated data, bad header all land here
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        hint = f" (transfer syntax {syntax.name})" if syntax is not None else ""
        raise DataError(path, f"cannot decode the DICOM pixel data{hint}: {_reason(exc, path)}") from exc

    arr = np.asarray(arr)
    if samples == 1:
        try:
            arr = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
        except Exception as exc:  # noqa: BLE001
            raise DataError(path, f"cannot apply the DICOM rescale slope/intercept ({_reason(exc, path)})") from exc
        if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            finite = np.isfinite(arr)  # NaN/inf stay out of the window (and keep their sign's meaning)
            top = float(arr[finite].max()) if finite.any() else 0.0
            arr = top - arr  # MONOCHROME1: high values are dark
    # one frame: (rows, cols[, 3]); several: (frames, rows, cols[, 3])
    stack = arr[None] if frames == 1 else arr
    expected = (frames, rows, cols) + ((3,) if samples == 3 else ())
    if stack.shape != expected:
        raise DataError(path, f"DICOM pixel data has shape {arr.shape}, the header says {expected}")
    del arr
    stack, nonfinite = window(stack)
    spacing = dicom_pixel_spacing(ds)
    notes = [] if spacing else ["no PixelSpacing in the DICOM header"]
    return _with_nonfinite_note(Scan("dicom", list(stack), spacing, dicom_slice_spacing(ds) if frames > 1 else None,
                                     str(path), notes, nonfinite, affine=file_affine(ds, frames)))


# -- NIfTI ---------------------------------------------------------------------------------
def _load_nifti(path: Path):
    """The NIfTI image object (header read, data not yet)."""
    import nibabel as nib
    try:
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            return nib.load(str(path))
        data = path.read_bytes()  # a NIfTI-1/2 file without its extension
        return (nib.Nifti2Image if data[4:8] == b"n+2\x00" else nib.Nifti1Image).from_bytes(data)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds on garbage
        raise DataError(path, f"not a readable NIfTI file ({_reason(exc, path)})") from exc


def _nifti_geometry(img, path: Path | None = None):
    """(rows, cols, slices, shape3, orientation or None) as read_nifti cuts the volume; DataError on
    a shape or data type it cannot show."""
    from nibabel import orientations

    try:
        shape = tuple(int(s) for s in img.shape)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001
        raise DataError(path, f"not a readable NIfTI file ({_reason(exc, path)})") from exc
    if len(shape) > 3 and any(s != 1 for s in shape[3:]):
        raise DataError(path, f"NIfTI is {len(shape)}-D {shape} (a time series or several volumes); "
                              "give one 3-D volume or a 2-D slice")
    if len(shape) < 2:
        raise DataError(path, f"NIfTI has shape {shape}; a 2-D slice or a 3-D volume is needed")
    shape3 = (shape + (1,))[:3]
    dtype = img.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise DataError(path, f"NIfTI data type {dtype} is not supported (a scalar grayscale volume is needed)")
    # Slices are cut along the RAS+ superior axis, so rows x cols = A-P x R-L of the input grid.
    ornt = None
    try:
        ornt = orientations.io_orientation(affine)
        if not np.isfinite(ornt).all():
            ornt = None
    except Exception:  # noqa: BLE001 - a degenerate affine: keep the stored axes
        ornt = None
    out_axes = [int(a) for a in ornt[:, 0]] if ornt is not None else [0, 1, 2]
    x_len, y_len, z_len = (shape3[out_axes.index(k)] for k in range(3))
    return y_len, x_len, z_len, shape3, ornt


def read_nifti(path: Path) -> Scan:
    from nibabel import orientations

    img = _load_nifti(path)
    try:
        zooms = tuple(float(z) for z in img.header.get_zooms())
    except Exception as exc:  # noqa: BLE001
        raise DataError(path, f"not a readable NIfTI file ({_reason(exc, path)})") from exc
    y_len, x_len, z_len, shape3, ornt = _nifti_geometry(img, path)
    out_axes = [int(a) for a in ornt[:, 0]] if ornt is not None else [0, 1, 2]
    _check_geometry(path, y_len, x_len, z_len)

    try:
        vol = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape3)
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise DataError(path, f"cannot read the NIfTI voxel data ({_reason(exc, path)})") from exc
    if ornt is not None:
        vol = orientations.apply_orientation(vol, ornt)
    # header zooms are float32: 0.8 reads 0.800000011920929, so keep 6 significant digits
    zooms3 = tuple(float(f"{z:.6g}") for z in (tuple(zooms) + (1.0, 1.0, 1.0))[:3])
    ras_zooms = [1.0, 1.0, 1.0]
    for i, axis in enumerate(out_axes):
        ras_zooms[axis] = zooms3[i]
    vol8, nonfinite = window(vol)
    del vol
    # (x, y, z) RAS -> per z: rows = anterior at the top, cols = patient's right on the left
    slices = [np.ascontiguousarray(vol8[::-1, ::-1, k].T) for k in range(vol8.shape[2])]
    spacing = positive((ras_zooms[1], ras_zooms[0]), 2)
    thickness = positive([ras_zooms[2]], 1)
    notes = [] if spacing else ["no usable voxel size in the NIfTI header"]
    return _with_nonfinite_note(Scan("nifti", slices, spacing, thickness[0] if thickness and len(slices) > 1 else None,
                                     str(path), notes, nonfinite))


__all__ = ["Scan", "ScanHeader", "RequestBudget", "read_scan", "read_header", "read_dicom", "read_nifti", "detect_kind",
           "dicom_pixel_spacing", "cli_command", "APP_BUDGET", "CLI_BUDGET", "MAX_UPLOAD_BYTES", "MAX_SLICES",
           "MAX_VOLUME_VOXELS", "SCAN_SUFFIXES"]
