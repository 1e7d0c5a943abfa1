"""A DICOM series as people have it (a folder of slice files, or a `.zip` of one) read as one volume `Scan`.

`medical_io.read_scan` hands a folder or a `.zip` here (`read_series`); the Scan it returns is a
volume like a multi-frame DICOM, so the app's slice slider and whole-volume mode work unchanged.

- Which files: every file whose bytes say DICOM (the "DICM" preamble, else a header pydicom can parse:
  names need no suffix), in sub-folders too. Other files are left out with a note; DICOM files with no
  image (structured reports, presentation states, a DICOMDIR: no PixelData) are left out with a note,
  and a DataError says so when nothing with an image remains.
- Which series: slices are grouped by SeriesInstanceUID and the series with the most slices is read;
  the notes list the others (SeriesDescription, SeriesInstanceUID, slice count). To read another one,
  give `folder#<SeriesInstanceUID>` or `study.zip#<SeriesInstanceUID>` as the path (also in
  `tumorlens predict`), or `read_scan(path, series_uid=...)`.
- Order and geometry from the headers alone: slices sorted by ImagePositionPatient projected on the
  slice normal (the cross product of ImageOrientationPatient's row and column directions), never by
  file name or InstanceNumber; the slice spacing is the step between those positions, the pixel spacing
  PixelSpacing. Slices that disagree on size, orientation or pixel spacing (a mixed series), share a
  position, or are unevenly spaced (a missing slice: the gap is named) are a DataError.
- `Scan.datasets` keeps every slice's header (pixel data dropped) in slice order, so a DICOM
  Segmentation references each source instance (`scan_export.write_dicom_seg`); `Scan.affine` maps
  voxel (column, row, slice) to RAS+ mm, for the NIfTI mask (`scan_export.write_nifti_mask`).
- Which files are listed, and the checks on zips (traversal, links, encryption, member caps, zip
  bombs) before any member is inflated: `upload_files`. Several files of one upload (the app's
  multi-file upload) read as a series too: `read_files`, or `read_scan([path, ...])`.
"""

from __future__ import annotations

import io
import os
import re
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .decode import IMAGE_SUFFIXES
from .dicom_geometry import affine, dicom_pixel_spacing, vector
from .errors import DataError
from .medical_io import (CLI_BUDGET, MAX_UPLOAD_BYTES, NIFTI_SUFFIXES, RequestBudget, Scan, ScanHeader,
                         _check_geometry, _reason, _with_nonfinite_note, window)
from .upload_files import (ZIP_SUFFIX, Listing, Member, files_listing, is_zip_name, looks_dicom, open_listing,
                           walk)

SERIES_SEPARATOR = "#"                    # path#<SeriesInstanceUID> picks a series
SPACING_TOLERANCE = (0.02, 0.05)          # mm, fraction of the step: a gap beyond both is uneven spacing
PIXEL_KEYS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
NOT_DICOM_SUFFIXES = IMAGE_SUFFIXES + NIFTI_SUFFIXES + (ZIP_SUFFIX, ".txt", ".md", ".json", ".xml", ".html", ".htm",
                                                       ".pdf", ".csv", ".ini", ".log", ".exe", ".dll", ".inf")
OWN_SCAN_SUFFIXES = IMAGE_SUFFIXES + NIFTI_SUFFIXES + (ZIP_SUFFIX,)  # never one slice of a series
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


# -- what read_scan asks ---------------------------------------------------------------------
def is_series_input(path: Path) -> bool:
    """A folder or a .zip: read as a DICOM series."""
    return path.is_dir() or is_zip_name(path)


def split_selection(path: str | Path, series_uid: str | None = None) -> tuple[Path, str | None]:
    """(path, series UID) from `path#<SeriesInstanceUID>`; a path that exists as given is never split."""
    text = str(path)
    if series_uid is None and SERIES_SEPARATOR in text and not Path(text).exists():
        base, uid = text.rsplit(SERIES_SEPARATOR, 1)
        if Path(base).exists():
            if not _UID.fullmatch(uid):
                raise DataError(base, f"'{uid}' after '#' is not a SeriesInstanceUID (digits and dots)")
            return Path(base), uid
    return Path(path), series_uid


def is_series_folder(folder: Path) -> bool:
    """A folder `tumorlens predict` reads as DICOM series, not file by file: it holds DICOM files (a
    .dcm/.dicom name or the DICM preamble) and no plain image or NIfTI file."""
    found = False
    for path in walk(folder, None):
        name = path.name.lower()
        if name.endswith(IMAGE_SUFFIXES + NIFTI_SUFFIXES):
            return False
        found = found or looks_dicom(path)
    return found


