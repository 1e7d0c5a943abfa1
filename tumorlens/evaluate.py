"""Score a model on its dataset's test data and write eval.json beside it.

    python -m tumorlens.evaluate segmenter models/tumorlens-unet-mobilenetv2-brisc2025
    python -m tumorlens.evaluate classifier models/tumorlens-efficientnet-lite0-brisc2025
    python -m tumorlens.evaluate segmenter models/tumorlens-unet-mobilenetv2-lgg --dataset lgg
    python -m tumorlens.evaluate classifier RUN/model --dataset figshare --fold 3

The model card's numbers are rendered from this file, never typed by hand."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm

from .data import TUMOR_CLASSES, brisc2025, figshare, lgg
from .errors import DataError
from .inference import Classifier, Segmenter
from .metrics import (HEALTHY_MASK_MIN_PX, classification_report, dice, dice_per_patient, iou, pixel_accuracy,
                      summarize_segmentation)
from .models import EVAL_NAME, read_training_info
from .preprocess import decode_image, decode_mask
from .training.precision import hardware_summary


def _leaks(data_root) -> set[str] | None:
    """BRISC test file names that duplicate a train image (None when the audit is unavailable)."""
    try:
        from .audit import brisc_test_leaks
    except ImportError:
        return None
    return set(brisc_test_leaks(data_root))


def _dedup_note(leaks: set[str] | None) -> dict:
    return {"method": "tumorlens.audit: exact pixel hash + perceptual hash confirmed by correlation",
            "removed": sorted(leaks)} if leaks is not None else {"method": "unavailable"}


def _extra_data_check(model_dir, data_root, names: list[str], score) -> dict | None:
    """For a model trained with extra data (--extra-train D): the score without the BRISC test images
    the audit finds in D. Their copies were kept out of training, but a patient's neighbouring slices
    were not; this score shows whether a gain rests on them. score(keep mask) -> metrics."""
    other = (read_training_info(model_dir).get("data") or {}).get("extra_train")
    if not other:
        return None
    from .audit import EXCLUSION_MIN_CORRELATION, MAX_HAMMING, brisc_split_overlap
    found = brisc_split_overlap(other, "test", data_root, progress=False)
    keep = np.asarray([nm not in found for nm in names], dtype=bool)
    return {"extra_train": other, **score(keep), "removed": sorted(found & set(names)),
            "method": f"tumorlens.audit.brisc_split_overlap: BRISC test images within pHash Hamming <= {MAX_HAMMING} "
                      f"and thumbnail correlation >= {EXCLUSION_MIN_CORRELATION} of a {other} image"}


def evaluate_segmenter(model_dir: str | Path, data_root=None, *, runtime: str = "auto", limit: int | None = None,
                       batch_size: int = 16) -> dict:
    seg = Segmenter.from_pretrained(model_dir, runtime=runtime)
    test = brisc2025.load_segmentation(data_root)["test"]
    cls_test = brisc2025.load_classification(data_root)["test"]
    healthy_paths = [r["path"] for r, lab in zip(cls_test.cast_column("image", datasets.Image(decode=False))["image"],
                                                  cls_test["label"]) if TUMOR_CLASSES[lab] == "no_tumor"]
    raw = test.cast_column("image", datasets.Image(decode=False)).cast_column(
        "mask", datasets.Image(decode=False))
    n = len(raw) if limit is None else min(limit, len(raw))
    t0 = time.time()
    records = []
    for i in tqdm(range(0, n, batch_size), desc="BRISC test (tumor slices)", unit="batch"):
        rows = raw.select(range(i, min(i + batch_size, n)))
        images = [decode_image(r["path"]) for r in rows["image"]]
        truths = [decode_mask(r["path"]) for r in rows["mask"]]
        for prob, truth, label, plane, name in zip(seg.probabilities(images), truths, rows["label"], rows["plane"],
                                                   rows["file_name"]):
            pred = seg.from_probability(prob).mask
            if pred.shape != truth.shape:
                raise DataError(name, f"prediction {pred.shape} and mask {truth.shape} differ")
            records.append({"file_name": name, "label": TUMOR_CLASSES[label],
                            "plane": brisc2025.PLANE_LABEL.int2str(plane),
                            "dice": dice(pred, truth), "iou": iou(pred, truth),
                            "pixel_accuracy": pixel_accuracy(pred, truth)})
    healthy_paths = healthy_paths if limit is None else healthy_paths[: max(1, limit // 4)]
    healthy_areas = []
    for i in tqdm(range(0, len(healthy_paths), batch_size), desc="BRISC test (no_tumor)", unit="batch"):
        images = [decode_image(p) for p in healthy_paths[i:i + batch_size]]
        healthy_areas += [int(seg.from_probability(p).mask.sum()) for p in seg.probabilities(images)]
    healthy_areas = np.asarray(healthy_areas)
    summary = summarize_segmentation(records)
    leaks = _leaks(data_root)
    dedup = None
    if leaks is not None:
        kept = [r for r in records if r["file_name"] not in leaks]
        dedup = {"n": len(kept), "dice": summarize_segmentation(kept, ())["dice"], **_dedup_note(leaks & {r["file_name"] for r in records})}
    without_extra = _extra_data_check(model_dir, data_root, [r["file_name"] for r in records], lambda keep: {
        "n": int(keep.sum()), "dice": summarize_segmentation([r for r, k in zip(records, keep) if k], ())["dice"]})
    result = {
        "task": "segmentation",
        "dataset_id": "brisc2025",
        "dataset": "BRISC 2025 segmentation_task/test (official split)",
        "n_tumor_slices": len(records),
        "dice_mean": summary["dice"]["mean"],
        "dice_median": summary["dice"]["median"],
        "miou": summary["iou"]["mean"],
        "pixel_accuracy": summary["pixel_accuracy"]["mean"],
        "by_label": summary["by_label"],
        "by_plane": summary["by_plane"],
        "healthy": {"dataset": "BRISC 2025 classification_task/test/no_tumor", "n": int(len(healthy_areas)),
                    "min_mask_px": HEALTHY_MASK_MIN_PX,
                    "masked": int((healthy_areas >= HEALTHY_MASK_MIN_PX).sum()),
                    "masked_rate": float((healthy_areas >= HEALTHY_MASK_MIN_PX).mean()) if len(healthy_areas) else None},
        "deduplicated": dedup,
        "without_extra_data_copies": without_extra,
        "settings": {"threshold": seg.threshold, "tta_hflip": seg.tta, "min_component_fraction": seg.min_component_fraction,
                     "runtime": seg.runner.runtime, "precision": seg.runner.precision,
                     "resolution": "metrics at each image's native resolution"},
        "per_image": records,
        "seconds": round(time.time() - t0, 1),
        "hardware": hardware_summary(),
        "complete": limit is None,
        "command": "python -m tumorlens.evaluate segmenter " + str(model_dir),
    }
    return result


def _mask_source(clf: Classifier, seg_model: str | Path | None, runtime: str) -> Segmenter | None:
    """The segmenter whose masks a mask-guided classifier crops to: `seg_model`, else the one
    recorded in its config (the one it was trained with), else the shipped default."""
    if not clf.needs_masks:
        return None
    from .inference import default_model, resolve_model
    seg_model = seg_model or clf.pre.config.roi_segmenter or default_model("segmenter")
    if seg_model is None:
        raise DataError(None, "a mask-guided classifier needs a segmenter: pass seg_model")
    return Segmenter.from_pretrained(resolve_model(seg_model), runtime=runtime)


def classify_images(clf: Classifier, seg: Segmenter | None, images: list[np.ndarray]) -> np.ndarray:
    """Class probabilities; a mask-guided classifier gets `seg`'s masks of the same images."""
    masks = [seg.from_probability(p).mask for p in seg.probabilities(images)] if seg is not None else None
    return clf.probabilities(images, masks)


