"""What the out-of-scope gate (tumorlens.scope_gate) reads from an upload: the shipped classifier's
backbone after each of its blocks 0-5 (per channel, mean and std over the feature map) and 22 cheap image
statistics (colour, dark borders, grey histogram, texture), on the upload letterboxed to GATE_SIZE px."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .preprocess import letterbox_image

GATE_SIZE = 128                   # the gate reads the upload letterboxed to this side (a quarter of a 256 px pass's pixels)
GATE_STAGES = 6                   # backbone blocks 0..5 (block 6 and the head conv are not needed)
STATS_SIDE = 64                   # image statistics are taken on the upload's own extent, resized to this square

STAT_NAMES = (
    "chroma_mean", "chroma_frac",                       # colour: max-min channel spread, share of colourful pixels
    "grey_mean", "grey_std",
    "border_mean", "border_dark",                       # outer ring: mean, share of near-black pixels
    "centre_mean", "centre_std",
    "dark_frac", "bright_frac", "clipped_frac",         # near black, near white, exactly 0 or 255
    *(f"hist_{i}" for i in range(8)),                   # grey histogram, 8 bins
    "gradient", "laplacian",                            # edge and fine-texture energy
    "levels",                                           # share of the 256 grey levels used
)



def image_statistics(rgb: np.ndarray) -> np.ndarray:
    """Cheap statistics that tell MR slices from photos, documents and patterns: colour, dark borders,
    grey histogram, texture. `rgb`: H x W x 3 uint8, the upload's own extent (no letterbox bars).
    Returns float32 of len(STAT_NAMES)."""
    if rgb.shape[:2] != (STATS_SIDE, STATS_SIDE):
        rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((STATS_SIDE, STATS_SIDE), Image.BILINEAR))
    a = rgb.astype(np.float32) / 255.0
    chroma = a.max(axis=2) - a.min(axis=2)
    g = a.mean(axis=2)
    n, r = STATS_SIDE, STATS_SIDE // 16
    ring = np.ones((n, n), bool)
    ring[r:-r, r:-r] = False
    centre = g[n // 4: 3 * n // 4, n // 4: 3 * n // 4]
    hist = np.histogram(g, bins=8, range=(0.0, 1.0))[0] / g.size
    gy, gx = np.diff(g, axis=0), np.diff(g, axis=1)
    lap = g[1:-1, 1:-1] * 4 - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    top = rgb.max(axis=2)
    out = [
        chroma.mean(), (chroma > 0.1).mean(),
        g.mean(), g.std(),
        g[ring].mean(), (g[ring] < 0.08).mean(),
        centre.mean(), centre.std(),
        (g < 0.04).mean(), (g > 0.96).mean(), ((top == 0) | (top == 255)).mean(),
        *hist,
        np.abs(gy).mean() + np.abs(gx).mean(), np.abs(lap).mean(),
        len(np.unique((g * 255).astype(np.uint8))) / 256.0,
    ]
    return np.asarray(out, np.float32)


def at_most_two_colours(rgb: np.ndarray) -> bool:
    """True for an image of one or two distinct RGB values: blank, a flat colour, a binary mask or
    pattern. No MR slice is (the darkest LGG slices, empty above the head, still hold 3+ values)."""
    flat = np.ascontiguousarray(rgb).reshape(-1, rgb.shape[-1] if rgb.ndim == 3 else 1)

    def keys(x: np.ndarray) -> np.ndarray:
        k = x[:, 0].astype(np.uint32)
        for c in range(1, x.shape[1]):
            k = (k << 8) | x[:, c]
        return k

    sample = keys(flat[:: max(1, len(flat) // 4096)])  # most images show three values within a few thousand pixels
    if ((sample != sample.min()) & (sample != sample.max())).any():
        return False
    k = keys(flat)
    return not ((k != k.min()) & (k != k.max())).any()


def gate_input(rgb: np.ndarray, size: int = GATE_SIZE) -> tuple[np.ndarray, np.ndarray, bool]:
    """(the upload letterboxed to `size` px, its image statistics on its own extent, whether it holds
    at most two colours): one resize."""
    boxed, box = letterbox_image(np.ascontiguousarray(rgb), size)
    own = boxed[box.top: box.top + box.new_h, box.left: box.left + box.new_w]
    return boxed, image_statistics(own), at_most_two_colours(rgb)


class StageFeatures:
    """The classifier's backbone read after each of its first `stages` blocks: per channel, the mean and
    the standard deviation over the feature map. No hooks, no state: safe to call from several threads."""

    def __init__(self, model: torch.nn.Module, mean: Sequence[float], std: Sequence[float], stages: int = GATE_STAGES):
        for part in ("conv_stem", "bn1", "blocks"):
            if not hasattr(model, part):
                raise ValueError(f"the scope gate reads a timm EfficientNet backbone; this model has no {part}")
        self.stem = torch.nn.Sequential(model.conv_stem, model.bn1).eval()
        self.blocks = torch.nn.ModuleList(list(model.blocks)[:stages]).eval()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def names(self) -> list[str]:
        return [f"stage{i}" for i in range(len(self.blocks))]

    @torch.inference_mode()
    def __call__(self, boxed: np.ndarray) -> list[np.ndarray]:
        """N x S x S x 3 uint8 -> one N x 2C float32 array per stage."""
        x = torch.from_numpy(np.ascontiguousarray(boxed)).permute(0, 3, 1, 2).float().div_(255.0)
        x = self.stem((x - self.mean) / self.std)
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1).numpy())
        return out


def extract_features(extractor: StageFeatures, images: Sequence[np.ndarray], *, size: int = GATE_SIZE,
                     batch: int = 16, progress=None) -> dict[str, np.ndarray]:
    """RGB uint8 images of any size -> {"stage0".."stage5", "stats"}: N x D float32 each, and "blank":
    N, 1.0 for an image of at most two colours (refused whatever its distances)."""
    groups: dict[str, list[np.ndarray]] = {name: [] for name in extractor.names + ["stats", "blank"]}
    for i in range(0, len(images), batch):
        pairs = [gate_input(img, size) for img in images[i:i + batch]]
        for name, arr in zip(extractor.names, extractor(np.stack([p[0] for p in pairs]))):
            groups[name].append(arr)
        groups["stats"].append(np.stack([p[1] for p in pairs]))
        groups["blank"].append(np.asarray([p[2] for p in pairs], np.float32))
        if progress is not None:
            progress(min(i + batch, len(images)))
    return {k: np.concatenate(v).astype(np.float32) if v else np.zeros((0, 0), np.float32) for k, v in groups.items()}
