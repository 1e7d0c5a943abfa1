"""Batch prediction: python -m tumorlens predict INPUT... --out OUT [--format png,nifti,...] [--seg-model X]

Reads what the app reads: plain images (PNG, JPEG, TIFF, BMP), DICOM files (.dcm), NIfTI volumes
(.nii, .nii.gz) and DICOM series (a folder of slice files, or a .zip; `path#<SeriesInstanceUID>` picks
one of several series); folders are searched for them, and a folder holding DICOM files and no plain
image or NIfTI is read as series, one input per sub-folder of slices. Writes one row per input in
OUT/predictions.csv and, per input, the outputs --format names (default: png, plus nifti and dicom-seg
where the input supports them), written by `tumorlens.scan_outputs` as the app writes its downloads:
  png                OUT/<stem>_mask.png (0/255, the slice's own size); a volume OUT/<stem>_masks/slice_NNN.png
                     per slice, numbered and oriented as the app shows them
  nifti              OUT/<stem>_mask.nii.gz: the mask volume with the input's affine (NIfTI input, or
                     DICOM whose headers place it)
  dicom-seg          OUT/<stem>_seg.dcm: a DICOM Segmentation referencing the source series and instances
  secondary-capture  OUT/<stem>_overlay.dcm, or OUT/<stem>_overlay/slice_NNN.dcm: the outline burned in
                     (DICOM Secondary Capture), for viewers without SEG support
  report             OUT/<stem>_report.html: the one-page report, with the models' test scores
A format an input cannot have is skipped and said so (log, `skipped` column). A volume's row gives its
slice count, the slices with tumor, the tumor voxels (tumor_pixels, tumor_percent) and, when the
header gives the voxel size, the volume in cm³; its tumor type is that of the slice with the most
tumor (the middle one when none has any), whose number is in `slice`. Pixel spacing comes from a
DICOM/NIfTI header, else --pixel-spacing. What the reader notes about an input (the other series in a
folder, files left out) goes to the log. A bad file gets its error on its row and in the log; the rest
go on. Files are held to the batch budget (medical_io.CLI_BUDGET: 40 Mpx a slice, 2^26 voxels a file,
any number of slices analyzed whole); `nonfinite_pixels` counts NaN/inf values, left out of the window.
Impossible settings (--threshold outside (0, 1), a --pixel-spacing that is not a positive number, an
unknown --format, an --out that is a file) are refused before any model loads: `error: ...`, exit status 2.

Segmenters by name (--seg-model NAME: each segmenter folder under models/, by the name its
metadata.json gives it), or any model folder or Hub repo id:
{segmenters}
The tumor-type classifier was trained on BRISC 2025 T1c slices: with a segmenter whose record does
not say it fits its inputs ({no_classifier}; or a model without metadata.json), no classifier
runs unless --cls-model names one."""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from .dicom_series import is_series_folder, series_folders
from .errors import TumorLensError
from .inference import Pipeline
from .medical_io import CLI_BUDGET, SCAN_SUFFIXES, read_scan
from .model_record import METADATA_NAME, read_record
from .registry import default_model, resolve_model, segmenter_name, segmenter_records
from .scan_analysis import LARGEST, analyze_scan
from .scan_outputs import FORMATS, parse_formats, safe_stem, write_outputs
from .upload_files import ZIP_SUFFIX

log = logging.getLogger("tumorlens.predict")
INPUT_SUFFIXES = SCAN_SUFFIXES + (ZIP_SUFFIX,)


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Files as given (a .zip, or `path#<SeriesInstanceUID>`, is one DICOM series); a folder of DICOM files
    and no plain image or NIfTI is a DICOM series, one input per folder in it that holds the slices (a
    study exported as a folder per series); other folders are searched recursively for images, DICOM
    and NIfTI files and .zip series, sorted."""
    found = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and is_series_folder(path):
            found += series_folders(path)
        elif path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(INPUT_SUFFIXES))
        else:
            found.append(path)  # a missing or odd file still gets its row, with the error
    return found


def _unique_stem(path: Path, used: set[str]) -> str:
    """A safe stem for `path`'s outputs, not yet used in this run (compared without case)."""
    base = safe_stem(path.name)
    stem, k = base, 2
    while stem.lower() in used:
        stem, k = f"{base}_{k}", k + 1
    used.add(stem.lower())
    return stem


OUTPUT_COLUMNS = {"png": "mask_file", "nifti": "nifti_mask_file", "dicom-seg": "dicom_seg_file",
                  "secondary-capture": "secondary_capture_file", "report": "report_file"}


