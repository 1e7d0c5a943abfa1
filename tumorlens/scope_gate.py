"""Out-of-scope gate: does an upload look like a brain MR slice of the kind the shipped models were
trained on (BRISC 2025 and Figshare T1 contrast-enhanced slices, LGG's 3-channel slices)? Asked before
segmenting, so that a photo, an X-ray, a CT, a document or noise is refused instead of given a verdict.

Method (Lee et al. 2018, "A simple unified framework for detecting out-of-distribution samples",
feature ensemble, plus image statistics), on the upload letterboxed to GATE_SIZE px:
1. features: the shipped classifier's backbone (EfficientNet-Lite0) read after each of its blocks
   0-5: per channel, the mean and the standard deviation over the feature map; and 22 cheap image
   statistics (colour, dark borders, grey histogram, texture: `image_statistics`);
2. one Gaussian per feature group: z-scored features, a mean per training dataset and one shared
   covariance, kept as its top `k` principal axes (whitened) plus the residual's mean variance; the
   group's distance is the squared Mahalanobis distance to the nearest dataset mean, over the
   dimension;
   (Gaussians and regression see each training slice and one framing-augmented view of it: a crop,
   black padding or a small rotation, as non-square or tightly cropped uploads have);
3. a logistic regression on the log distances (weights constrained to be <= 0: further from the
   training slices never looks more in scope), fitted on training slices (positives) against the
   training-negative pool of tumorlens.bench.scope_negatives (never the held-out test set);
4. the score is the regression's probability (0 for an image of at most two distinct colours: blank,
   a flat colour, a binary mask; no MR slice is); the threshold refuses at most `max_refused` (1 %)
   of EACH dataset's validation slices (`calibrate_threshold`).

The fitted parameters live in `scope_gate.safetensors` beside the classifier's weights (tensors, with
the method, the data and the calibration named in its metadata), and a readable copy of that metadata
in `scope_gate.json`. (safetensors, not .npz: a Space bundle takes weight files in models/, never arrays.)
Fit with `python -m tumorlens.bench.scope_gate fit`; measure with `python -m tumorlens.bench.scope_gate run`.

    gate = ScopeGate.from_pretrained("models/tumorlens-efficientnet-lite0-brisc2025")
    result = gate.check(rgb)             # ScopeResult(in_scope, score, threshold, nearest, blank)
    if not result.in_scope: print(result.message)
    in_scope(rgb) -> (bool, score, threshold); scope_score(rgb) -> score   # with the shipped gate (load_gate)
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .scope_features import (GATE_SIZE, GATE_STAGES, STAT_NAMES, StageFeatures, at_most_two_colours,
                             extract_features, gate_input, image_statistics)
from .scope_model import GATE_CARD, GATE_FILE, GateModel, GaussianGroup, calibrate_threshold, fit_logistic

REFUSAL = "This does not look like a brain MRI slice"


@dataclass(frozen=True)
class ScopeResult:
    in_scope: bool
    score: float           # in-scope score in [0, 1); refused below `threshold`
    threshold: float
    nearest: str           # the training dataset the slice looks most like (whether or not refused)
    blank: bool = False    # refused because it holds at most two colours (score 0)

    @property
    def message(self) -> str:
        if self.in_scope:
            return f"Looks like a brain MRI slice (scope score {self.score:.2f}, threshold {self.threshold:.2f})."
        if self.blank:
            return (f"{REFUSAL}: it holds at most two distinct colours (a blank image, a flat colour or a binary "
                    f"mask; scope score 0, slices under {self.threshold:.2f} are refused).")
        return (f"{REFUSAL} of the kind these models were trained on (scope score {self.score:.2f}; "
                f"slices under {self.threshold:.2f} are refused).")


class ScopeGate:
    """The backbone that reads the features and the fitted `GateModel`."""

    def __init__(self, extractor: StageFeatures, model: GateModel, size: int = GATE_SIZE):
        self.extractor, self.model, self.size = extractor, model, size

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> "ScopeGate":
        """The classifier folder (or Hub repo id) holding GATE_FILE; DataError where it has none."""
        from .models import fetch_file, load_classifier
        path = fetch_file(name_or_path, GATE_FILE)
        model = GateModel.load(path)
        net, pre, _ = load_classifier(name_or_path)
        size = int(model.meta.get("input_size", GATE_SIZE))
        return cls(StageFeatures(net, pre.mean, pre.std, int(model.meta.get("stages", GATE_STAGES))), model, size)

    @property
    def threshold(self) -> float:
        return self.model.threshold

    def features(self, images: Sequence[np.ndarray], batch: int = 16) -> dict[str, np.ndarray]:
        return extract_features(self.extractor, images, size=self.size, batch=batch)

    def scores(self, images: Sequence[np.ndarray], batch: int = 16) -> np.ndarray:
        return self.model.score(self.features(images, batch))

    def check(self, rgb: np.ndarray) -> ScopeResult:
        """One decoded upload (H x W x 3 uint8, any size) -> ScopeResult."""
        feats = self.features([rgb])
        score = float(self.model.score(feats)[0])
        nearest = self.model.datasets[int(self.model.nearest(feats)[0])]
        return ScopeResult(score >= self.threshold, score, self.threshold, nearest, bool(feats["blank"][0]))


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _cached_gate(location: str) -> ScopeGate:
    return ScopeGate.from_pretrained(location)


def load_gate(name_or_path: str | Path | None = None) -> ScopeGate | None:
    """The gate fitted beside the classifier `name_or_path` (default: the shipped classifier, or
    $TUMORLENS_CLS_MODEL), loaded once per process; None where that folder has no gate."""
    from .errors import DataError
    from .registry import default_model
    location = name_or_path if name_or_path is not None else default_model("classifier")
    if location is None:
        return None
    with _LOCK:
        try:
            return _cached_gate(str(location))
        except DataError:
            return None


def _gate(gate: ScopeGate | None) -> ScopeGate:
    gate = gate if gate is not None else load_gate()
    if gate is None:
        raise FileNotFoundError(f"no {GATE_FILE} beside the classifier: fit one with python -m tumorlens.bench.scope_gate fit")
    return gate


def scope_score(rgb: np.ndarray, gate: ScopeGate | None = None) -> float:
    """In-scope score in (0, 1) of one decoded upload (H x W x 3 uint8): higher looks more like the
    training slices."""
    return _gate(gate).check(rgb).score


def in_scope(rgb: np.ndarray, gate: ScopeGate | None = None) -> tuple[bool, float, float]:
    """(in scope?, score, threshold) for one decoded upload (H x W x 3 uint8)."""
    result = _gate(gate).check(rgb)
    return result.in_scope, result.score, result.threshold


__all__ = ["ScopeGate", "ScopeResult", "GateModel", "GaussianGroup", "StageFeatures", "image_statistics",
           "at_most_two_colours", "gate_input", "extract_features", "fit_logistic", "calibrate_threshold", "load_gate", "scope_score",
           "in_scope", "REFUSAL", "GATE_FILE", "GATE_CARD", "GATE_SIZE", "GATE_STAGES", "STAT_NAMES"]
