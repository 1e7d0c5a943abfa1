"""Masks written back in the geometry of the scan they came from, so a viewer overlays them on the input
(`write_nifti_mask` for NIfTI input, `write_dicom_seg` for DICOM input).

`write_nifti_mask(scan, masks, out)`: the per-slice masks of a NIfTI scan (as `medical_io.read_nifti`
shows its slices: reoriented to RAS+, cut along the superior axis, radiological view) turned back into
the input's own voxel order and saved with the input's affine and header geometry (nibabel), uint8
0/1. The input file is read again for its header only."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DataError
from .medical_io import Scan, _load_nifti, _nifti_geometry

RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


def nifti_mask_volume(scan: Scan, masks: Sequence[np.ndarray]) -> tuple[np.ndarray, object]:
    """(mask volume in the input's voxel order and shape, the input's nibabel image)."""
    from nibabel import orientations
    if scan.kind != "nifti":
        raise DataError(scan.source, "a NIfTI mask needs a NIfTI input")
    path = Path(scan.source)
    img = _load_nifti(path)
    _, _, _, shape3, ornt = _nifti_geometry(img, path)
    if len(masks) != scan.n_slices:
        raise ValueError(f"{len(masks)} masks for {scan.n_slices} slices")
    # undo read_nifti's cut: slice k = ras[::-1, ::-1, k].T
    ras = np.stack([np.asarray(m, dtype=np.uint8).T[::-1, ::-1] for m in masks], axis=2)
    vol = ras if ornt is None else orientations.apply_orientation(ras, orientations.ornt_transform(RAS, ornt))
    if vol.shape != shape3:
        raise DataError(path, f"masks make a {vol.shape} volume, the input is {shape3}")
    return np.ascontiguousarray(vol).reshape(img.shape), img


def write_nifti_mask(scan: Scan, masks: Sequence[np.ndarray], out: str | Path) -> Path:
    """Save the masks as a NIfTI volume with the input's affine; returns `out`."""
    import nibabel as nib
    vol, img = nifti_mask_volume(scan, masks)
    header = img.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1, 0)
    mask_img = nib.Nifti1Image(vol.astype(np.uint8), img.affine, header)
    mask_img.set_qform(img.get_qform(), int(img.header["qform_code"]))
    mask_img.set_sform(img.get_sform(), int(img.header["sform_code"]))
    nib.save(mask_img, str(out))
    return Path(out)


def write_dicom_seg(scan: Scan, masks: Sequence[np.ndarray], out: str | Path, *, algorithm: str = "TumorLens",
                    version: str | None = None) -> Path:
    """The masks of a DICOM scan as a DICOM Segmentation object (highdicom): binary, one segment
    ("Tumor"), referencing the source series and instance, frames in the source's own pixel grid
    (medical_io.read_dicom shows DICOM frames as stored). Returns `out`."""
    import warnings

    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes
    if scan.kind != "dicom":
        raise DataError(scan.source, "a DICOM Segmentation needs a DICOM input")
    if len(masks) != scan.n_slices:
        raise ValueError(f"{len(masks)} masks for {scan.n_slices} frames")
    version = version or _version()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = pydicom.dcmread(scan.source)
        frames = np.stack([np.asarray(m, dtype=bool) for m in masks]).astype(np.uint8)
        description = hd.seg.SegmentDescription(
            segment_number=1, segment_label="Tumor",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=algorithm, family=codes.cid7162.ArtificialIntelligence, version=version))
        try:
            seg = hd.seg.Segmentation(
                source_images=[source], pixel_array=frames if len(frames) > 1 else frames[0],
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[description],
                series_instance_uid=hd.UID(), series_number=9901, sop_instance_uid=hd.UID(), instance_number=1,
                manufacturer="TumorLens", manufacturer_model_name=algorithm, software_versions=version,
                device_serial_number="none", series_description="TumorLens tumor segmentation (research use only)",
                omit_empty_frames=False)
        except (ValueError, AttributeError, TypeError) as exc:
            raise DataError(scan.source, f"cannot write a DICOM Segmentation for this file ({exc})") from exc
        seg.save_as(str(out))
    return Path(out)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("tumorlens")
    except PackageNotFoundError:
        return "unknown"
