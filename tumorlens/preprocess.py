"""The one path every image and mask takes, in training and in inference alike.

decode (any supported file or array -> RGB uint8; tumorlens.decode, whose names are importable from
here too) -> letterbox to the model's square input
(keep aspect, zero-pad) -> normalise with the mean/std from the model's own config.
Masks: binarise at 127, letterboxed with the same geometry. Predictions map back to the
original pixel grid through the same `Letterbox` record. A mask-guided classifier
(`PreprocessConfig.crop_to_tumor`) first crops the image to a square around the segmenter's mask.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .decode import (IMAGE_SUFFIXES, MASK_THRESHOLD, MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE, ImageSource,  # noqa: F401 - re-exported
                     array_to_rgb, binarize_mask, check_image_size, decode_image, decode_image_counted, decode_mask,
                     mode_bytes, open_image, window, window_to_uint8)
from .errors import DataError
# the letterbox is defined once, in the file that also ships inside every model repo
from .hub_code.letterbox import Letterbox, letterbox_geometry, letterbox_image, restore_map  # noqa: F401 - re-exported

# the ImageNet statistics every shipped encoder was pretrained with, as timm states them
IMAGENET_MEAN = tuple(IMAGENET_DEFAULT_MEAN)
IMAGENET_STD = tuple(IMAGENET_DEFAULT_STD)
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
# Tumor region for mask-guided classification: the mask's box grown by this share of its side on
# each side (context for the tumor's edge and its neighbourhood), never under this share of the image.
ROI_MARGIN = 0.25
ROI_MIN_SIDE = 0.3


def letterbox_mask(mask01: np.ndarray, size: int) -> np.ndarray:
    """HxW 0/1 mask -> size x size 0/1 mask on the same geometry as `letterbox_image`."""
    box = letterbox_geometry(mask01.shape[0], mask01.shape[1], size)
    out = np.zeros((size, size), dtype=np.uint8)
    scaled = (mask01 * 255).astype(np.uint8)
    if (box.new_h, box.new_w) != mask01.shape:
        scaled = np.asarray(Image.fromarray(scaled).resize((box.new_w, box.new_h), Image.BILINEAR))
    out[box.top : box.top + box.new_h, box.left : box.left + box.new_w] = binarize_mask(scaled)
    return out


def tumor_box(mask01: np.ndarray, margin: float = ROI_MARGIN, min_side: float = ROI_MIN_SIDE) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of a square around the mask's foreground, grown by `margin` of
    its side each way, at least `min_side` of the longer image side, shifted to stay inside the
    image (cut where the image is narrower). None for an empty mask."""
    rows, cols = np.flatnonzero(mask01.any(1)), np.flatnonzero(mask01.any(0))
    if rows.size == 0:
        return None
    h, w = mask01.shape
    side = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    side = int(round(max(side * (1 + 2 * margin), min_side * max(h, w), MIN_IMAGE_SIDE)))
    cy, cx = (rows[0] + rows[-1] + 1) / 2, (cols[0] + cols[-1] + 1) / 2

    def span(centre: float, length: int) -> tuple[int, int]:
        size = min(side, length)
        start = int(round(min(max(centre - side / 2, 0), length - size)))
        return start, start + size

    (top, bottom), (left, right) = span(cy, h), span(cx, w)
    return top, left, bottom, right


def crop_to_tumor(rgb: np.ndarray, mask01: np.ndarray | None, margin: float = ROI_MARGIN,
                  min_side: float = ROI_MIN_SIDE) -> np.ndarray:
    """The tumor region of `rgb` from a mask on the same grid; the whole image where the mask is
    empty (a healthy slice, or a tumor the segmenter missed: the classifier then sees it all)."""
    if mask01 is None:
        return rgb
    if mask01.shape != rgb.shape[:2]:
        raise ValueError(f"mask {mask01.shape} and image {rgb.shape[:2]} differ in size")
    box = tumor_box(np.asarray(mask01, bool), margin, min_side)
    if box is None:
        return rgb
    top, left, bottom, right = box
    return np.ascontiguousarray(rgb[top:bottom, left:right])


