"""The out-of-scope gate's decision model (tumorlens.scope_gate): one Gaussian per feature group
(Mahalanobis distance to the nearest training dataset), a logistic regression over the log distances with
non-positive weights, and a threshold calibrated per dataset. Saved as safetensors beside the classifier."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

GATE_FILE = "scope_gate.safetensors"  # the fitted parameters (float32 tensors + JSON metadata), beside the classifier's weights
GATE_CARD = "scope_gate.json"     # a readable copy of their meta (method, data, calibration)
GATE_FORMAT = 1


@dataclass
class GaussianGroup:
    """z-scored features; one mean per training dataset, one shared covariance kept as its top-k axes
    (whitened) plus the residual's mean variance. `distances` -> N x datasets, squared Mahalanobis / D."""

    mu: np.ndarray
    sd: np.ndarray
    means: np.ndarray      # datasets x D, in z units
    axes: np.ndarray       # D x k
    variances: np.ndarray  # k
    residual_var: float

    @classmethod
    def fit(cls, per_dataset: Sequence[np.ndarray], k: int = 32) -> "GaussianGroup":
        x = np.concatenate(per_dataset).astype(np.float64)
        mu, sd = x.mean(0), x.std(0) + 1e-6
        z = [(p - mu) / sd for p in per_dataset]
        means = np.stack([zi.mean(0) for zi in z])
        resid = np.concatenate([zi - m for zi, m in zip(z, means)])
        cov = resid.T @ resid / len(resid)
        vals, vecs = np.linalg.eigh(cov)
        vals, vecs = vals[::-1], vecs[:, ::-1]
        k = min(k, len(vals))
        rest = vals[k:]
        residual_var = float(max(rest.mean(), 1e-6)) if len(rest) else 1.0
        return cls(mu, sd, means, vecs[:, :k].copy(), np.maximum(vals[:k], 1e-6), residual_var)

    @property
    def dim(self) -> int:
        return len(self.mu)

    def distances(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float64) - self.mu) / self.sd
        out = np.empty((len(z), len(self.means)))
        for j, m in enumerate(self.means):
            e = z - m
            p = e @ self.axes
            d = (p ** 2 / self.variances).sum(1)
            if self.axes.shape[1] < self.dim:
                d += np.maximum((e ** 2).sum(1) - (p ** 2).sum(1), 0.0) / self.residual_var
            out[:, j] = d / self.dim
        return out


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, iterations: int = 100,
                 nonpositive: bool = True) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Class-balanced L2 logistic regression by Newton's method on standardised columns. With
    `nonpositive`, a column whose weight comes out positive is dropped (weight 0) and the rest refitted,
    until every weight is <= 0. Returns (weights, bias, column means, column scales)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    mean, scale = x.mean(0), x.std(0) + 1e-9
    xs = (x - mean) / scale
    sample_w = np.where(y > 0, 0.5 / max(y.mean(), 1e-9), 0.5 / max(1 - y.mean(), 1e-9)) / len(y)
    active = np.ones(x.shape[1], bool)
    while True:
        a = np.c_[xs[:, active], np.ones(len(xs))]
        beta = np.zeros(a.shape[1])
        reg = np.full(a.shape[1], 2 * l2)
        reg[-1] = 0.0
        for _ in range(iterations):
            p = 1 / (1 + np.exp(-np.clip(a @ beta, -40, 40)))
            grad = a.T @ (sample_w * (p - y)) + reg * beta
            hess = (a * (sample_w * p * (1 - p))[:, None]).T @ a + np.diag(reg + 1e-9)
            step = np.linalg.solve(hess, grad)
            beta -= step
            if np.abs(step).max() < 1e-10:
                break
        w = np.zeros(x.shape[1])
        w[active] = beta[:-1]
        if not nonpositive or (w <= 0).all():
            return w, float(beta[-1]), mean, scale
        active &= w <= 0


