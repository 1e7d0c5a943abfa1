"""The letterbox: how every TumorLens model sees an image, and how its outputs map back. Defined once,
here, for TumorLens itself (tumorlens.preprocess) and for the transformers code that ships inside each
model repo (this file is copied beside it): numpy, PIL and torch only.

Keep the aspect ratio, resize the longer side to `size` (bilinear), centre on a black square."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


class Letterbox(NamedTuple):
    """How an image of `orig_h` x `orig_w` was scaled and padded into a `size` square."""

    orig_h: int
    orig_w: int
    size: int
    new_h: int
    new_w: int
    top: int
    left: int


def letterbox_geometry(h: int, w: int, size: int) -> Letterbox:
    scale = size / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    return Letterbox(h, w, size, new_h, new_w, (size - new_h) // 2, (size - new_w) // 2)


def letterbox_image(rgb: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """HxWx3 uint8 -> size x size x 3 uint8, aspect kept, zero padding centred."""
    box = letterbox_geometry(rgb.shape[0], rgb.shape[1], size)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    resized = rgb
    if (box.new_h, box.new_w) != rgb.shape[:2]:
        resized = np.asarray(Image.fromarray(rgb).resize((box.new_w, box.new_h), Image.BILINEAR))
    out[box.top : box.top + box.new_h, box.left : box.left + box.new_w] = resized
    return out, box


def restore_map(prob, box) -> np.ndarray:
    """A size x size map (probabilities; array or tensor) -> the original H x W grid (bilinear),
    padding dropped. `box` may be a plain tuple (transformers pipelines hand it back as one)."""
    box = Letterbox(*box)
    t = torch.as_tensor(np.asarray(prob, dtype=np.float32))
    crop = t[box.top : box.top + box.new_h, box.left : box.left + box.new_w]
    out = F.interpolate(crop[None, None], size=(box.orig_h, box.orig_w), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()