def evaluate_classifier(model_dir: str | Path, data_root=None, *, runtime: str = "auto", limit: int | None = None,
                        batch_size: int = 32, seg_model: str | Path | None = None) -> dict:
    clf = Classifier.from_pretrained(model_dir, runtime=runtime)
    seg = _mask_source(clf, seg_model, runtime)
    test = brisc2025.load_classification(data_root)["test"]
    raw = test.cast_column("image", datasets.Image(decode=False))
    n = len(raw) if limit is None else min(limit, len(raw))
    t0 = time.time()
    probs, names = [], []
    for i in tqdm(range(0, n, batch_size), desc="BRISC classification test", unit="batch"):
        rows = raw.select(range(i, min(i + batch_size, n)))
        probs.append(classify_images(clf, seg, [decode_image(r["path"]) for r in rows["image"]]))
        names += rows["file_name"]
    probs = np.concatenate(probs)
    truth = np.asarray(test["label"][:n])
    pred = probs.argmax(1)
    if list(clf.label_names) != list(TUMOR_CLASSES):
        raise DataError(str(model_dir), f"classifier labels {clf.label_names} are not {list(TUMOR_CLASSES)}")
    report = classification_report(truth, pred, TUMOR_CLASSES)
    leaks = _leaks(data_root)
    dedup = None
    if leaks is not None:
        keep = np.asarray([nm not in leaks for nm in names])
        dedup = {**classification_report(truth[keep], pred[keep], TUMOR_CLASSES), **_dedup_note(leaks & set(names))}
    without_extra = _extra_data_check(model_dir, data_root, names,
                                      lambda keep: classification_report(truth[keep], pred[keep], TUMOR_CLASSES))
    return {
        "task": "classification",
        "dataset_id": "brisc2025",
        "dataset": "BRISC 2025 classification_task/test (official split)",
        **report,
        "deduplicated": dedup,
        "without_extra_data_copies": without_extra,
        "errors": [{"file_name": nm, "truth": TUMOR_CLASSES[t], "predicted": TUMOR_CLASSES[p],
                    "confidence": float(pr.max())} for nm, t, p, pr in zip(names, truth, pred, probs) if t != p],
        "settings": {"runtime": clf.runner.runtime, "precision": clf.runner.precision,
                     "input_size": clf.pre.size, "resize": "letterbox", "tta_hflip": clf.tta,
                     "input": "tumor region from the segmenter's mask" if seg is not None else "whole slice",
                     **({"roi": clf.pre.config.tumor_roi()} if seg is not None else {})},
        "seconds": round(time.time() - t0, 1),
        "hardware": hardware_summary(),
        "complete": limit is None,
        "command": "python -m tumorlens.evaluate classifier " + str(model_dir)
                   + (f" --seg-model {seg_model}" if seg_model else ""),
    }