def predict(inputs: list[str], out: Path, pipeline: Pipeline, *, threshold: float | None = None,
            pixel_spacing_mm: float | None = None, formats: Sequence[str] | None = None,
            models: Sequence = ()) -> list[dict]:
    """Every input (files, folders) through `pipeline`: outputs under `out` (`formats`; None: png and
    what each input supports), rows in out/predictions.csv (returned too). `pixel_spacing_mm` serves
    files whose header gives none; `models` (`scan_report.ModelSummary`) go into the reports."""
    out.mkdir(parents=True, exist_ok=True)
    classes = pipeline.classifier.label_names if pipeline.classifier else []
    fields = (["file", "status", "mask_file", "predicted_class"] + [f"prob_{c}" for c in classes]
              + ["tumor_found", "tumor_pixels", "tumor_percent", "area_mm2", "slices", "tumor_slices",
                 "slice", "volume_cm3", "nifti_mask_file", "dicom_seg_file", "secondary_capture_file",
                 "report_file", "nonfinite_pixels", "skipped"])
    rows, used = [], set()
    for path in tqdm(collect_inputs(inputs), desc="predicting", unit="file"):
        row = {k: "" for k in fields}
        row["file"] = str(path)
        try:
            row.update(_predict_one(path, out, pipeline, threshold, pixel_spacing_mm, used, formats, models))
        except (TumorLensError, OSError) as exc:
            row["status"] = f"error: {exc}"
            log.error("%s: %s", path, exc)
        except MemoryError:
            row["status"] = "error: not enough memory to read or analyze this file"
            log.error("%s: out of memory", path)
        rows.append(row)
    with open(out / "predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _predict_one(path: Path, out: Path, pipeline: Pipeline, threshold: float | None, pixel_spacing_mm: float | None,
                 used: set[str], formats: Sequence[str] | None, models: Sequence) -> dict:
    """One input's row and outputs: a single slice as an image; a volume whole, slice by slice."""
    scan = read_scan(path, budget=CLI_BUDGET)
    for note in scan.notes:  # e.g. the other series in the folder, and how to pick one
        log.info("%s: %s", path, note)
    volume = scan.is_volume and pipeline.segmenter is not None
    result = analyze_scan(pipeline, scan, threshold=threshold, whole_volume=volume,
                          spacing=None if scan.pixel_spacing_mm else pixel_spacing_mm,
                          slice_index=LARGEST if volume else None)
    outputs = write_outputs(result, out, formats=formats, stem=_unique_stem(path, used), models=models,
                            name=path.name)
    for fmt, why in outputs.skipped.items():
        log.warning("%s: no %s output: %s", path, fmt, why)
    row, seg, analysis = {"status": "ok", "slices": scan.n_slices}, result.segmentation, result.analysis
    row.update({column: outputs.name(fmt) for fmt, column in OUTPUT_COLUMNS.items()})
    row["skipped"] = "; ".join(f"{fmt}: {why}" for fmt, why in outputs.skipped.items())
    row["nonfinite_pixels"] = scan.nonfinite
    if scan.is_volume:
        row["slice"] = result.index
    if volume:
        row.update(tumor_found=result.tumor_found, tumor_pixels=result.tumor_voxels,
                   tumor_percent=round(100 * result.tumor_voxels / (scan.n_slices * seg.mask.size), 4),
                   tumor_slices=result.tumor_slices)
        if result.volume_cm3 is not None:
            row["volume_cm3"] = round(result.volume_cm3, 4)
    elif seg is not None:
        row.update(tumor_found=result.tumor_found, tumor_pixels=seg.area_px,
                   tumor_percent=round(100 * seg.area_fraction, 4))
        if analysis.area_mm2 is not None:
            row["area_mm2"] = round(analysis.area_mm2, 2)
    if analysis.class_probabilities:
        row["predicted_class"] = analysis.predicted_class
        row.update({f"prob_{c}": round(p, 6) for c, p in analysis.class_probabilities.items()})
    return row


