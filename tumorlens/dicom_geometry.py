"""Where DICOM pixels lie: pixel and slice spacing, orientation and position from the headers, as the
affine that maps voxel (column, row, slice) to RAS+ mm (what a NIfTI mask of a DICOM input carries),
and the patient orientation a Secondary Capture states.

Headers are untrusted: a value that is missing, not a number, not finite or not positive reads as
unknown (None), never as a guess."""

from __future__ import annotations

import math

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
EVEN_STEP = 0.02          # mm: frames of one file whose steps differ by more have no single affine


def positive(values, n: int) -> tuple[float, ...] | None:
    """`n` finite positive floats from `values`, else None."""
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    if len(out) != n or not all(math.isfinite(v) and v > 0 for v in out):
        return None
    return out


def vector(ds, key: str, n: int) -> np.ndarray | None:
    """`n` finite floats from element `key`, else None."""
    try:
        value = np.array([float(v) for v in ds.get(key)], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return value if value.shape == (n,) and np.isfinite(value).all() else None


def _functional_group(ds, sequence: str, frame: int | None = 0):
    """The item of `sequence` (e.g. PixelMeasuresSequence) in the shared functional groups, else in
    frame `frame`'s (enhanced multi-frame DICOM), or None."""
    for groups in (ds.get("SharedFunctionalGroupsSequence"), ds.get("PerFrameFunctionalGroupsSequence")):
        if not groups:
            continue
        group = groups[0] if len(groups) == 1 or frame is None else groups[frame] if frame < len(groups) else None
        items = group.get(sequence) if group is not None else None
        if items:
            return items[0]
    return None


def dicom_pixel_spacing(ds) -> tuple[float, float] | None:
    """(row, col) mm from PixelSpacing, or the enhanced-DICOM PixelMeasuresSequence."""
    for source in (ds, _functional_group(ds, "PixelMeasuresSequence")):
        if source is not None and source.get("PixelSpacing") is not None:
            spacing = positive(source.PixelSpacing, 2)
            if spacing:
                return spacing
    return None


def dicom_slice_spacing(ds) -> float | None:
    """mm between slice centres: SpacingBetweenSlices, else SliceThickness (or their enhanced forms)."""
    for source in (ds, _functional_group(ds, "PixelMeasuresSequence")):
        if source is None:
            continue
        for key in ("SpacingBetweenSlices", "SliceThickness"):
            if source.get(key) is not None:
                value = positive([source.get(key)], 1)
                if value:
                    return value[0]
    return None


def orientation(ds) -> np.ndarray | None:
    """ImageOrientationPatient (row direction, column direction; LPS), plain or enhanced."""
    iop = vector(ds, "ImageOrientationPatient", 6)
    if iop is None:
        item = _functional_group(ds, "PlaneOrientationSequence")
        iop = vector(item, "ImageOrientationPatient", 6) if item is not None else None
    if iop is None or abs(np.linalg.norm(np.cross(iop[:3], iop[3:])) - 1) > 0.01:
        return None  # not two orthogonal unit vectors
    return iop


def affine(iop: np.ndarray, ipp: np.ndarray, spacing: tuple[float, float], step: np.ndarray) -> np.ndarray:
    """RAS+ mm of voxel (column, row, slice): first pixel at `ipp`, `step` (LPS mm) from slice to slice."""
    row_mm, col_mm = spacing
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = iop[:3] * col_mm, iop[3:] * row_mm, step, ipp
    return LPS_TO_RAS @ lps


def normal(iop: np.ndarray) -> np.ndarray:
    n = np.cross(iop[:3], iop[3:])
    return n / np.linalg.norm(n)


def file_affine(ds, frames: int) -> np.ndarray | None:
    """The affine of one DICOM file's frames as stored: one frame from its position, orientation and
    spacing (the slice axis its thickness along the normal); several from each frame's own position
    (enhanced DICOM), evenly spaced. None when the header does not say where the pixels are."""
    iop, spacing = orientation(ds), dicom_pixel_spacing(ds)
    if iop is None or spacing is None:
        return None
    if frames == 1:
        ipp = vector(ds, "ImagePositionPatient", 3)
        if ipp is None:
            item = _functional_group(ds, "PlanePositionSequence")
            ipp = vector(item, "ImagePositionPatient", 3) if item is not None else None
        return None if ipp is None else affine(iop, ipp, spacing, normal(iop) * (dicom_slice_spacing(ds) or 1.0))
    groups = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(groups) != frames:
        return None  # a classic multi-frame file states one position for all its frames
    positions = []
    for group in groups:
        item = (group.get("PlanePositionSequence") or [None])[0]
        position = vector(item, "ImagePositionPatient", 3) if item is not None else None
        if position is None:
            return None
        positions.append(position)
    positions = np.array(positions)
    step = (positions[-1] - positions[0]) / (frames - 1)
    if np.linalg.norm(step) < 1e-3 or np.abs(np.diff(positions, axis=0) - step).max() > EVEN_STEP:
        return None
    return affine(iop, positions[0], spacing, step)


def patient_orientation(ds) -> tuple[str, str] | None:
    """(direction of the rows, direction of the columns) as single patient letters (L, P, H, ...): from
    ImageOrientationPatient, the closest axis (highdicom), else the header's own PatientOrientation."""
    iop = orientation(ds)
    if iop is not None:
        from highdicom.spatial import get_closest_patient_orientation
        rows, cols, _ = get_closest_patient_orientation(np.column_stack([iop[:3], iop[3:], normal(iop)]))
        return rows.value, cols.value
    stated = [str(v) for v in (ds.get("PatientOrientation") or [])]
    if len(stated) == 2 and all(v in ("A", "P", "R", "L", "H", "F") for v in stated):
        return stated[0], stated[1]
    return None


__all__ = ["affine", "dicom_pixel_spacing", "dicom_slice_spacing", "file_affine", "normal", "orientation",
           "patient_orientation", "positive", "vector"]