def _segment_rows(seg: Segmenter, rows: datasets.Dataset, desc: str, batch_size: int = 16):
    """(file_name, predicted mask, true mask) for rows with image and mask columns, at native resolution."""
    raw = rows.cast_column("image", datasets.Image(decode=False)).cast_column("mask", datasets.Image(decode=False))
    for i in tqdm(range(0, len(raw), batch_size), desc=desc, unit="batch"):
        part = raw.select(range(i, min(i + batch_size, len(raw))))
        images = [decode_image(r["bytes"] or r["path"]) for r in part["image"]]
        truths = [decode_mask(r["bytes"] or r["path"]) for r in part["mask"]]
        for prob, truth, name in zip(seg.probabilities(images), truths, part["file_name"]):
            pred = seg.from_probability(prob).mask
            if pred.shape != truth.shape:
                raise DataError(name, f"prediction {pred.shape} and mask {truth.shape} differ")
            yield name, pred.astype(bool), truth.astype(bool)


def _seg_settings(seg: Segmenter) -> dict:
    return {"threshold": seg.threshold, "tta_hflip": seg.tta, "min_component_fraction": seg.min_component_fraction,
            "runtime": seg.runner.runtime, "precision": seg.runner.precision,
            "resolution": "metrics at each image's native resolution"}


def _mean(values, how=np.mean) -> float | None:
    values = list(values)
    return float(how(values)) if values else None