def calibrate_threshold(scores: dict[str, np.ndarray], max_refused: float = 0.01) -> float:
    """A threshold that refuses (score < threshold) at most `max_refused` of EACH dataset's validation
    scores. Per dataset with k = floor(max_refused * n): halfway between its k-th and (k+1)-th smallest
    score (just under the smallest when k = 0), so no slice sits on the line; the minimum over datasets."""
    if not scores:
        raise ValueError("no validation scores to calibrate on")
    out = []
    for name, s in scores.items():
        s = np.sort(np.asarray(s, np.float64))
        if not len(s):
            raise ValueError(f"{name}: no validation scores")
        k = int(np.floor(max_refused * len(s) + 1e-9))
        out.append((s[k - 1] + s[k]) / 2 if k > 0 else s[0] * (1 - 1e-6))
    return float(min(out))


@dataclass
class GateModel:
    """Gaussians per feature group, the logistic regression over their log distances, the threshold."""

    groups: dict[str, GaussianGroup]
    weights: np.ndarray
    bias: float
    x_mean: np.ndarray
    x_scale: np.ndarray
    threshold: float
    datasets: list[str]
    meta: dict = field(default_factory=dict)

    def log_distances(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """N x groups: log of each group's distance to the nearest training dataset."""
        return np.stack([np.log(g.distances(feats[name]).min(1) + 1e-9) for name, g in self.groups.items()], 1)

    def score(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """In-scope score in [0, 1): the logistic regression's probability, 0 for an image of at most
        two colours (feats["blank"]); refuse below `threshold`."""
        z = (self.log_distances(feats) - self.x_mean) / self.x_scale @ self.weights + self.bias
        p = 1 / (1 + np.exp(-np.clip(z, -40, 40)))
        blank = feats.get("blank")
        return np.where(np.asarray(blank) > 0, 0.0, p) if blank is not None else p

    def nearest(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """Per image, the index (into `datasets`) of the training dataset it is closest to, summed over
        the groups the regression weighs."""
        total = 0.0
        for (name, g), w in zip(self.groups.items(), self.weights):
            total = total + (-w) * np.log(g.distances(feats[name]) + 1e-9)
        return np.asarray(total).argmin(1)

    # -- persistence
    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """(float32 tensors, string metadata): what GATE_FILE holds."""
        tensors = {"weights": self.weights, "bias": np.asarray([self.bias]), "x_mean": self.x_mean,
                   "x_scale": self.x_scale, "threshold": np.asarray([self.threshold])}
        for name, g in self.groups.items():
            for key in ("mu", "sd", "means", "axes", "variances"):
                tensors[f"{name}.{key}"] = getattr(g, key)
            tensors[f"{name}.residual_var"] = np.asarray([g.residual_var])
        tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
        metadata = {"format": str(GATE_FORMAT), "group_names": json.dumps(list(self.groups)),
                    "datasets": json.dumps(self.datasets), "meta": json.dumps(self.meta)}
        return tensors, metadata

    @classmethod
    def from_arrays(cls, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> "GateModel":
        if int(metadata.get("format", -1)) != GATE_FORMAT:
            raise ValueError(f"scope gate format {metadata.get('format')}, this TumorLens reads {GATE_FORMAT}")
        a = {k: np.asarray(v, np.float64) for k, v in tensors.items()}
        groups = {name: GaussianGroup(*(a[f"{name}.{k}"] for k in ("mu", "sd", "means", "axes", "variances")),
                                      float(a[f"{name}.residual_var"][0]))
                  for name in json.loads(metadata["group_names"])}
        return cls(groups, a["weights"], float(a["bias"][0]), a["x_mean"], a["x_scale"], float(a["threshold"][0]),
                   json.loads(metadata["datasets"]), json.loads(metadata["meta"]))

    def save(self, folder: str | Path) -> Path:
        """GATE_FILE (what `load` reads) and GATE_CARD (its metadata, readable) in `folder`."""
        from safetensors.numpy import save_file
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / GATE_FILE
        tensors, metadata = self.to_arrays()
        save_file(tensors, str(path), metadata=metadata)
        path.chmod(0o644)  # as the other model files (safetensors writes it owner-only)
        card = {"threshold": self.threshold, "datasets": self.datasets, **self.meta}
        (folder / GATE_CARD).write_text(json.dumps(card, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "GateModel":
        from safetensors import safe_open
        with safe_open(str(path), framework="numpy") as f:
            return cls.from_arrays({k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {})
