"""TumorLens preprocessing as a transformers image processor. This file ships inside each model repo
and loads with `AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)`; it needs nothing
from TumorLens: the letterbox comes from `letterbox.py` beside it, the same file TumorLens uses.

Letterbox (keep the aspect ratio, resize the longer side to `input_size`, centre on a black square),
then scale to [0, 1] and normalise with the model's own mean/std, as `tumorlens.preprocess` does."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.utils import cached_file

from .letterbox import letterbox_image

CONFIG_NAME = "preprocessor_config.json"  # the file TumorLens itself reads: one source for both
HUB_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "force_download", "subfolder")


def to_rgb(image) -> np.ndarray:
    """A PIL image, an H x W (x 1/3/4) uint8 array or a 3 x H x W uint8 tensor -> H x W x 3 uint8."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channels first, as torchvision gives it
    if arr.dtype != np.uint8:
        raise ValueError(f"expected 8-bit pixels, got {arr.dtype}: for 16-bit, DICOM or NIfTI input use tumorlens itself")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an H x W or H x W x C image, got shape {arr.shape}")
    return np.ascontiguousarray(np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr[..., :3])


class TumorLensImageProcessor(BaseImageProcessor):
    """Letterbox + normalise; `pixel_values` is N x 3 x input_size x input_size float32. With
    `return_letterbox=True` the output also holds each image's `Letterbox`, to map outputs back."""

    model_input_names = ["pixel_values"]

    def __init__(self, input_size: int = 256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                 resize_mode: str = "letterbox", **kwargs):
        super().__init__(**kwargs)
        if resize_mode != "letterbox":
            raise ValueError(f"resize_mode {resize_mode!r} is not supported (only 'letterbox')")
        self.input_size, self.mean, self.std, self.resize_mode = int(input_size), list(mean), list(std), resize_mode

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> "TumorLensImageProcessor":
        """Always from the repo's preprocessor_config.json (transformers hands a timm-style folder's
        config.json to image processors instead)."""
        hub = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
        path = cached_file(str(pretrained_model_name_or_path), CONFIG_NAME, **hub)
        with open(path) as f:
            return cls(**json.load(f))

    def preprocess(self, images, return_tensors="pt", return_letterbox: bool = False, **kwargs) -> BatchFeature:
        images = images if isinstance(images, (list, tuple)) else [images]
        boxed = [letterbox_image(to_rgb(image), self.input_size) for image in images]
        x = torch.from_numpy(np.stack([pixels for pixels, _ in boxed])).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        data = {"pixel_values": (x - mean) / std}
        if return_letterbox:
            data["letterbox"] = [box for _, box in boxed]
        return BatchFeature(data=data)
