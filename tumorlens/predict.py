"""Batch prediction: python -m tumorlens predict INPUT... --out OUT [--seg-model X] [--cls-model Y]

Writes OUT/<stem>_mask.png (0/255, the input's own size) per image and one row per input in
OUT/predictions.csv. A bad file gets its error on its row and in the log; the rest go on.

Segmenters by name (--seg-model NAME), or any model folder or Hub repo id:
{segmenters}
The tumor-type classifier was trained on BRISC 2025 T1c slices: with a segmenter whose inputs it
does not fit ({no_classifier}), no classifier runs unless --cls-model names one."""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .errors import TumorLensError
from .inference import (SEGMENTERS, Pipeline, UnknownModelError, default_model, resolve_model,
                        segmenter_name)
from .preprocess import IMAGE_SUFFIXES, decode_image

log = logging.getLogger("tumorlens.predict")


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Files as given; folders searched recursively for supported images, sorted."""
    found = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(path)  # a missing or odd file still gets its row, with the error
    return found


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, k = path.stem, 2
    while stem in used:
        stem, k = f"{path.stem}_{k}", k + 1
    used.add(stem)
    return stem


def predict(inputs: list[str], out: Path, pipeline: Pipeline, *, threshold: float | None = None,
            pixel_spacing_mm: float | None = None) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    classes = pipeline.classifier.label_names if pipeline.classifier else []
    fields = (["file", "status", "mask_file", "predicted_class"] + [f"prob_{c}" for c in classes]
              + ["tumor_found", "tumor_pixels", "tumor_percent", "area_mm2"])
    rows, used = [], set()
    spacing = (pixel_spacing_mm, pixel_spacing_mm) if pixel_spacing_mm else None
    for path in tqdm(collect_inputs(inputs), desc="predicting", unit="img"):
        row = {k: "" for k in fields}
        row["file"] = str(path)
        try:
            result = pipeline.analyze(decode_image(path), threshold=threshold, pixel_spacing_mm=spacing)
            row["status"] = "ok"
            if result.segmentation is not None:
                mask_name = f"{_unique_stem(path, used)}_mask.png"
                Image.fromarray((result.segmentation.mask * 255).astype(np.uint8)).save(out / mask_name)
                row.update(mask_file=mask_name, tumor_found=result.tumor_found,
                           tumor_pixels=result.segmentation.area_px,
                           tumor_percent=round(100 * result.segmentation.area_fraction, 4))
                if result.area_mm2 is not None:
                    row["area_mm2"] = round(result.area_mm2, 2)
            if result.class_probabilities:
                row["predicted_class"] = result.predicted_class
                row.update({f"prob_{c}": round(p, 6) for c, p in result.class_probabilities.items()})
        except (TumorLensError, OSError) as exc:
            row["status"] = f"error: {exc}"
            log.error("%s: %s", path, exc)
        rows.append(row)
    with open(out / "predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def add_parser(sub) -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<10} {entry.label}" for name, entry in SEGMENTERS.items())
    p = sub.add_parser("predict", help="segment (and classify) images; write masks and predictions.csv",
                       description=__doc__.format(segmenters=listing, no_classifier=", ".join(
                           name for name, entry in SEGMENTERS.items() if not entry.tumor_types)),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files or folders (PNG, JPEG, TIFF, BMP)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seg-model", default=None,
                   help=f"segmenter: a name ({', '.join(SEGMENTERS)}), a model folder or a Hub repo id "
                        "(default: $TUMORLENS_SEG_MODEL, else the shipped brisc2025)")
    p.add_argument("--cls-model", default=None,
                   help="classifier folder or Hub repo id, or 'none' (default: the shipped BRISC one; "
                        "none with a segmenter it does not fit, such as lgg)")
    p.add_argument("--no-cls", "--no-classifier", dest="no_classifier", action="store_true",
                   help="segment only: no tumor type")
    p.add_argument("--threshold", type=float, default=None, help="mask threshold (default: the model's own, tuned on validation data)")
    p.add_argument("--pixel-spacing", type=float, default=None, help="mm per pixel, for areas in mm²")
    p.add_argument("--runtime", choices=("auto", "torch", "onnx"), default="auto")
    p.set_defaults(func=run)
    return p


def pick_classifier(args, seg_requested: str | None) -> str | None:
    """--no-cls or --cls-model none: none; --cls-model X: X; else the shipped one, except beside a
    registry segmenter whose inputs the BRISC classifier does not fit (said in the log)."""
    if args.no_classifier or (args.cls_model or "").lower() == "none":
        return None
    if args.cls_model:
        return resolve_model(args.cls_model, "classifier")
    name = segmenter_name(seg_requested)
    if name and not SEGMENTERS[name].tumor_types:
        log.info("segmenter %s: the tumor-type classifier (trained on BRISC 2025 T1c slices) does not apply, "
                 "so none runs; pass --cls-model to run one anyway", name)
        return None
    return default_model("classifier")


def run(args) -> int:
    try:
        seg_requested = args.seg_model or default_model("segmenter")
        seg = resolve_model(seg_requested) if seg_requested else None
        clf = pick_classifier(args, seg_requested)
    except UnknownModelError as exc:
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
    rows = predict(args.inputs, args.out, pipeline, threshold=args.threshold, pixel_spacing_mm=args.pixel_spacing)
    bad = sum(r["status"] != "ok" for r in rows)
    print(f"{len(rows) - bad} of {len(rows)} images predicted; results in {args.out / 'predictions.csv'}")
    return 0 if bad == 0 else 1