def evaluate_lgg_segmenter(model_dir: str | Path, data_root=None, *, runtime: str = "auto",
                           limit: int | None = None, split: str = "test") -> dict:
    """LGG patient-wise test split: Dice per slice and per patient. Per patient, as Buda et al.
    (2019) report it: one Dice over all of a patient's slices stacked into a volume."""
    seg = Segmenter.from_pretrained(model_dir, runtime=runtime)
    rows = lgg.load(data_root)[split]
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    t0 = time.time()
    patients = dict(zip(rows["file_name"], rows["patient_id"]))
    records, slices = [], []
    for name, pred, truth in _segment_rows(seg, rows, f"LGG {split}"):
        pid = patients[name]
        inter, sp, st = int((pred & truth).sum()), int(pred.sum()), int(truth.sum())
        slices.append((pid, inter, sp, st))
        records.append({"file_name": name, "patient_id": pid, "tumor": st > 0, "dice": dice(pred, truth),
                        "iou": iou(pred, truth), "pixel_accuracy": pixel_accuracy(pred, truth), "pred_px": sp})
    per_patient = dice_per_patient(slices)
    tumor = [r for r in records if r["tumor"]]
    healthy = [r for r in records if not r["tumor"]]
    pp = np.asarray(list(per_patient.values()))
    return {
        "task": "segmentation",
        "dataset_id": "lgg",
        "dataset": f"LGG kaggle_3m (TCGA-LGG, Buda et al. 2019), patient-wise {split} split "
                   "(tumorlens/data/splits/lgg_kaggle_3m.json)",
        "n_patients": len(per_patient),
        "n_slices": len(records),
        "n_tumor_slices": len(tumor),
        "dice_per_patient_mean": float(pp.mean()),
        "dice_per_patient_median": float(np.median(pp)),
        "dice_per_patient": per_patient,
        "dice_mean": _mean(r["dice"] for r in tumor),
        "dice_median": _mean((r["dice"] for r in tumor), np.median),
        "dice_all_slices_mean": _mean(r["dice"] for r in records),
        "miou": _mean(r["iou"] for r in tumor),
        "pixel_accuracy": _mean(r["pixel_accuracy"] for r in records),
        "healthy": {"dataset": f"LGG {split} slices with an empty mask", "n": len(healthy),
                    "min_mask_px": HEALTHY_MASK_MIN_PX,
                    "masked": sum(r["pred_px"] >= HEALTHY_MASK_MIN_PX for r in healthy),
                    "masked_rate": float(np.mean([r["pred_px"] >= HEALTHY_MASK_MIN_PX for r in healthy])) if healthy else None},
        "settings": _seg_settings(seg),
        "per_image": records,
        "seconds": round(time.time() - t0, 1),
        "hardware": hardware_summary(),
        "complete": limit is None,
        "command": f"python -m tumorlens.evaluate segmenter {model_dir} --dataset lgg",
    }


def figshare_fold_rows(fold: int, data_root=None, limit: int | None = None) -> datasets.Dataset:
    ds = figshare.load(data_root)["train"]
    rows = ds.select(np.flatnonzero(np.asarray(ds["fold"]) == fold))
    return rows if limit is None else rows.select(range(min(limit, len(rows))))


def evaluate_figshare_fold(model_dir: str | Path, kind: str, fold: int, data_root=None, *, runtime: str = "auto",
                           limit: int | None = None) -> dict:
    """One fold of the author's patient-wise 5-fold cross-validation: the fold's slices as test."""
    rows = figshare_fold_rows(fold, data_root, limit)
    t0 = time.time()
    common = {"dataset_id": "figshare", "fold": fold,
              "dataset": f"Figshare (Cheng et al. 2017), fold {fold} of cvind5fold.mat (patient-wise) as test"}
    if kind == "segmenter":
        seg = Segmenter.from_pretrained(model_dir, runtime=runtime)
        labels = dict(zip(rows["file_name"], rows["label"]))
        records = [{"file_name": n, "label": TUMOR_CLASSES[labels[n]], "dice": dice(p, t), "iou": iou(p, t),
                    "pixel_accuracy": pixel_accuracy(p, t)}
                   for n, p, t in _segment_rows(seg, rows, f"Figshare fold {fold}")]
        summary = summarize_segmentation(records, ("label",))
        return {"task": "segmentation", **common, "n_tumor_slices": len(records),
                "dice_mean": summary["dice"]["mean"], "dice_median": summary["dice"]["median"],
                "miou": summary["iou"]["mean"], "pixel_accuracy": summary["pixel_accuracy"]["mean"],
                "by_label": summary["by_label"], "settings": _seg_settings(seg), "per_image": records,
                "seconds": round(time.time() - t0, 1), "hardware": hardware_summary(), "complete": limit is None}
    clf = Classifier.from_pretrained(model_dir, runtime=runtime)
    if clf.needs_masks:
        raise DataError(str(model_dir), "Figshare folds score whole-slice classifiers only")
    names = list(clf.label_names)
    raw = rows.cast_column("image", datasets.Image(decode=False))
    probs = np.concatenate([clf.probabilities([decode_image(r["path"]) for r in raw.select(
        range(i, min(i + 32, len(raw))))["image"]]) for i in range(0, len(raw), 32)])
    truth = np.asarray([names.index(TUMOR_CLASSES[lab]) for lab in rows["label"]])
    pred = probs.argmax(1)
    return {"task": "classification", **common, **classification_report(truth, pred, names),
            "errors": [{"file_name": n, "truth": names[t], "predicted": names[p], "confidence": float(pr.max())}
                       for n, t, p, pr in zip(rows["file_name"], truth, pred, probs) if t != p],
            "settings": {"runtime": clf.runner.runtime, "precision": clf.runner.precision, "input_size": clf.pre.size,
                         "tta_hflip": clf.tta},
            "seconds": round(time.time() - t0, 1), "hardware": hardware_summary(), "complete": limit is None}