def add_parser(sub) -> argparse.ArgumentParser:
    records = segmenter_records()  # every segmenter folder under models/, as each one's metadata.json names it
    listing = "\n".join(f"  {name:<10} {record.title}" for name, record in records.items()) or "  (none here)"
    without = ", ".join(name for name, record in records.items() if not record.tumor_types)
    p = sub.add_parser("predict", help="segment (and classify) images and scans; write masks and predictions.csv",
                       description=__doc__.format(segmenters=listing, no_classifier=without or "none here"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="files or folders: images (PNG, JPEG, TIFF, BMP), DICOM (.dcm), "
                                             "NIfTI (.nii, .nii.gz), DICOM series (a folder or a .zip of slice "
                                             "files; path#<SeriesInstanceUID> picks one)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--format", dest="formats", default=None,
                   help=f"outputs per input, comma-separated, of {','.join(FORMATS)} (default: png, plus nifti "
                        "and dicom-seg where the input supports them)")
    p.add_argument("--seg-model", default=None,
                   help=f"segmenter: a name ({', '.join(records) or 'none here'}), a model folder or a Hub repo id "
                        "(default: $TUMORLENS_SEG_MODEL, else the shipped brisc2025)")
    p.add_argument("--cls-model", default=None,
                   help="classifier folder or Hub repo id, or 'none' (default: the shipped BRISC one; "
                        "none with a segmenter it does not fit, such as lgg)")
    p.add_argument("--no-cls", "--no-classifier", dest="no_classifier", action="store_true",
                   help="segment only: no tumor type")
    p.add_argument("--threshold", type=float, default=None, help="mask threshold (default: the model's own, tuned on validation data)")
    p.add_argument("--pixel-spacing", type=float, default=None,
                   help="mm per pixel, for areas in mm² of files whose header gives none (plain images)")
    p.add_argument("--runtime", choices=("auto", "torch", "onnx"), default="auto")
    p.set_defaults(func=run)
    return p


def pick_classifier(args, seg_requested: str | None) -> str | None:
    """--no-cls or --cls-model none: none; --cls-model X: X; else the shipped one, unless the
    segmenter's record (its folder's metadata.json) does not say the BRISC classifier fits its
    inputs, as for lgg or a folder that states nothing (said in the log)."""
    if args.no_classifier or (args.cls_model or "").lower() == "none":
        return None
    if args.cls_model:
        return resolve_model(args.cls_model, "classifier")
    if seg_requested:
        location = resolve_model(seg_requested)
        record = read_record(location)
        if not record.tumor_types:
            name = segmenter_name(location) or record.name
            why = "" if record.has_metadata else f" ({location} states no inputs: it has no {METADATA_NAME})"
            log.info("segmenter %s: the tumor-type classifier (trained on BRISC 2025 T1c slices) does not apply%s, "
                     "so none runs; pass --cls-model to run one anyway", name, why)
            return None
    return default_model("classifier")


def report_models(*locations: str | None) -> list:
    """The reports' summaries of the models at `locations` (None: not loaded); an unreadable one is
    left out, with a log line."""
    from .scan_report import model_summary
    summaries = []
    for location in locations:
        if location:
            try:
                summaries.append(model_summary(location))
            except (TumorLensError, OSError, ValueError) as exc:
                log.warning("the report leaves out the model at %s: %s", location, exc)
    return summaries


def check_settings(args) -> str | None:
    """Why the settings cannot work (a message), or None: checked before any model loads."""
    if args.threshold is not None and not (math.isfinite(args.threshold) and 0.0 < args.threshold < 1.0):
        return f"--threshold must lie strictly between 0 and 1 (a probability), not {args.threshold:g}"
    if args.pixel_spacing is not None and not (math.isfinite(args.pixel_spacing) and args.pixel_spacing > 0):
        return f"--pixel-spacing must be a positive number of mm per pixel, not {args.pixel_spacing:g}"
    if args.formats is not None:
        try:
            parse_formats(args.formats)
        except TumorLensError as exc:
            return f"--format {args.formats}: {exc}"
    for folder in (args.out, *args.out.parents):
        if folder.exists():
            if not folder.is_dir():
                return f"--out {args.out}: {folder} is a file; give a folder (it is created if missing)"
            break
    return None


def run(args) -> int:
    problem = check_settings(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        seg_requested = args.seg_model or default_model("segmenter")
        seg = resolve_model(seg_requested) if seg_requested else None
        clf = pick_classifier(args, seg_requested)
    except TumorLensError as exc:  # an unknown name, an unreadable metadata.json
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not seg and not clf:
        print("error: no model: pass --seg-model/--cls-model or ship models under models/", file=sys.stderr)
        return 2
    log.info("segmenter: %s; classifier: %s", seg or "none", clf or "none")
    try:
        pipeline = Pipeline.from_pretrained(seg, clf, runtime=args.runtime)
    except TumorLensError as exc:
        print(f"error: cannot load the models: {exc}", file=sys.stderr)
        return 2
    formats = parse_formats(args.formats) if args.formats is not None else None
    models = report_models(seg, clf) if formats and "report" in formats else ()
    rows = predict(args.inputs, args.out, pipeline, threshold=args.threshold, pixel_spacing_mm=args.pixel_spacing,
                   formats=formats, models=models)
    bad = sum(r["status"] != "ok" for r in rows)
    print(f"{len(rows) - bad} of {len(rows)} files predicted; results in {args.out / 'predictions.csv'}")
    return 0 if bad == 0 else 1