def series_folders(folder: Path) -> list[Path]:
    """The folders under `folder` (itself included) that directly hold DICOM files, sorted: one
    series input each for `tumorlens predict` (a study exported as one folder per series)."""
    return sorted({p.parent for p in walk(folder, None) if looks_dicom(p)})


# -- reading -----------------------------------------------------------------------------------
@dataclass
class _Slice:
    member: Member
    ds: object                  # the header, pixel data dropped


def _parse(path: Path, member: Member, data: bytes):
    """The member's dataset, or None when it is not DICOM."""
    import pydicom

    preamble = data[128:132] == b"DICM"
    if not preamble and len(data) < 132:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=not preamble)
            if not preamble and not any(key in ds for key in ("SOPClassUID", "Modality", "Rows")):
                return None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on garbage
        if not preamble:
            return None
        raise DataError(path, f"'{member.name}' is not a readable DICOM file ({_reason(exc, path)})") from exc
    return ds


def _label(ds) -> str:
    description = " ".join(str(ds.get("SeriesDescription", "") or "").split()) or "no description"
    return f"'{description}' ({ds.get('SeriesInstanceUID', '') or 'no SeriesInstanceUID'})"


def _sop_name(ds) -> str:
    uid = ds.get("SOPClassUID")
    return getattr(uid, "name", None) or str(uid or "no SOP class")


def _collect(path: Path, listing: Listing):
    """({series UID: [_Slice]}, notes) from every member; DataError when no DICOM image is there."""
    series: dict[str, list[_Slice]] = {}
    non_image, seen, copies, other = Counter(), set(), 0, listing.skipped
    for member in listing.members:
        if member.name.lower().endswith(NOT_DICOM_SUFFIXES):
            other += 1
            continue
        try:
            data = member.read()
        except (OSError, zipfile.BadZipFile, NotImplementedError, EOFError, RuntimeError) as exc:
            raise DataError(path, f"cannot read '{member.name}' ({_reason(exc, path)})") from exc
        ds = _parse(path, member, data)
        del data
        if ds is None:
            other += 1
            continue
        if not any(key in ds for key in PIXEL_KEYS):
            non_image[_sop_name(ds)] += 1
            continue
        uid = ds.get("SOPInstanceUID")
        if uid and uid in seen:  # the same instance twice (a copy in another folder): read once
            copies += 1
            continue
        seen.add(uid)
        for key in PIXEL_KEYS:
            if key in ds:
                del ds[key]
        series.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), []).append(_Slice(member, ds))
    notes = []
    if non_image:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(non_image.items(), key=lambda kv: (-kv[1], kv[0])))
        notes.append(f"left out DICOM files without an image (no PixelData): {kinds}")
    if copies:
        notes.append(f"read once {copies} file{'s' if copies != 1 else ''} repeating an instance (same SOPInstanceUID)")
    if other:
        notes.append(f"left out {other} file{'s' if other != 1 else ''} that {'are' if other != 1 else 'is'} not DICOM")
    if not series:
        what = listing.what
        if non_image:
            raise DataError(path, f"{what} holds no DICOM image: only DICOM files without pixel data ({kinds}), "
                                  "such as reports or presentation states")
        raise DataError(path, f"{what} holds no DICOM file" + (f" ({other} other files)" if other else ""))
    return series, notes


def _choose(path: Path, series: dict[str, list[_Slice]], uid: str | None, how: str) -> tuple[str, list[str]]:
    """(the series to read, a note listing the others and `how` to pick one)."""
    ranked = sorted(series, key=lambda s: (-len(series[s]), s))
    listing = [f"{_label(series[s][0].ds)}, {len(series[s])} slice{'s' if len(series[s]) != 1 else ''}"
               for s in ranked]
    if uid is not None:
        if uid not in series:
            raise DataError(path, f"no series has SeriesInstanceUID {uid}; here: " + "; ".join(listing))
        chosen = uid
    else:
        chosen = ranked[0]
    notes = []
    if len(series) > 1:
        others = [text for s, text in zip(ranked, listing) if s != chosen]
        notes.append(f"{len(series)} series here; read {listing[ranked.index(chosen)]}"
                     f"{' (the most slices)' if uid is None else ''}. The others: " + "; ".join(others) + f". {how}")
    return chosen, notes


def _count(values) -> str:
    return ", ".join(f"{v}: {n} file{'s' if n != 1 else ''}" for v, n in Counter(values).most_common())