def plot_confusion(report: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.asarray(report["confusion_matrix"])
    names = report["class_names"]
    fig, ax = plt.subplots(figsize=(5, 4.4), dpi=120)
    ax.imshow(cm, cmap="Blues")
    for (r, c), v in np.ndenumerate(cm):
        ax.text(c, r, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"BRISC 2025 test: accuracy {report['accuracy'] * 100:.2f}%")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def evaluate_model(folder: str | Path, kind: str, data_root=None, *, runtime: str = "auto",
                   limit: int | None = None, dataset: str = "brisc2025", fold: int | None = None,
                   seg_model: str | Path | None = None) -> dict:
    folder = Path(folder)
    if kind not in ("segmenter", "classifier"):
        raise ValueError(f"kind must be segmenter or classifier, not {kind!r}")
    if dataset == "lgg":
        if kind != "segmenter":
            raise ValueError("LGG has masks only: evaluate a segmenter on it")
        result = evaluate_lgg_segmenter(folder, data_root, runtime=runtime, limit=limit)
    elif dataset == "figshare":
        if fold is None:
            raise ValueError("Figshare is scored one cross-validation fold at a time: give fold")
        result = evaluate_figshare_fold(folder, kind, fold, data_root, runtime=runtime, limit=limit)
    elif kind == "segmenter":
        result = evaluate_segmenter(folder, data_root, runtime=runtime, limit=limit)
    elif kind == "classifier":
        result = evaluate_classifier(folder, data_root, runtime=runtime, limit=limit, seg_model=seg_model)
        plot_confusion(result, folder / "confusion_matrix.png")
    (folder / EVAL_NAME).write_text(json.dumps(result, indent=1, default=float) + "\n")
    return result


def headline(result: dict) -> str:
    if result.get("dataset_id") == "lgg":
        return (f"LGG test: Dice per patient mean {result['dice_per_patient_mean']:.4f} (n={result['n_patients']}); "
                f"per tumor slice mean {result['dice_mean']:.4f} median {result['dice_median']:.4f} "
                f"(n={result['n_tumor_slices']}); healthy slices masked: {result['healthy']['masked']}/{result['healthy']['n']}")
    if result.get("dataset_id") == "figshare":
        if result["task"] == "segmentation":
            return f"Figshare fold {result['fold']}: Dice mean {result['dice_mean']:.4f} (n={result['n_tumor_slices']})"
        return f"Figshare fold {result['fold']}: accuracy {result['accuracy'] * 100:.2f}% (n={result['n']})"
    if result["task"] == "segmentation":
        h = result["healthy"]
        return (f"BRISC test: Dice mean {result['dice_mean']:.4f} median {result['dice_median']:.4f} "
                f"mIoU {result['miou']:.4f} pixel acc {result['pixel_accuracy']:.4f} (n={result['n_tumor_slices']}); "
                f"healthy slices masked >= {h['min_mask_px']} px: {h['masked']}/{h['n']}")
    d = result.get("deduplicated") or {}
    return (f"BRISC test: accuracy {result['accuracy'] * 100:.2f}% macro F1 {result['macro_f1']:.4f} (n={result['n']})"
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
    p.add_argument("--dataset", choices=("brisc2025", "lgg", "figshare"), default="brisc2025")
    p.add_argument("--fold", type=int, help="Figshare fold scored as test")
    p.add_argument("--data-root", help="the dataset's root")
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
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.variant_of and (args.kind != "classifier" or args.limit or args.dataset != "brisc2025"):
        print("error: --variant-of records full BRISC test scores of classifiers only (no --limit)", file=sys.stderr)
        return 2
    if args.variant_of:
        record_variant(args.variant_of, variant_summary(args.model, result, args.variant_name or Path(args.model).name))
        if args.card:
            from .hub import write_card
            write_card(args.variant_of, args.kind)
    elif args.card and args.dataset != "figshare":  # fold models are measurements, not releases
        from .hub import write_card
        write_card(args.model, args.kind)
    print(headline(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
