"""Segmentation and classification metrics, with the edge cases defined once.

Dice/IoU of two empty masks is 1 (nothing to find, nothing found); of exactly one empty mask, 0."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

HEALTHY_MASK_MIN_PX = 50  # a mask this large on a healthy 512 px slice counts as a false alarm (the issues' bar)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(p, t).sum()) / total


def volume_dice(slices: Iterable[tuple[int, int, int]]) -> float:
    """One Dice over a stack of slices, from per-slice (overlap, predicted px, true px) counts:
    how Buda et al. (2019) score a patient. An empty volume predicted empty scores 1."""
    inter = pred_px = true_px = 0
    for i, p, t in slices:
        inter, pred_px, true_px = inter + i, pred_px + p, true_px + t
    return 1.0 if pred_px + true_px == 0 else 2.0 * inter / (pred_px + true_px)


def dice_per_patient(slices: Iterable[tuple[str, int, int, int]]) -> dict[str, float]:
    """volume_dice for each patient, from per-slice (patient id, overlap, predicted px, true px)."""
    counts: dict[str, list] = {}
    for pid, *c in slices:
        counts.setdefault(pid, []).append(c)
    return {pid: volume_dice(c) for pid, c in counts.items()}


DICE_DEFINITIONS = {  # name in eval.json -> what it averages; the first is the headline
    "per_tumor_slice_mean": "mean of per-slice Dice over the slices with a tumor (the seeds' and papers' number)",
    "all_slices_mean": "mean of per-slice Dice over every scored slice; a healthy slice scores 1 when nothing "
                       "is predicted on it, else 0",
    "pooled": "one Dice over all pixels of all scored slices: 2 x summed overlap / (summed predicted + summed true)",
}


def dice_definitions(tumor: Sequence[tuple[int, int, int]], healthy_pred_px: Sequence[int]) -> dict:
    """The three Dice definitions of DICE_DEFINITIONS, from (overlap, predicted px, true px) of each
    tumor slice and the predicted area of each healthy (empty-truth) slice."""
    tumor_dice = [1.0 if p + t == 0 else 2.0 * i / (p + t) for i, p, t in tumor]
    healthy_dice = [1.0 if p == 0 else 0.0 for p in healthy_pred_px]
    counts = list(tumor) + [(0, int(p), 0) for p in healthy_pred_px]
    values = {"per_tumor_slice_mean": (tumor_dice, len(tumor_dice)),
              "all_slices_mean": (tumor_dice + healthy_dice, len(counts)),
              "pooled": (None, len(counts))}
    out = {}
    for name, (scores, n) in values.items():
        value = volume_dice(counts) if scores is None else (float(np.mean(scores)) if scores else None)
        out[name] = {"value": value, "n_slices": n, "definition": DICE_DEFINITIONS[name]}
    return out


def size_groups(areas: Sequence[int]) -> tuple[list[str], dict]:
    """Each tumor's size group by the tertiles of `areas` (true tumor px): small / medium / large, and
    the cut-offs used (px at native resolution)."""
    a = np.asarray(areas, dtype=np.float64)
    if a.size == 0:
        return [], {}
    low, high = (float(v) for v in np.quantile(a, [1 / 3, 2 / 3]))
    names = ["small" if x <= low else "medium" if x <= high else "large" for x in a]
    return names, {"small": f"<= {low:.0f} px", "medium": f"{low:.0f}-{high:.0f} px", "large": f"> {high:.0f} px",
                   "rule": "tertiles of the true tumor area over the scored tumor slices"}


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    union = int(np.logical_or(p, t).sum())
    return 1.0 if union == 0 else int(np.logical_and(p, t).sum()) / union


def pixel_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    return float((p == t).mean())


def _stats(values: Sequence[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)), "std": float(v.std())}


def summarize_segmentation(records: Iterable[dict], group_keys: Sequence[str] = ("label", "plane")) -> dict:
    """records: dicts with dice, iou, pixel_accuracy and grouping fields -> overall and per-group stats."""
    records = list(records)
    out = {"n": len(records)}
    for m in ("dice", "iou", "pixel_accuracy"):
        out[m] = _stats([r[m] for r in records])
    for key in group_keys:
        groups = defaultdict(list)
        for r in records:
            if key in r:
                groups[r[key]].append(r)
        out[f"by_{key}"] = {g: {"n": len(rs), "dice": _stats([r["dice"] for r in rs]),
                                "iou": _stats([r["iou"] for r in rs])} for g, rs in sorted(groups.items())}
    return out


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        cm[int(t), int(p)] += 1
    return cm


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> dict:
    """accuracy, macro F1, per-class precision/recall/F1/support, confusion matrix (rows = truth)."""
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    per_class, f1s = {}, []
    for i, name in enumerate(class_names):
        tp = cm[i, i]
        fp = cm[:, i].sum() - tp
        fn = cm[i, :].sum() - tp
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_class[name] = {"precision": float(prec), "recall": float(rec), "f1": float(f1), "support": int(cm[i].sum())}
        if cm[i].sum() > 0:
            f1s.append(f1)
    n = int(cm.sum())
    return {
        "n": n,
        "accuracy": float(np.trace(cm) / n) if n else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }


ECE_BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of N x K logits (or log-probabilities), in float64."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def calibration_report(probs: np.ndarray, labels: Sequence[int], bins: int = ECE_BINS) -> dict:
    """How far confidence is from accuracy: expected calibration error (top-class confidence in `bins`
    equal-width bins, weighted by their share), Brier score (mean squared error of the probability
    vector against the one-hot truth, summed over classes) and mean negative log-likelihood."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) == 0:
        return {"n": 0, "ece": None, "brier": None, "nll": None}
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = sum(abs(float(conf[which == b].mean()) - float((pred[which == b] == y[which == b]).mean())) * (which == b).mean()
              for b in range(bins) if (which == b).any())
    onehot = np.eye(p.shape[1])[y]
    return {"n": int(len(y)), "ece": float(ece), "brier": float(((p - onehot) ** 2).sum(axis=1).mean()),
            "nll": float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean()), "bins": bins}

