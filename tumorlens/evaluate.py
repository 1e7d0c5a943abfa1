"""Score a model on its dataset's test data and write eval.json beside it.

    python -m tumorlens.evaluate segmenter models/tumorlens-unet-mobilenetv2-brisc2025
    python -m tumorlens.evaluate classifier models/tumorlens-efficientnet-lite0-brisc2025
    python -m tumorlens.evaluate segmenter models/tumorlens-unet-efficientnet-lite2-lgg --dataset lgg
    python -m tumorlens.evaluate classifier RUN/model --dataset figshare --fold 3

One evaluator per model kind (score_segmenter, score_classifier) and one result skeleton (`evaluate`);
which rows are scored, and how (per slice, per patient, one fold), is the dataset's record's
(tumorlens.data.registry). The model card's numbers are rendered from this file, never typed by hand."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm

from .data import TUMOR_CLASSES
from .data.registry import DatasetRecord, dataset_names, get_dataset
from .errors import ConfigError, DataError, TumorLensError
from .inference import Classifier, Segmenter
from .metrics import (HEALTHY_MASK_MIN_PX, calibration_report, classification_report, dice, dice_definitions,
                      dice_per_patient, iou, pixel_accuracy, size_groups, softmax, summarize_segmentation)
from .models import EVAL_NAME, read_training_info
from .preprocess import decode_image, decode_mask
from .hardware import hardware_summary

DEFAULT_DATASET = "brisc2025"


def _leaks(root) -> set[str] | None:
    """BRISC test file names that duplicate a train image (None when the audit is unavailable)."""
    try:
        from .audit import brisc_test_leaks
    except ImportError:
        return None
    return set(brisc_test_leaks(root))


def _dedup_note(leaks: set[str] | None) -> dict:
    return {"method": "tumorlens.audit: exact pixel hash + perceptual hash confirmed by correlation",
            "removed": sorted(leaks)} if leaks is not None else {"method": "unavailable"}


def _extra_data_check(model_dir, root, names: list[str], score) -> dict | None:
    """For a model trained with extra data (--extra-train D): the score without the BRISC test images
    the audit finds in D. Their copies were kept out of training, but a patient's neighbouring slices
    were not; this score shows whether a gain rests on them. score(keep mask) -> metrics."""
    other = (read_training_info(model_dir).get("data") or {}).get("extra_train")
    if not other:
        return None
    from .audit import EXCLUSION_MIN_CORRELATION, MAX_HAMMING, brisc_split_overlap
    found = brisc_split_overlap(other, "test", root, progress=False)
    keep = np.asarray([nm not in found for nm in names], dtype=bool)
    return {"extra_train": other, **score(keep), "removed": sorted(found & set(names)),
            "method": f"tumorlens.audit.brisc_split_overlap: BRISC test images within pHash Hamming <= {MAX_HAMMING} "
                      f"and thumbnail correlation >= {EXCLUSION_MIN_CORRELATION} of a {other} image"}


def _rows(record: DatasetRecord, root, task: str, fold: int | None, limit: int | None) -> datasets.Dataset:
    rows = record.test_rows(root, task, fold)
    return rows if limit is None else rows.select(range(min(limit, len(rows))))


def _column_value(rows: datasets.Dataset, column: str, value):
    feature = rows.features[column]
    return feature.int2str(value) if isinstance(feature, datasets.ClassLabel) else value


def _segment_rows(seg: Segmenter, rows: datasets.Dataset, desc: str, batch_size: int = 16):
    """(row index, file_name, predicted mask, true mask) for rows with image and mask columns, at native resolution."""
    raw = rows.cast_column("image", datasets.Image(decode=False)).cast_column("mask", datasets.Image(decode=False))
    for i in tqdm(range(0, len(raw), batch_size), desc=desc, unit="batch"):
        part = raw.select(range(i, min(i + batch_size, len(raw))))
        images = [decode_image(r["bytes"] or r["path"]) for r in part["image"]]
        truths = [decode_mask(r["bytes"] or r["path"]) for r in part["mask"]]
        for k, (prob, truth, name) in enumerate(zip(seg.probabilities(images), truths, part["file_name"])):
            pred = seg.from_probability(prob).mask
            if pred.shape != truth.shape:
                raise DataError(name, f"prediction {pred.shape} and mask {truth.shape} differ")
            yield i + k, name, pred.astype(bool), truth.astype(bool)


def _seg_settings(seg: Segmenter) -> dict:
    return {"threshold": seg.threshold, "tta_hflip": seg.tta, "min_component_fraction": seg.min_component_fraction,
            "runtime": seg.runner.runtime, "precision": seg.runner.precision,
            "resolution": "metrics at each image's native resolution"}


def _mean(values, how=np.mean) -> float | None:
    values = list(values)
    return float(how(values)) if values else None


def _healthy(record: DatasetRecord, seg: Segmenter, root, records: list[dict], limit: int | None,
             batch_size: int = 16) -> dict | None:
    """How often the segmenter masks a healthy slice: the test split's no_tumor class, or its slices with
    an empty mask (as the record says). `pred_px`: the predicted area on each healthy slice."""
    if record.healthy is None:
        return None
    if record.healthy == "empty_masks":
        areas = [r["pred_px"] for r in records if not r["tumor"]]
    else:
        cls_test = record.test_rows(root, "classification", None)
        paths = [r["path"] for r, lab in zip(cls_test.cast_column("image", datasets.Image(decode=False))["image"],
                                              cls_test["label"]) if TUMOR_CLASSES[lab] == record.healthy]
        paths = paths if limit is None else paths[: max(1, limit // 4)]
        areas = []
        for i in tqdm(range(0, len(paths), batch_size), desc=f"{record.short} test ({record.healthy})", unit="batch"):
            images = [decode_image(p) for p in paths[i:i + batch_size]]
            areas += [int(seg.from_probability(p).mask.sum()) for p in seg.probabilities(images)]
    masked = [a >= HEALTHY_MASK_MIN_PX for a in areas]
    return {"dataset": record.healthy_text.format(split="test"), "n": len(masked), "min_mask_px": HEALTHY_MASK_MIN_PX,
            "masked": int(sum(masked)), "masked_rate": float(np.mean(masked)) if masked else None,
            "pred_px": areas}


def score_segmenter(record: DatasetRecord, model_dir, root, fold, *, runtime: str, limit: int | None) -> dict:
    """Per-slice scores (Dice, IoU, pixel accuracy over tumor slices), per patient as well where the
    record scores per patient (Buda et al. 2019: one Dice over all of a patient's slices stacked)."""
    seg = Segmenter.from_pretrained(model_dir, runtime=runtime)
    rows = _rows(record, root, "segmentation", fold, limit)
    per_patient, empty_masks = record.scoring == "per_patient", record.healthy == "empty_masks"
    columns = {c: rows[c] for c in record.per_image_columns}
    records, slices, overlaps = [], [], []
    desc = f"{record.short} fold {fold}" if record.folds else f"{record.short} test"
    for i, name, pred, truth in _segment_rows(seg, rows, desc):
        rec = {"file_name": name, **{c: _column_value(rows, c, v[i]) for c, v in columns.items()}}
        inter, sp, st = int((pred & truth).sum()), int(pred.sum()), int(truth.sum())
        if per_patient:
            slices.append((rec["patient_id"], inter, sp, st))
        rec.update({"tumor": st > 0} if empty_masks else {})
        rec.update({"dice": dice(pred, truth), "iou": iou(pred, truth), "pixel_accuracy": pixel_accuracy(pred, truth)})
        rec.update({"pred_px": sp, "true_px": st})
        records.append(rec)
        overlaps.append(inter)
    tumor = [r for r in records if r["tumor"]] if empty_masks else records
    sizes, size_rule = size_groups([r["true_px"] for r in tumor])
    for r, size in zip(tumor, sizes):
        r["size"] = size
    out = {}
    if per_patient:
        pp_scores = dice_per_patient(slices)
        pp = np.asarray(list(pp_scores.values()))
        out.update({"n_patients": len(pp_scores), "n_slices": len(records)})
    out["n_tumor_slices"] = len(tumor)
    if per_patient:
        out.update({"dice_per_patient_mean": float(pp.mean()), "dice_per_patient_median": float(np.median(pp)),
                    "dice_per_patient": pp_scores})
    out.update({"dice_mean": _mean(r["dice"] for r in tumor), "dice_median": _mean((r["dice"] for r in tumor), np.median)})
    if empty_masks:
        out["dice_all_slices_mean"] = _mean(r["dice"] for r in records)
    out.update({"miou": _mean(r["iou"] for r in tumor), "pixel_accuracy": _mean(r["pixel_accuracy"] for r in records)})
    if record.by_groups:
        summary = summarize_segmentation(records, record.by_groups)
        out.update({f"by_{g}": summary[f"by_{g}"] for g in record.by_groups})
    out["by_size"] = {**summarize_segmentation(tumor, ("size",))["by_size"], "groups": size_rule}
    healthy = _healthy(record, seg, root, records, limit)
    if healthy is not None:
        healthy_px = healthy.pop("pred_px")
        out["healthy"] = healthy
    counts = [(o, r["pred_px"], r["true_px"]) for o, r in zip(overlaps, records) if not empty_masks or r["tumor"]]
    out["dice_definitions"] = dice_definitions(counts, healthy_px if healthy is not None else [])
    dice_of = lambda keep: summarize_segmentation([r for r, k in zip(records, keep) if k], ())["dice"]  # noqa: E731
    return {"metrics": out, "names": [r["file_name"] for r in records],
            "subset": lambda keep: {"n": int(keep.sum()), "dice": dice_of(keep)},
            "settings": _seg_settings(seg), "per_image": records}


def _mask_source(clf: Classifier, seg_model: str | Path | None, runtime: str) -> Segmenter | None:
    """The segmenter whose masks a mask-guided classifier crops to: `seg_model`, else the one
    recorded in its config (the one it was trained with), else the shipped default."""
    if not clf.needs_masks:
        return None
    from .registry import default_model, resolve_model
    seg_model = seg_model or clf.pre.config.roi_segmenter or default_model("segmenter")
    if seg_model is None:
        raise DataError(None, "a mask-guided classifier needs a segmenter: pass seg_model")
    return Segmenter.from_pretrained(resolve_model(seg_model), runtime=runtime)


def classify_images(clf: Classifier, seg: Segmenter | None, images: list[np.ndarray]) -> np.ndarray:
    """Class probabilities; a mask-guided classifier gets `seg`'s masks of the same images."""
    masks = [seg.from_probability(p).mask for p in seg.probabilities(images)] if seg is not None else None
    return clf.probabilities(images, masks)


def score_classifier(record: DatasetRecord, model_dir, root, fold, *, runtime: str, limit: int | None,
                     seg_model=None, batch_size: int = 32) -> dict:
    """Accuracy, macro F1, per-class scores and the confusion matrix in the classifier's label space;
    every class of the dataset must be one of the classifier's labels."""
    clf = Classifier.from_pretrained(model_dir, runtime=runtime)
    if clf.needs_masks and not record.roi_classifiers:
        raise DataError(str(model_dir), f"{record.short} scores whole-slice classifiers only")
    labels = list(clf.label_names)
    if not set(record.class_names or ()) <= set(labels):
        raise DataError(str(model_dir), f"classifier labels {labels} do not cover {list(record.class_names or ())}")
    seg = _mask_source(clf, seg_model, runtime)
    rows = _rows(record, root, "classification", fold, limit)
    raw = rows.cast_column("image", datasets.Image(decode=False))
    probs, names = [], []
    desc = f"{record.short} fold {fold}" if record.folds else f"{record.short} classification test"
    for i in tqdm(range(0, len(raw), batch_size), desc=desc, unit="batch"):
        part = raw.select(range(i, min(i + batch_size, len(raw))))
        probs.append(classify_images(clf, seg, [decode_image(r["bytes"] or r["path"]) for r in part["image"]]))
        names += part["file_name"]
    probs = np.concatenate(probs)
    truth = np.asarray([labels.index(_column_value(rows, "label", lab)) for lab in rows["label"]])
    pred = probs.argmax(1)
    metrics = {**classification_report(truth, pred, labels), "calibration": _calibration(probs, truth, clf.temperature)}
    return {"metrics": metrics, "names": names,
            "subset": lambda keep: classification_report(truth[keep], pred[keep], labels),
            "errors": [{"file_name": nm, "truth": labels[t], "predicted": labels[p], "confidence": float(pr.max())}
                       for nm, t, p, pr in zip(names, truth, pred, probs) if t != p],
            "settings": {"runtime": clf.runner.runtime, "precision": clf.runner.precision,
                         "input_size": clf.pre.size, "resize": "letterbox", "tta_hflip": clf.tta,
                         "input": "tumor region from the segmenter's mask" if seg is not None else "whole slice",
                         **({"roi": clf.pre.config.tumor_roi()} if seg is not None else {})}}


def _calibration(probs: np.ndarray, truth: np.ndarray, temperature: float) -> dict:
    """ECE, Brier and NLL of the answers as given (temperature-scaled) and as the raw logits would
    give them: softmax(T * log p) recovers softmax(logits) exactly."""
    raw = softmax(np.log(np.clip(probs, 1e-30, None)) * temperature)
    return {"temperature": temperature, "before": calibration_report(raw, truth), "after": calibration_report(probs, truth),
            "definition": "ECE over 15 equal-width bins of top-class confidence; Brier summed over classes; "
                          "temperature chosen on the validation split (inference_config.json)"}


TASK_OF = {"segmenter": "segmentation", "classifier": "classification"}
SCORERS = {"segmenter": score_segmenter, "classifier": score_classifier}


def evaluate(model_dir: str | Path, kind: str, dataset: str = DEFAULT_DATASET, root=None, *, fold: int | None = None,
             runtime: str = "auto", limit: int | None = None, seg_model: str | Path | None = None) -> dict:
    """Score a `kind` model on `dataset`'s test data (its record says which rows, and how to score them).
    `root`: the dataset's own folder (None: its usual place). One result skeleton for every dataset:
    task, dataset_id, [fold], dataset, the metrics, [deduplicated, without_extra_data_copies where the
    audit knows the test split], [errors], settings, [per_image], seconds, hardware, complete, command."""
    if kind not in TASK_OF:
        raise ConfigError(f"kind must be segmenter or classifier, not {kind!r}")
    record, task = get_dataset(dataset), TASK_OF[kind]
    if not record.supports(task):
        raise ConfigError(f"{record.title} has no {task} data: evaluate a "
                          f"{' or '.join(k for k, t in TASK_OF.items() if record.supports(t))} on it")
    if record.folds and fold is None:
        raise ConfigError(f"{record.title} is scored one cross-validation fold at a time: give fold")
    t0 = time.time()
    kwargs = {"seg_model": seg_model} if kind == "classifier" else {}
    scored = SCORERS[kind](record, model_dir, root, fold if record.folds else None, runtime=runtime, limit=limit,
                           **kwargs)
    result = {"task": task, "dataset_id": record.name, **({"fold": fold} if record.folds else {}),
              "dataset": record.describe_test(fold, task=task), **scored["metrics"]}
    if record.audited_test:
        names, leaks = scored["names"], _leaks(root)
        dedup = None
        if leaks is not None:
            keep = np.asarray([nm not in leaks for nm in names], dtype=bool)
            dedup = {**scored["subset"](keep), **_dedup_note(leaks & set(names))}
        result["deduplicated"] = dedup
        result["without_extra_data_copies"] = _extra_data_check(model_dir, root, names, scored["subset"])
    if "errors" in scored:
        result["errors"] = scored["errors"]
    result["settings"] = scored["settings"]
    if "per_image" in scored:
        result["per_image"] = scored["per_image"]
    return {**result, "seconds": round(time.time() - t0, 1), "hardware": hardware_summary(), "complete": limit is None,
            "command": f"python -m tumorlens.evaluate {kind} {model_dir}"
                       + (f" --dataset {record.name}" if record.name != DEFAULT_DATASET else "")
                       + (f" --fold {fold}" if record.folds else "") + (f" --seg-model {seg_model}" if seg_model else "")}


def plot_confusion(report: dict, path: Path, title: str = "BRISC 2025") -> Path:
    from .visualize import plot_confusion_matrix
    return plot_confusion_matrix(report["confusion_matrix"], report["class_names"],
                                 f"{title} test: accuracy {report['accuracy'] * 100:.2f}%", path, dpi=120)


def evaluate_model(folder: str | Path, kind: str, root=None, *, runtime: str = "auto",
                   limit: int | None = None, dataset: str = DEFAULT_DATASET, fold: int | None = None,
                   seg_model: str | Path | None = None) -> dict:
    """`evaluate`, written to the model folder's eval.json (and, for a classifier of a released
    dataset, confusion_matrix.png). `root`: the dataset's own folder."""
    folder = Path(folder)
    result = evaluate(folder, kind, dataset, root, fold=fold, runtime=runtime, limit=limit, seg_model=seg_model)
    record = get_dataset(dataset)
    if kind == "classifier" and record.releases:
        plot_confusion(result, folder / "confusion_matrix.png", record.title)
    earlier = json.loads((folder / EVAL_NAME).read_text()) if (folder / EVAL_NAME).is_file() else {}
    if "out_of_scope" in earlier:  # the scope gate's figures (tumorlens.bench.scope_gate run) stay with its folder
        result["out_of_scope"] = earlier["out_of_scope"]
    (folder / EVAL_NAME).write_text(json.dumps(result, indent=1, default=float) + "\n")
    return result


def headline(result: dict) -> str:
    record = get_dataset(result.get("dataset_id", DEFAULT_DATASET))
    where = f"{record.short} fold {result['fold']}" if "fold" in result else f"{record.short} test"
    if result["task"] == "segmentation" and "dice_per_patient_mean" in result:
        h = result.get("healthy") or {}
        return (f"{where}: Dice per patient mean {result['dice_per_patient_mean']:.4f} (n={result['n_patients']}); "
                f"per tumor slice mean {result['dice_mean']:.4f} median {result['dice_median']:.4f} "
                f"(n={result['n_tumor_slices']}); healthy slices masked: {h.get('masked')}/{h.get('n')}")
    if result["task"] == "segmentation":
        h = result.get("healthy")
        return (f"{where}: Dice mean {result['dice_mean']:.4f} median {result['dice_median']:.4f} "
                f"mIoU {result['miou']:.4f} pixel acc {result['pixel_accuracy']:.4f} (n={result['n_tumor_slices']})"
                + (f"; healthy slices masked >= {h['min_mask_px']} px: {h['masked']}/{h['n']}" if h else ""))
    d = result.get("deduplicated") or {}
    return (f"{where}: accuracy {result['accuracy'] * 100:.2f}% macro F1 {result['macro_f1']:.4f} (n={result['n']})"
            + (f"; de-duplicated accuracy {d['accuracy'] * 100:.2f}% (n={d['n']})" if d.get("n") else ""))


VARIANTS_NAME = "variants.json"  # alternatives scored the same way as the shipped model, beside its eval.json


def variant_summary(folder: str | Path, result: dict, name: str) -> dict:
    """What a card needs of an alternative: its validation and test numbers and how it was made."""
    info = read_training_info(folder)
    keys = ("accuracy", "macro_f1", "n") if result["task"] == "classification" else ("dice_mean", "dice_median", "miou")
    dedup = result.get("deduplicated") or {}
    return {"name": name, "folder": str(folder), **{k: result.get(k) for k in keys},
            "dedup_accuracy": dedup.get("accuracy"), "dedup_n": dedup.get("n"),
            "input": (result.get("settings") or {}).get("input"),
            "val_metrics": info.get("val_metrics"), "setup": info.get("setup"),
            "train_seconds": info.get("train_seconds"), "schedule_note": info.get("schedule_note"),
            "command": result.get("command")}


def record_variant(shipped: str | Path, summary: dict) -> Path:
    """Add (or replace, by name) an alternative's summary in the shipped model's variants.json."""
    path = Path(shipped) / VARIANTS_NAME
    rows = [r for r in (json.loads(path.read_text()) if path.is_file() else []) if r["name"] != summary["name"]]
    path.write_text(json.dumps(rows + [summary], indent=1, default=float) + "\n")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tumorlens.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=("segmenter", "classifier"))
    p.add_argument("model", help="model folder (eval.json is written into it)")
    p.add_argument("--dataset", choices=dataset_names(), default=DEFAULT_DATASET)
    p.add_argument("--fold", type=int, help="cross-validation fold scored as test (Figshare)")
    p.add_argument("--data-root", help="the dataset's own folder, its root (default: its usual place)")
    p.add_argument("--runtime", choices=("auto", "torch", "onnx"), default="auto")
    p.add_argument("--limit", type=int, help="score only the first N test images (smoke runs)")
    p.add_argument("--card", action=argparse.BooleanOptionalAction, default=True, help="re-render README.md from eval.json")
    p.add_argument("--seg-model", help="segmenter whose masks a mask-guided classifier crops to (default: shipped)")
    p.add_argument("--variant-of", metavar="SHIPPED", help="an alternative to the model in SHIPPED: record its numbers "
                   "in SHIPPED/variants.json (its card lists them) instead of rendering a card of its own")
    p.add_argument("--variant-name", help="the alternative's name in variants.json (default: its folder name)")
    args = p.parse_args(argv)
    try:
        result = evaluate_model(args.model, args.kind, args.data_root, runtime=args.runtime, limit=args.limit,
                                dataset=args.dataset, fold=args.fold, seg_model=args.seg_model)
    except (TumorLensError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.variant_of and (args.kind != "classifier" or args.limit or args.dataset != DEFAULT_DATASET):
        print("error: --variant-of records full BRISC test scores of classifiers only (no --limit)", file=sys.stderr)
        return 2
    if args.variant_of:
        record_variant(args.variant_of, variant_summary(args.model, result, args.variant_name or Path(args.model).name))
        if args.card:
            from .hub import write_card
            write_card(args.variant_of, args.kind)
    elif args.card and get_dataset(args.dataset).releases:  # fold models are measurements, not releases
        from .hub import write_card
        write_card(args.model, args.kind)
    print(headline(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