@dataclass
class PreprocessConfig:
    """What a model expects at its input; saved beside the weights as preprocessor_config.json."""

    input_size: int = 256
    mean: Sequence[float] = field(default_factory=lambda: IMAGENET_MEAN)
    std: Sequence[float] = field(default_factory=lambda: IMAGENET_STD)
    resize_mode: str = "letterbox"
    crop_to_tumor: bool = False  # classify the segmenter's tumor region, not the whole slice
    roi_margin: float = ROI_MARGIN
    roi_min_side: float = ROI_MIN_SIDE
    roi_segmenter: str | None = None  # the segmenter whose masks it was trained on

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if not self.crop_to_tumor:  # whole-slice models keep the configs they always had
            for key in ("crop_to_tumor", "roi_margin", "roi_min_side", "roi_segmenter"):
                d.pop(key)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        known = {k: d[k] for k in ("input_size", "mean", "std", "resize_mode", "crop_to_tumor", "roi_margin",
                                   "roi_min_side", "roi_segmenter") if k in d}
        return cls(**known)

    @classmethod
    def from_timm(cls, pretrained_cfg: dict, tumor_roi: dict | None = None) -> "PreprocessConfig":
        """From timm's pretrained_cfg, plus config.json's `tumor_roi` for a mask-guided classifier."""
        roi = {"crop_to_tumor": True, "roi_margin": tumor_roi["margin"], "roi_min_side": tumor_roi["min_side"],
               "roi_segmenter": tumor_roi.get("segmenter")} if tumor_roi else {}
        return cls(input_size=int(pretrained_cfg["input_size"][-1]), mean=tuple(pretrained_cfg["mean"]),
                   std=tuple(pretrained_cfg["std"]), **roi)

    def tumor_roi(self) -> dict | None:
        """What config.json records for a mask-guided classifier (None for a whole-slice one)."""
        if not self.crop_to_tumor:
            return None
        return {"margin": self.roi_margin, "min_side": self.roi_min_side, "segmenter": self.roi_segmenter}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / PREPROCESSOR_CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "PreprocessConfig":
        path = Path(folder) / PREPROCESSOR_CONFIG_NAME
        if not path.is_file():
            raise DataError(path, "model folder has no preprocessor config")
        return cls.from_dict(json.loads(path.read_text()))


class Preprocessor:
    """decode -> letterbox -> normalise, for one model's `PreprocessConfig`."""

    def __init__(self, config: PreprocessConfig):
        self.config = config
        self._mean = torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def size(self) -> int:
        return self.config.input_size

    def prepare(self, source: ImageSource) -> tuple[np.ndarray, Letterbox]:
        """decode + letterbox: size x size x 3 uint8. Training packs store exactly this."""
        return letterbox_image(decode_image(source), self.size)

    def crop(self, rgb: np.ndarray, mask01: np.ndarray | None) -> np.ndarray:
        """The region this model classifies: the tumor's when `crop_to_tumor`, else the whole image."""
        if not self.config.crop_to_tumor:
            return rgb
        return crop_to_tumor(rgb, mask01, self.config.roi_margin, self.config.roi_min_side)

    def prepare_mask(self, source: ImageSource) -> np.ndarray:
        return letterbox_mask(decode_mask(source), self.size)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """N x H x W x 3 uint8, or N x 3 x H x W float in [0, 1] -> normalised N x 3 x H x W float32."""
        if batch.dtype == torch.uint8:
            batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
        mean, std = self._mean.to(batch.device), self._std.to(batch.device)
        return (batch.float() - mean) / std

    def __call__(self, source: ImageSource) -> tuple[torch.Tensor, Letterbox]:
        """One image -> (1 x 3 x size x size float32 tensor, its Letterbox)."""
        pixels, box = self.prepare(source)
        return self.normalize(torch.from_numpy(pixels)[None]), box