def _consistent(path: Path, slices: list[_Slice]) -> None:
    """DataError when the slices of one series disagree on size, orientation or pixel spacing."""
    def differ(what, values):
        raise DataError(path, f"mixed series: its slices differ in {what} ({_count(values)}); a series must be one "
                              "stack of equal slices: put each stack in its own folder or zip")

    sizes = [f"{s.ds.get('Columns')}x{s.ds.get('Rows')}" for s in slices]
    if len(set(sizes)) > 1:
        differ("size", sizes)
    samples = [int(s.ds.get("SamplesPerPixel", 1) or 1) for s in slices]
    if len(set(samples)) > 1:
        differ("samples per pixel", samples)
    frames = [int(s.ds.get("NumberOfFrames", 1) or 1) for s in slices]
    if max(frames) > 1:
        raise DataError(path, f"{sum(f > 1 for f in frames)} of its files are multi-frame (a whole volume each); "
                              "give such a file on its own")
    if len(slices) == 1:
        return
    orientations = [vector(s.ds, "ImageOrientationPatient", 6) for s in slices]
    positions = [vector(s.ds, "ImagePositionPatient", 3) for s in slices]
    if any(o is None for o in orientations) or any(p is None for p in positions):
        raise DataError(path, "slices without ImagePositionPatient/ImageOrientationPatient: their order along "
                              "the slice normal cannot be known (file names and instance numbers do not say it)")
    first = orientations[0]
    if any(not np.allclose(o, first, atol=1e-3) for o in orientations):
        differ("orientation", [" ".join(f"{v:.3g}" for v in o) for o in orientations])
    spacings = [dicom_pixel_spacing(s.ds) or (0.0, 0.0) for s in slices]
    if not np.allclose(spacings, spacings[0], atol=1e-3):
        differ("pixel spacing", [" x ".join(f"{v:g}" for v in sp) if any(sp) else "none" for sp in spacings])


def _order(path: Path, slices: list[_Slice]) -> tuple[list[_Slice], float | None, np.ndarray | None, list[str]]:
    """(slices sorted along the normal, their step in mm, the step vector in LPS mm, notes)."""
    if len(slices) == 1:
        return slices, None, None, []
    iop = vector(slices[0].ds, "ImageOrientationPatient", 6)
    normal = np.cross(iop[:3], iop[3:])
    if not np.linalg.norm(normal) > 0.5:
        raise DataError(path, "ImageOrientationPatient's row and column directions are not orthogonal unit vectors")
    normal /= np.linalg.norm(normal)
    ipp = np.array([vector(s.ds, "ImagePositionPatient", 3) for s in slices])
    along = ipp @ normal
    order = np.argsort(along, kind="stable")
    slices, ipp, along = [slices[i] for i in order], ipp[order], along[order]
    gaps = np.diff(along)
    if gaps.min() < 1e-3:
        i = int(np.argmin(gaps))
        raise DataError(path, f"two slices ('{slices[i].member.name}', '{slices[i + 1].member.name}') lie at the same "
                              f"position ({along[i]:.2f} mm along the slice normal): the series repeats slices (echoes, "
                              "time points or a repeated acquisition); put each stack in its own folder or zip")
    step = float(np.median(gaps))
    bad = np.abs(gaps - step) > max(SPACING_TOLERANCE[0], SPACING_TOLERANCE[1] * step)
    if bad.any():
        i = int(np.argmax(np.abs(gaps - step)))
        raise DataError(path, f"slices are unevenly spaced along the slice normal: {step:.4g} mm apart, but a "
                              f"{gaps[i]:.4g} mm gap between slice {i} and {i + 1} of {len(slices)} (at {along[i]:.2f} "
                              f"and {along[i + 1]:.2f} mm; '{slices[i].member.name}', '{slices[i + 1].member.name}')"
                              f"{': a slice is missing' if gaps[i] > 1.5 * step else ''}; "
                              f"{int(bad.sum())} uneven gap{'s' if bad.sum() != 1 else ''} in all")
    step_vector = (ipp[-1] - ipp[0]) / (len(slices) - 1)
    notes = []
    if np.linalg.norm(step_vector - step * normal) > 0.01 * step:
        notes.append("the slices are sheared (gantry tilt): their positions do not follow the slice normal; "
                     "masks written as NIfTI carry the shear in their affine")
    return slices, step, step_vector, notes


def _affine(ds, spacing, step: np.ndarray | None) -> np.ndarray | None:
    """RAS+ mm of voxel (column, row, slice) from the first slice's header and the step between slices."""
    iop, ipp = vector(ds, "ImageOrientationPatient", 6), vector(ds, "ImagePositionPatient", 3)
    if iop is None or ipp is None or spacing is None:
        return None
    if step is None:  # one slice: its thickness along the normal
        step = np.cross(iop[:3], iop[3:]) * float(ds.get("SliceThickness", 1) or 1)
    return affine(iop, ipp, spacing, step)


