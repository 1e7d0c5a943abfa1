"""Post-processing, decided and applied in one place (the idea of nnU-Net v2's
remove_connected_components.py): the segmenter's threshold and smallest kept component, the
classifier's hflip test-time augmentation. Each is chosen on VALIDATION data (`tune_postprocess`,
`choose_tta`), written beside the weights as inference_config.json, and read back when the model
loads (`read_inference_config`); `clean_mask` applies the clean-up.

Re-tune a finished model (the CLI is tumorlens/postprocess/__main__.py):

    python -m tumorlens.postprocess classifier models/tumorlens-efficientnet-lite0-brisc2025
    python -m tumorlens.postprocess segmenter models/tumorlens-unet-efficientnet-lite2-lgg --dataset lgg"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from ..hub_code.mask_cleanup import clean_mask  # noqa: F401 - re-exported; shared with the segmenter repos' code
from ..metrics import HEALTHY_MASK_MIN_PX, dice, softmax
from ..models import fetch_file

DEFAULT_THRESHOLD = 0.5
# Connected components smaller than this share of the image are dropped (speckle, not tumor).
DEFAULT_MIN_COMPONENT_FRACTION = 0.0002
INFERENCE_CONFIG_NAME = "inference_config.json"  # threshold and clean-up, chosen on validation data

HEALTHY_FP_FRACTION = HEALTHY_MASK_MIN_PX / 512 ** 2  # the false-alarm size as a share of the slice
MAX_VAL_HEALTHY_FP = 0.02  # the moonshot bound; its target allows 5 %

# Down to 0.01: the LGG models' best validation threshold sat on the old 0.05 floor (their maps are
# faint at the FLAIR margins), and per-patient Dice kept rising below it.
THRESHOLD_GRID = (0.01, 0.02, 0.03, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def read_inference_config(name_or_path: str | Path) -> dict | None:
    """The model's inference_config.json (local folder or Hub repo), or None where it has none."""
    path = fetch_file(name_or_path, INFERENCE_CONFIG_NAME, required=False)
    return None if path is None else json.loads(path.read_text())


