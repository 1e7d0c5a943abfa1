"""Batch prediction: python -m tumorlens predict INPUT... --out OUT [--seg-model X] [--cls-model Y]

Writes OUT/<stem>_mask.png (0/255, the input's own size) per image and one row per input in
OUT/predictions.csv. A bad file gets its error on its row and in the log; the rest go on."""

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
from .inference import Pipeline, default_model
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
    p = sub.add_parser("predict", help="segment (and classify) images; write masks and predictions.csv",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files or folders (PNG, JPEG, TIFF, BMP)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seg-model", default=None, help="segmenter folder or Hub repo id (default: the shipped one)")
    p.add_argument("--cls-model", default=None, help="classifier folder or Hub repo id (default: the shipped one)")
    p.add_argument("--no-classifier", action="store_true")
    p.add_argument("--threshold", type=float, default=None, help="mask threshold (default: the model's own, tuned on validation data)")
    p.add_argument("--pixel-spacing", type=float, default=None, help="mm per pixel, for areas in mm²")
    p.add_argument("--runtime", choices=("auto", "torch", "onnx"), default="auto")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    seg = args.seg_model or default_model("segmenter")
    clf = None if args.no_classifier else (args.cls_model or default_model("classifier"))
    if not seg and not clf:
        print("error: no model: pass --seg-model/--cls-model or ship models under models/", file=sys.stderr)
        return 2
    pipeline = Pipeline.from_pretrained(seg, clf, runtime=args.runtime)
    rows = predict(args.inputs, args.out, pipeline, threshold=args.threshold, pixel_spacing_mm=args.pixel_spacing)
    bad = sum(r["status"] != "ok" for r in rows)
    print(f"{len(rows) - bad} of {len(rows)} images predicted; results in {args.out / 'predictions.csv'}")
    return 0 if bad == 0 else 1
