"""The files one analysis gives, written by one function for both front ends (`tumorlens predict` and
the app's download buttons): `write_outputs(result, out, formats=..., stem=...)` -> `Outputs`.

Formats (`FORMATS`), each under `out` and named from a sanitised `stem` (`safe_stem`):
- `png`: the mask, 0/255, at the slice's own size: `<stem>_mask.png` for a single slice; a volume
  analysed whole, `<stem>_masks/slice_NNN.png` per slice (numbered and oriented as the app shows
  them); one slice of a volume, `<stem>_slice_NNN_mask.png`.
- `nifti`: `<stem>_mask.nii.gz`, the mask volume with the input's affine: a NIfTI input in its own
  voxel order; a DICOM input (a series, a multi-frame file with per-frame positions, one slice) on its
  voxel grid with the affine its headers give.
- `dicom-seg`: `<stem>_seg.dcm`, a DICOM Segmentation referencing the source series and instances.
- `secondary-capture`: the outline burned into each segmented slice as DICOM Secondary Capture images
  in the source's study (one series), for viewers without SEG support: `<stem>_overlay.dcm` for one
  slice, `<stem>_overlay/slice_NNN.dcm` for a volume analysed whole.
- `report`: `<stem>_report.html`, the one-page report (`scan_report`).

A format the input cannot have (`unsupported`: a NIfTI mask of a plain image, a SEG of a NIfTI, a
volume's NIfTI/SEG from one analysed slice) or that fails to write (a DICOM without the identifiers a
SEG needs) is skipped, with the reason, and nothing of it is left behind. `default_formats` is what
`tumorlens predict` writes unless told: the PNG, plus the NIfTI and the SEG where the input supports them.

`input_sha256(scan)`: the SHA-256 the report shows: a file's own; for a folder or the several files of
a multi-file upload, that of their `sha256sum`-style listing (`<hex>  <name>` lines, sorted by name)."""

from __future__ import annotations

import hashlib
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence

from .errors import ConfigError, DataError
from .imagenet import sha256_of
from .medical_io import DICOM_SUFFIXES, NIFTI_SUFFIXES, SCAN_SUFFIXES
from .scan_analysis import ScanResult
from .scan_export import write_dicom_seg, write_mask_png, write_nifti_mask, write_secondary_capture
from .upload_files import ZIP_SUFFIX

FORMATS = ("png", "nifti", "dicom-seg", "secondary-capture", "report")
MASK_FORMATS = ("png", "nifti", "dicom-seg", "secondary-capture")
DEFAULT_FORMATS = ("png", "nifti", "dicom-seg")
MAX_STEM = 80
_UNSAFE = re.compile(r"[^\w.-]+")
_PARTIALS = {"nifti": ("{stem}_mask.nii.gz",), "dicom-seg": ("{stem}_seg.dcm",),
             "secondary-capture": ("{stem}_overlay", "{stem}_overlay.dcm")}
_SELECTION = re.compile(r"(.+)#([0-9]+(?:\.[0-9]+)*)")
_STRIP_SUFFIXES = sorted(set(SCAN_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES + (ZIP_SUFFIX,)), key=len, reverse=True)


@dataclass
class Outputs:
    """What `write_outputs` wrote (format -> file or folder under `out`) and why it skipped the rest."""

    out: Path
    written: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def name(self, fmt: str) -> str:
        """The written output's name relative to `out` ('' if none); a folder's ends in '/'."""
        path = self.written.get(fmt)
        if path is None:
            return ""
        return path.relative_to(self.out).as_posix() + ("/" if path.is_dir() else "")

    def download(self, fmt: str) -> Path | None:
        """The output as one file to hand out: itself, or a folder zipped beside it (`<folder>.zip`)."""
        path = self.written.get(fmt)
        if path is None or path.is_file():
            return path
        archive = path.with_name(path.name + ".zip")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for item in sorted(path.rglob("*")):
                if item.is_file():
                    zf.write(item, f"{path.name}/{item.relative_to(path).as_posix()}")
        return archive