def tune_postprocess(probs: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                     thresholds: Sequence[float] = THRESHOLD_GRID,
                     fractions: Sequence[float] = (0.0, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3),
                     max_healthy_fp: float = MAX_VAL_HEALTHY_FP, patients: Sequence[str] | None = None) -> dict:
    """Pick threshold and minimum component size on VALIDATION maps, by the targets the model is
    judged on: the best mean Dice over tumor slices among the settings that mask at most
    `max_healthy_fp` of the healthy slices (a mask of HEALTHY_FP_FRACTION of the slice or more);
    where no setting is that clean, the cleanest. Without healthy slices: the best tumor Dice.
    With `patients` (one id per slice, as for LGG): the best mean per-patient volume Dice, which
    already pays for every false pixel on a patient's healthy slices."""
    shape = (len(thresholds), len(fractions))
    tumor_dice, healthy_fp = np.zeros(shape), np.zeros(shape)
    volume = {pid: np.zeros((3, *shape)) for pid in (() if patients is None else patients)}  # intersection, predicted, true px
    n_tumor = n_healthy = 0
    for i, (prob, truth) in enumerate(zip(probs, truths)):
        truth = np.asarray(truth, bool)
        has_tumor = bool(truth.any())
        n_tumor, n_healthy = n_tumor + has_tumor, n_healthy + (not has_tumor)
        for ti, t in enumerate(thresholds):
            binary = prob >= t
            labels, n = ndimage.label(binary)
            sizes = np.asarray(ndimage.sum(binary, labels, index=np.arange(1, n + 1))) if n else np.zeros(0)
            for fi, f in enumerate(fractions):
                big = sizes >= max(1, int(f * prob.size))
                pred = np.concatenate([[False], big])[labels]
                if has_tumor:
                    tumor_dice[ti, fi] += dice(pred, truth)
                else:
                    healthy_fp[ti, fi] += sizes[big].sum() >= HEALTHY_FP_FRACTION * prob.size
                if patients is not None:
                    volume[patients[i]][:, ti, fi] += ((pred & truth).sum(), pred.sum(), truth.sum())
    tumor_dice /= max(1, n_tumor)
    healthy_fp /= max(1, n_healthy)
    default = (list(thresholds).index(0.5), list(fractions).index(2e-4)) if 0.5 in thresholds and 2e-4 in fractions else None
    if patients is not None:
        score = np.mean([np.where(v[1] + v[2] > 0, 2 * v[0] / np.maximum(v[1] + v[2], 1), 1.0) for v in volume.values()], 0)
        ti, fi = np.unravel_index(np.argmax(score), shape)
        rule = "best mean per-patient volume Dice (each patient's slices stacked)"
        extra = {"val_dice_per_patient": float(score[ti, fi]), "n_val_patients": len(volume),
                 "val_dice_per_patient_default": float(score[default]) if default else None}
    else:
        allowed = healthy_fp <= max_healthy_fp + 1e-12
        if not allowed.any():
            allowed = healthy_fp == healthy_fp.min()
        ti, fi = np.unravel_index(np.argmax(np.where(allowed, tumor_dice, -1.0)), shape)
        rule = (f"best mean tumor-slice Dice with at most {max_healthy_fp:.0%} of healthy slices given a mask "
                f"of >= {HEALTHY_FP_FRACTION:.2e} of the slice (50 px at 512 px)")
        extra = {}
    return {"threshold": float(thresholds[ti]), "min_component_fraction": float(fractions[fi]), "rule": rule, **extra,
            "val_dice_tumor": float(tumor_dice[ti, fi]), "val_healthy_fp_rate": float(healthy_fp[ti, fi]),
            "val_dice_tumor_default": float(tumor_dice[default]) if default else None,
            "n_val": len(probs), "n_val_tumor": n_tumor, "n_val_healthy": n_healthy,
            "grid": {"thresholds": list(thresholds), "fractions": list(fractions),
                     "tumor_dice": np.round(tumor_dice, 5).tolist(), "healthy_fp_rate": np.round(healthy_fp, 4).tolist(),
                     **({"dice_per_patient": np.round(score, 5).tolist()} if patients is not None else {})}}


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising validation NLL of softmax(logits / T) (Guo et al. 2017): one
    number, so the predicted class never changes. Golden-section search over log T in [-3, 3]."""
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)

    def nll(log_t: float) -> float:
        p = softmax(z / np.exp(log_t))
        return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
    lo, hi, g = -3.0, 3.0, (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    for _ in range(60):
        if nll(a) < nll(b):
            hi, b = b, a
            a = hi - g * (hi - lo)
        else:
            lo, a = a, b
            b = lo + g * (hi - lo)
    return float(np.exp((lo + hi) / 2))


def choose_calibration(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Temperature scaling decided on VALIDATION logits (as the model will answer: TTA applied if on),
    with the validation ECE, Brier and NLL before and after."""
    from ..metrics import calibration_report
    t = fit_temperature(logits, labels)
    return {"temperature": t, "calibration_val": {"before": calibration_report(softmax(np.asarray(logits, float)), labels),
                                                  "after": calibration_report(softmax(np.asarray(logits, float) / t), labels)}}


def choose_tta(plain_logits: np.ndarray, flipped_logits: np.ndarray, labels: np.ndarray) -> dict:
    """hflip TTA for a classifier, decided on VALIDATION logits: on where it classifies more images
    right, or as many with a lower mean negative log-likelihood; off otherwise."""
    def scores(logits):
        logp = torch.log_softmax(torch.as_tensor(logits, dtype=torch.float32), 1).numpy()
        return float((logp.argmax(1) == labels).mean()), float(-logp[np.arange(len(labels)), labels].mean())
    plain = scores(plain_logits)
    tta = scores((np.asarray(plain_logits) + np.asarray(flipped_logits)) / 2)
    use = tta[0] > plain[0] or (tta[0] == plain[0] and tta[1] < plain[1])
    return {"tta_hflip": bool(use), "n_val": int(len(labels)),
            "val_accuracy": {"plain": plain[0], "hflip_tta": tta[0]}, "val_nll": {"plain": plain[1], "hflip_tta": tta[1]}}


__all__ = ["DEFAULT_THRESHOLD", "DEFAULT_MIN_COMPONENT_FRACTION", "INFERENCE_CONFIG_NAME", "HEALTHY_FP_FRACTION",
           "MAX_VAL_HEALTHY_FP", "THRESHOLD_GRID", "clean_mask", "read_inference_config", "tune_postprocess",
           "choose_tta", "fit_temperature", "choose_calibration"]
