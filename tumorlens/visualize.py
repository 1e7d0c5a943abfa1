"""Pictures of a prediction (tumor outline over the MRI, the mask, a confidence heatmap) and of a
classifier's scores (its confusion matrix)."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from scipy import ndimage

OUTLINE_RGB = (255, 32, 32)


def outline(mask: np.ndarray, thickness: int | None = None) -> np.ndarray:
    """The mask's boundary pixels, about 0.4% of the image side thick."""
    mask = np.asarray(mask, bool)
    if thickness is None:
        thickness = max(1, round(max(mask.shape) / 256))
    return mask & ~ndimage.binary_erosion(mask, iterations=thickness, border_value=0)


def overlay_outline(rgb: np.ndarray, mask: np.ndarray, color=OUTLINE_RGB) -> np.ndarray:
    out = rgb.copy()
    out[outline(mask)] = color
    return out


def mask_image(mask: np.ndarray) -> np.ndarray:
    return (np.asarray(mask, bool) * 255).astype(np.uint8)


def heatmap(rgb: np.ndarray, probability: np.ndarray, alpha: float = 0.55, cmap: str = "inferno") -> np.ndarray:
    """Tumor probability as colour blended over the grayscale MRI."""
    colored = colormaps[cmap](np.clip(probability, 0, 1))[..., :3] * 255
    gray = rgb.mean(axis=-1, keepdims=True).repeat(3, axis=-1)
    weight = alpha * np.clip(probability, 0, 1)[..., None] ** 0.5
    return np.clip(gray * (1 - weight) + colored * weight, 0, 255).astype(np.uint8)


def plot_confusion_matrix(cm, names, title: str, path, dpi: int = 110):
    """A confusion matrix as a PNG: counts in the cells, true classes down, predicted across."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(5, 4.4), dpi=dpi)
    ax.imshow(cm, cmap="Blues")
    for (r, c), v in np.ndenumerate(cm):
        ax.text(c, r, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
