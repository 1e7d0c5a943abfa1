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
--cam also writes OUT/<stem>_cam.png (column cam_file): the Grad-CAM map of the tumor-type decision,
where a classifier ran.
A format an input cannot have is skipped and said so (log, `skipped` column). A volume's row gives its
slice count, the slices with tumor, the tumor voxels (tumor_pixels, tumor_percent) and, when the
header gives the voxel size, the volume in cm³; its tumor type is that of the slice with the most
tumor (the middle one when none has any), whose number is in `slice`. Pixel spacing comes from a
DICOM/NIfTI header, else --pixel-spacing. What the reader notes about an input (the other series in a
folder, files left out) goes to the log. A bad file gets its error on its row and in the log; the rest
go on. Files are held to the batch budget (medical_io.CLI_BUDGET: 40 Mpx a slice, 2^26 voxels a file,
any number of slices analyzed whole); `nonfinite_pixels` counts NaN/inf values, left out of the window.
Before any model runs, each input (a volume: its middle slice) passes the out-of-scope check fitted
beside the classifier (tumorlens.scope_gate; the shipped classifier's when --cls-model names none):
one that does not look like a brain MRI slice of the trained kind gets status `refused` and no
outputs; columns `in_scope` and `scope_score` say how it scored. --no-scope-check analyzes everything.
Single slices go through the models --batch-size at a time (default 16) while the next inputs are decoded
in threads; volumes whole, one at a time; --batch-size 1 is one input at a time (same rows, same masks).
Output names are decided from the whole input list. Under `torchrun --nproc_per_node N -m tumorlens
predict ...` or `accelerate launch --multi_gpu --num_processes N` (also on CPUs), each process takes its share of the
inputs (its GPU where it has one, else cores / N threads) and the main process writes one predictions.csv,
in input order, the same as one process's on CPUs.
Impossible settings (--threshold outside (0, 1), a --pixel-spacing that is not a positive number, an
unknown --format, an --out that is a file, a --batch-size under 1) are refused before any model loads:
`error: ...`, exit status 2.

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
from .medical_io import SCAN_SUFFIXES
from .model_record import METADATA_NAME, read_record
from .predict_batch import (DEFAULT_BATCH, OUTPUT_COLUMNS, Task, is_main_process, load_pipeline, plan,  # noqa: F401
                            run_distributed, run_jobs, world_size, write_cam)
from .registry import default_model, resolve_model, segmenter_name, segmenter_records
from .scan_outputs import FORMATS, parse_formats
from .scope_gate import ScopeGate, load_gate
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


def predict(inputs: list[str], out: Path, pipeline: Pipeline, *, threshold: float | None = None,
            pixel_spacing_mm: float | None = None, formats: Sequence[str] | None = None,
            models: Sequence = (), scope_gate: ScopeGate | None = None, cam: bool = False,
            batch_size: int = DEFAULT_BATCH) -> list[dict]:
    """Every input (files, folders) through `pipeline`: outputs under `out` (`formats`; None: png and
    what each input supports), rows in out/predictions.csv (returned too), in input order. `pixel_spacing_mm`
    serves files whose header gives none; `models` (`scan_report.ModelSummary`) go into the reports; an
    input `scope_gate` refuses gets status `refused` and no outputs; `cam`: also the Grad-CAM map of each
    tumor type, OUT/<stem>_cam.png. Single slices go through the models `batch_size` at a time, decoded
    ahead (1: one at a time; tumorlens.predict_batch). Under torchrun / accelerate launch (WORLD_SIZE > 1)
    each process takes its share of the inputs and every process returns all rows; the main process
    writes the CSV."""
    out.mkdir(parents=True, exist_ok=True)
    classes = pipeline.classifier.label_names if pipeline.classifier else []
    fields = (["file", "status", "mask_file", "predicted_class"] + [f"prob_{c}" for c in classes]
              + ["tumor_found", "tumor_pixels", "tumor_percent", "area_mm2", "slices", "tumor_slices",
                 "slice", "volume_cm3", "nifti_mask_file", "dicom_seg_file", "secondary_capture_file",
                 "report_file", "cam_file", "nonfinite_pixels", "in_scope", "scope_score", "skipped"])
    jobs = plan(collect_inputs(inputs))  # output names from the whole list: the same however it is split
    task = Task(out, pipeline, threshold=threshold, pixel_spacing_mm=pixel_spacing_mm, formats=formats, models=models,
                scope_gate=scope_gate, cam=cam)
    if world_size() > 1:
        filled, main = run_distributed(jobs, task, batch_size=batch_size, desc="predicting")
    else:
        with tqdm(total=len(jobs), desc="predicting", unit="file") as bar:
            filled, main = run_jobs(jobs, task, batch_size=batch_size, progress=bar.update), True
    rows = []
    for job, values in zip(jobs, filled):
        row = {k: "" for k in fields}
        row["file"] = str(job.path)
        row.update(values)
        rows.append(row)
    if main:
        with open(out / "predictions.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    return rows


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
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                   help=f"single slices per model call, decoded ahead in threads (default {DEFAULT_BATCH}; "
                        "1: one input at a time)")
    p.add_argument("--cam", action="store_true",
                   help="also write OUT/<stem>_cam.png: where the evidence for the tumor type lies (Grad-CAM)")
    p.add_argument("--no-scope-check", action="store_true",
                   help="analyze every input, also those that do not look like a brain MRI slice")
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
    if args.batch_size < 1:
        return f"--batch-size must be a positive whole number, not {args.batch_size}"
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
        pipeline = load_pipeline(seg, clf, runtime=args.runtime)  # under torchrun: this process's share of the cores
    except TumorLensError as exc:
        print(f"error: cannot load the models: {exc}", file=sys.stderr)
        return 2
    formats = parse_formats(args.formats) if args.formats is not None else None
    models = report_models(seg, clf) if formats and "report" in formats else ()
    gate = None if args.no_scope_check else load_gate(clf or default_model("classifier"))
    if gate is None and not args.no_scope_check:
        log.warning("no scope gate beside the classifier: every input is analyzed")
    rows = predict(args.inputs, args.out, pipeline, threshold=args.threshold, pixel_spacing_mm=args.pixel_spacing,
                   formats=formats, models=models, scope_gate=gate, cam=args.cam, batch_size=args.batch_size)
    if not is_main_process():
        return 0 if all(r["status"] in ("ok", "refused") for r in rows) else 1
    refused = sum(r["status"] == "refused" for r in rows)
    bad = sum(r["status"] not in ("ok", "refused") for r in rows)
    print(f"{len(rows) - bad - refused} of {len(rows)} files predicted; results in {args.out / 'predictions.csv'}")
    if refused:
        print(f"{refused} refused: they do not look like a brain MRI slice (status 'refused'); "
              "--no-scope-check analyzes them anyway")
    return 0 if bad == 0 else 1