def _decode(path: Path, slices: list[_Slice], rows: int, cols: int, samples: int) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    stack = None
    for k, s in enumerate(slices):
        name = s.member.name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(io.BytesIO(s.member.read()), force=True)
                arr = np.asarray(ds.pixel_array)
        except Exception as exc:  # noqa: BLE001 - missing codec, truncated data, bad header
            raise DataError(path, f"cannot decode the pixel data of '{name}': {_reason(exc, path)}") from exc
        if samples == 1:
            try:
                arr = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
            except Exception as exc:  # noqa: BLE001
                raise DataError(path, f"cannot apply the rescale slope/intercept of '{name}' "
                                      f"({_reason(exc, path)})") from exc
        expected = (rows, cols) + ((3,) if samples == 3 else ())
        if arr.shape != expected:
            raise DataError(path, f"'{name}' has pixel data of shape {arr.shape}, its header says {expected}")
        if stack is None:
            stack = np.empty((len(slices),) + expected, np.float32 if samples == 1 else arr.dtype)
        stack[k] = arr
    if samples == 1 and str(slices[0].ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        finite = np.isfinite(stack)  # high values are dark: one inversion for the whole stack
        top = float(stack[finite].max()) if finite.any() else 0.0
        np.subtract(top, stack, out=stack)
    return stack


def read_series(path: str | Path, *, series_uid: str | None = None, max_bytes: int = MAX_UPLOAD_BYTES,
                budget: RequestBudget = CLI_BUDGET) -> Scan:
    """A folder or a .zip of DICOM slice files -> one volume `Scan` (see the module docstring)."""
    path = Path(path)
    how = f"To read another, add '#<SeriesInstanceUID>' to the path ({path.name}#UID)."
    with open_listing(path, max_bytes) as listing:
        return _read(path, listing, series_uid, budget, how)


def read_files(paths: Sequence[str | Path], *, series_uid: str | None = None, max_bytes: int = MAX_UPLOAD_BYTES,
               budget: RequestBudget = CLI_BUDGET) -> Scan:
    """Several files of one upload (a DICOM series as its slice files) -> one volume `Scan`; its source
    is the folder the files share. A scan of its own among them (an image, a NIfTI, a zip: most likely
    added to an earlier upload) is refused, so it is never silently left out of a series."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError(None, "no file given")
    alone = [p.name for p in paths if p.name.lower().endswith(OWN_SCAN_SUFFIXES)]
    if alone:
        raise DataError(None, f"{len(paths)} files came together, and several files are read as one DICOM series, "
                              f"but '{alone[0]}' is a scan of its own: remove the other files (or clear the "
                              "upload) to analyze it alone")
    folder = Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
    how = "To read another, give only that series' files."
    scan = _read(folder, files_listing(paths, max_bytes), series_uid, budget, how)
    scan.files = tuple(str(p) for p in paths)
    return scan


def _read(path: Path, listing: Listing, uid: str | None, budget: RequestBudget, how: str) -> Scan:
    series, notes = _collect(path, listing)
    chosen, choice_notes = _choose(path, series, uid, how)
    slices = series[chosen]
    _consistent(path, slices)
    first = slices[0].ds
    try:
        rows, cols = int(first.Rows), int(first.Columns)
        samples = int(first.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DataError(path, f"DICOM header lacks a usable image size ({exc})") from exc
    if samples not in (1, 3):
        raise DataError(path, f"DICOM has {samples} samples per pixel; only grayscale and RGB are supported")
    _check_geometry(path, rows, cols, len(slices))
    per = 4 if samples == 1 else samples * max(1, int(first.get("BitsAllocated", 8) or 8) // 8)
    budget.check(ScanHeader("dicom", cols, rows, len(slices), per), str(path))
    slices, step, step_vector, order_notes = _order(path, slices)
    stack = _decode(path, slices, rows, cols, samples)
    stack8, nonfinite = window(stack)
    del stack
    spacing = dicom_pixel_spacing(slices[0].ds)
    notes = choice_notes + notes + order_notes + ([] if spacing else ["no PixelSpacing in the DICOM header"])
    scan = Scan("dicom", list(stack8), spacing, step, str(path), notes, nonfinite,
                datasets=[s.ds for s in slices], affine=_affine(slices[0].ds, spacing, step_vector))
    return _with_nonfinite_note(scan)


__all__ = ["read_series", "read_files", "is_series_input", "split_selection", "is_series_folder", "series_folders",
           "SERIES_SEPARATOR"]