# -- what an input can have ----------------------------------------------------------------
def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """'png,nifti' (or a list) -> the formats in `FORMATS` order; ConfigError naming an unknown one."""
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in items if t not in FORMATS]
    if unknown or not items:
        raise ConfigError(f"unknown output format {', '.join(map(repr, unknown)) or '(none given)'}: "
                          f"choose from {','.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in items)


def unsupported(result: ScanResult, fmt: str) -> str | None:
    """Why `result` cannot have output `fmt`, or None when it can."""
    scan = result.scan
    whole = not scan.is_volume or result.masks is not None
    if fmt in MASK_FORMATS and result.refused:
        return "the scope check refused this upload (it does not look like a brain MRI slice), so no model ran"
    if fmt in MASK_FORMATS and result.segmentation is None:
        return "no segmenter ran, so there is no mask"
    if fmt == "nifti":
        if scan.kind == "image":
            return "a plain image has no voxel geometry (its mask is the PNG)"
        if scan.kind == "dicom" and scan.affine is None:
            return "the DICOM header does not say where its pixels lie (position, orientation, pixel spacing)"
    if fmt == "dicom-seg" and scan.kind != "dicom":
        return "a DICOM Segmentation references DICOM source images; this input is not DICOM"
    if fmt == "secondary-capture" and scan.kind != "dicom":
        return "a Secondary Capture joins the source's DICOM study; this input is not DICOM"
    if fmt in ("nifti", "dicom-seg") and not whole:
        return "a volume's mask needs every slice segmented: analyze the whole volume"
    return None


def default_formats(result: ScanResult) -> tuple[str, ...]:
    """The PNG, and the NIfTI and the SEG where `result`'s input supports them."""
    return tuple(f for f in DEFAULT_FORMATS if unsupported(result, f) is None)


# -- names ---------------------------------------------------------------------------------
def safe_stem(name: str | Path, fallback: str = "scan") -> str:
    """A file name (or `name#<SeriesInstanceUID>`) as a stem that names files in one folder: the base name
    without its scan suffix, every run of characters other than letters, digits, '.', '-' and '_' as
    '_', no leading dot, at most `MAX_STEM` characters; `fallback` when nothing is left."""
    text = re.split(r"[\\/]", str(name))[-1]
    picked = _SELECTION.fullmatch(text)  # study.zip#<SeriesInstanceUID>
    base, uid = (picked.group(1), picked.group(2)) if picked else (text, "")
    for suffix in _STRIP_SUFFIXES:
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            base = base[:-len(suffix)]
            break
    stem = _UNSAFE.sub("_", base + (f"_{uid}" if uid else "")).strip("._-")[:MAX_STEM].rstrip("._-")
    return stem or fallback


def _inside(out: Path, path: Path) -> Path:
    if not path.resolve().is_relative_to(out.resolve()):
        raise ValueError(f"{path.name} would be written outside the output folder")
    return path


def input_sha256(scan_or_source) -> str:
    """The input's SHA-256: a file's own; for a folder or several files (a `Scan` read from a multi-file
    upload), that of their sorted `sha256sum` listing."""
    source = scan_or_source
    if hasattr(source, "kind"):  # a Scan
        source = list(source.files) if source.files else source.source
    if isinstance(source, (list, tuple)) and len(source) == 1:
        source = source[0]
    if isinstance(source, (str, Path)) and Path(source).is_file():
        return sha256_of(Path(source))
    if isinstance(source, (str, Path)):
        folder = Path(source)
        files = [(p.relative_to(folder).as_posix(), p) for p in sorted(folder.rglob("*")) if p.is_file()]
    else:
        files = [(Path(p).name, Path(p)) for p in source]
    listing = "".join(f"{sha256_of(p)}  {name}\n" for name, p in sorted(files))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def source_name(scan) -> str:
    """The input as its user knows it: the file or folder name; for several files, how many and the first."""
    if scan.files:
        names = sorted(Path(p).name for p in scan.files)
        return f"{len(names)} files ({names[0]}, ...)" if len(names) > 1 else names[0]
    return Path(scan.source).name if scan.source else "(no file name)"


# -- writing -------------------------------------------------------------------------------
def _slice_name(i: int, n: int, suffix: str) -> str:
    return f"slice_{i:0{max(3, len(str(n - 1)))}d}{suffix}"


def _write_png(result: ScanResult, out: Path, stem: str) -> Path:
    scan, masks = result.scan, result.slice_masks()
    if not scan.is_volume:
        return write_mask_png(masks[result.index], _inside(out, out / f"{stem}_mask.png"))
    if result.masks is None:
        name = f"{stem}_{_slice_name(result.index, scan.n_slices, '_mask.png')}"
        return write_mask_png(masks[result.index], _inside(out, out / name))
    folder = _inside(out, out / f"{stem}_masks")
    folder.mkdir(exist_ok=True)
    for i, mask in masks.items():
        write_mask_png(mask, folder / _slice_name(i, scan.n_slices, ".png"))
    return folder


def _write_secondary_capture(result: ScanResult, out: Path, stem: str) -> Path:
    import highdicom as hd
    from .visualize import overlay_outline
    scan, masks, series = result.scan, result.slice_masks(), hd.UID()
    if len(masks) == 1:
        (i, mask), = masks.items()
        target = _inside(out, out / f"{stem}_overlay.dcm")
        return write_secondary_capture(scan, i, overlay_outline(scan.rgb(i), mask), target, series_uid=series)
    folder = _inside(out, out / f"{stem}_overlay")
    folder.mkdir(exist_ok=True)
    for k, (i, mask) in enumerate(masks.items(), start=1):
        write_secondary_capture(scan, i, overlay_outline(scan.rgb(i), mask),
                                folder / _slice_name(i, scan.n_slices, ".dcm"), series_uid=series, instance_number=k)
    return folder


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_outputs(result: ScanResult, out: str | Path, *, formats: Sequence[str] | None = None, stem: str | None = None,
                  models: Sequence = (), source_sha256: str | None = None, name: str | None = None,
                  created: datetime | None = None) -> Outputs:
    """Write `formats` (default: `default_formats(result)`) of `result` into folder `out` (made if
    missing). stem: the names' start (sanitised; default: the input's name); models: the
    `scan_report.ModelSummary`s of the models that ran; source_sha256, name, created: the input's
    digest and name and the analysis time, for the report (defaults: `input_sha256(scan)`,
    `source_name(scan)`, now). Returns what was written and why the rest was skipped."""
    from .scan_report import write_report
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scan = result.scan
    stem = safe_stem(stem if stem is not None else "series" if scan.files else Path(scan.source or "scan").name)
    outputs = Outputs(out)
    masks = [m for _, m in sorted(result.slice_masks().items())]
    for fmt in default_formats(result) if formats is None else parse_formats(formats):
        why = unsupported(result, fmt)
        if why:
            outputs.skipped[fmt] = why
            continue
        try:
            if fmt == "png":
                target = _write_png(result, out, stem)
            elif fmt == "nifti":
                target = write_nifti_mask(scan, masks, _inside(out, out / f"{stem}_mask.nii.gz"))
            elif fmt == "dicom-seg":
                target = write_dicom_seg(scan, masks, _inside(out, out / f"{stem}_seg.dcm"))
            elif fmt == "secondary-capture":
                target = _write_secondary_capture(result, out, stem)
            else:
                target = write_report(result, _inside(out, out / f"{stem}_report.html"),
                                      source_sha256=source_sha256 or input_sha256(scan), models=models,
                                      created=created, source_name=name or source_name(scan))
        except DataError as exc:  # e.g. a DICOM without the identifiers a SEG must reference
            outputs.skipped[fmt] = exc.reason
            for partial in _PARTIALS.get(fmt, ()):  # what a failed writer may have left
                _remove(out / partial.format(stem=stem))
            continue
        outputs.written[fmt] = Path(target)
    return outputs


__all__ = ["Outputs", "write_outputs", "default_formats", "unsupported", "parse_formats", "safe_stem", "input_sha256",
           "source_name", "FORMATS", "DEFAULT_FORMATS"]
