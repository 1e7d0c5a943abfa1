"""Masks written back in the geometry of the scan they came from, so a viewer overlays them on the input.

- `write_mask_png(mask, out)`: one slice's mask, 0/255, at the slice's own size.
- `write_nifti_mask(scan, masks, out)`: a NIfTI input's per-slice masks (as `medical_io.read_nifti` shows
  its slices: reoriented to RAS+, cut along the superior axis, radiological view) turned back into the
  input's own voxel order and saved with its affine and header geometry (the input file is read again
  for its header only); a DICOM input's masks on its voxel grid with the affine its headers give
  (`Scan.affine`: a series, a multi-frame file with per-frame positions, or one placed slice). uint8 0/1.
- `write_dicom_seg(scan, masks, out)`: a binary DICOM Segmentation (highdicom) referencing the source
  series and every source instance, frames on the source's pixel grid.
- `write_secondary_capture(scan, index, picture, out, ...)`: one slice's picture (the outline burned in)
  as a DICOM Secondary Capture image (highdicom) in the source's study, for viewers without SEG support.

Which of these an input gets, under which names, is `scan_outputs`'s."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .dicom_geometry import patient_orientation
from .errors import DataError
from .medical_io import Scan, _load_nifti, _nifti_geometry

RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


def nifti_mask_volume(scan: Scan, masks: Sequence[np.ndarray]) -> tuple[np.ndarray, object]:
    """(mask volume in the input's voxel order and shape, the input's nibabel image)."""
    from nibabel import orientations
    if scan.kind != "nifti":
        raise DataError(scan.source, "a NIfTI mask needs a NIfTI or DICOM input")
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


def write_mask_png(mask: np.ndarray, out: str | Path) -> Path:
    """One slice's mask as a 0/255 grayscale PNG of the slice's size; returns `out`."""
    from PIL import Image
    Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255).save(out, format="PNG")
    return Path(out)


def affine_mask_image(scan: Scan, masks: Sequence[np.ndarray]):
    """The masks of a DICOM scan as a NIfTI image (uint8 0/1) on its voxel grid, voxel (column, row,
    slice) with `scan.affine` (RAS+ mm, from the DICOM headers)."""
    import nibabel as nib
    if scan.affine is None:
        raise DataError(scan.source, "the DICOM header gives no position, orientation or pixel spacing to place "
                                     "a NIfTI mask")
    if len(masks) != scan.n_slices:
        raise ValueError(f"{len(masks)} masks for {scan.n_slices} slices")
    vol = np.stack([np.asarray(m, dtype=np.uint8) for m in masks], axis=-1).transpose(1, 0, 2)  # (col, row, slice)
    if vol.shape[:2] != scan.shape[::-1]:
        raise DataError(scan.source, f"masks are {vol.shape[0]}x{vol.shape[1]}, "
                                     f"the slices {scan.shape[1]}x{scan.shape[0]}")
    img = nib.Nifti1Image(np.ascontiguousarray(vol), scan.affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(scan.affine, 1)  # scanner coordinates
    img.set_sform(scan.affine, 1)
    return img


def write_nifti_mask(scan: Scan, masks: Sequence[np.ndarray], out: str | Path) -> Path:
    """Save the masks as a NIfTI volume with the input's affine (a DICOM input: the affine its headers
    give, `affine_mask_image`); returns `out`."""
    import nibabel as nib
    if scan.kind == "dicom":
        nib.save(affine_mask_image(scan, masks), str(out))
        return Path(out)
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
    ("Tumor"), referencing the source series and instance (a DICOM series: every slice's instance),
    frames in the source's own pixel grid (DICOM frames are shown as stored). Returns `out`."""
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
        # a DICOM series (dicom_series) keeps every slice's header: each frame references its own instance
        sources = list(scan.datasets) if scan.datasets else [pydicom.dcmread(scan.source)]
        frames = np.stack([np.asarray(m, dtype=bool) for m in masks]).astype(np.uint8)
        description = hd.seg.SegmentDescription(
            segment_number=1, segment_label="Tumor",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=algorithm, family=codes.cid7162.ArtificialIntelligence, version=version))
        try:
            seg = hd.seg.Segmentation(
                source_images=sources, pixel_array=frames if len(frames) > 1 else frames[0],
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[description],
                series_instance_uid=hd.UID(), series_number=9901, sop_instance_uid=hd.UID(), instance_number=1,
                manufacturer="TumorLens", manufacturer_model_name=algorithm, software_versions=version,
                device_serial_number="none", series_description="TumorLens tumor segmentation (research use only)",
                omit_empty_frames=False)
        except (ValueError, AttributeError, TypeError) as exc:
            raise DataError(scan.source, f"cannot write a DICOM Segmentation for this file ({exc})") from exc
        seg.save_as(str(out))
    return Path(out)


def source_header(scan: Scan, index: int):
    """The DICOM header (no pixels) behind slice `index`: its own slice file's in a series, else the file's."""
    import pydicom
    if scan.kind != "dicom":
        raise DataError(scan.source, "a DICOM object needs a DICOM input")
    if scan.datasets:
        return scan.datasets[index]
    return pydicom.dcmread(scan.source, stop_before_pixels=True)


def write_secondary_capture(scan: Scan, index: int, picture: np.ndarray, out: str | Path, *, series_uid: str,
                            instance_number: int = 1, algorithm: str = "TumorLens", version: str | None = None) -> Path:
    """Slice `index`'s picture (H x W x 3 uint8, the outline burned in) as a DICOM Secondary Capture image
    (highdicom) in the source's study and patient, in series `series_uid`, its SourceImageSequence naming
    the source instance (and frame). Returns `out`."""
    import warnings

    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence
    version = version or _version()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = source_header(scan, index)
        orientation = patient_orientation(ref)
        if orientation is None:
            raise DataError(scan.source, "the DICOM header states no orientation (ImageOrientationPatient or "
                                         "PatientOrientation), which a Secondary Capture must give")
        try:
            sc = hd.sc.SCImage.from_ref_dataset(
                ref, pixel_array=np.ascontiguousarray(picture, dtype=np.uint8), photometric_interpretation="RGB",
                bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=series_uid, series_number=9902,
                sop_instance_uid=hd.UID(), instance_number=instance_number, manufacturer="TumorLens",
                pixel_spacing=scan.pixel_spacing_mm, patient_orientation=orientation,
                transfer_syntax_uid=hd.UID("1.2.840.10008.1.2.1"))
        except (ValueError, AttributeError, TypeError, KeyError) as exc:
            raise DataError(scan.source, f"cannot write a DICOM Secondary Capture for this file ({exc})") from exc
        source = Dataset()
        source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = ref.SOPClassUID, ref.SOPInstanceUID
        if not scan.datasets and scan.is_volume:  # a multi-frame file: which frame
            source.ReferencedFrameNumber = index + 1
        sc.SourceImageSequence = DicomSequence([source])
        sc.ImageType = ["DERIVED", "SECONDARY"]
        sc.DerivationDescription = f"tumor outline by {algorithm} {version} burned in (research use only)"
        sc.SeriesDescription = "TumorLens tumor outline (research use only)"
        sc.ManufacturerModelName, sc.SoftwareVersions = algorithm, version
        sc.save_as(str(out))
    return Path(out)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("tumorlens")
    except PackageNotFoundError:
        return "unknown"
