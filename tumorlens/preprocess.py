"""The one path every image and mask takes, in training and in inference alike.

decode (any supported file or array -> RGB uint8) -> letterbox to the model's square input
(keep aspect, zero-pad) -> normalise with the mean/std from the model's own config.
Masks: binarise at 127, letterboxed with the same geometry. Predictions map back to the
original pixel grid through the same `Letterbox` record. A mask-guided classifier
(`PreprocessConfig.crop_to_tumor`) first crops the image to a square around the segmenter's mask.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .errors import DataError, public_message

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_THRESHOLD = 127
# Uploads past this many pixels are refused before decoding (a 16k x 16k bomb would need GBs).
MAX_IMAGE_PIXELS = 40_000_000
MIN_IMAGE_SIDE = 16
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
# Tumor region for mask-guided classification: the mask's box grown by this share of its side on
# each side (context for the tumor's edge and its neighbourhood), never under this share of the image.
ROI_MARGIN = 0.25
ROI_MIN_SIDE = 0.3

ImageSource = Union[str, Path, bytes, Image.Image, np.ndarray, dict]


def _describe(source) -> str | None:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, dict):
        return source.get("path")
    return None


# Bytes per pixel of the array a plain image decodes to, by PIL mode (PIL keeps 8-bit multi-band
# images at 4 bytes a pixel; palette and LA images become RGB(A)): the decode's memory budget.
MODE_BYTES = {"1": 1, "L": 1, "P": 4, "PA": 4, "LA": 4, "RGB": 4, "RGBA": 4, "RGBX": 4, "CMYK": 4,
              "YCbCr": 4, "LAB": 4, "HSV": 4, "I": 4, "F": 4, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def mode_bytes(mode: str) -> int:
    """Bytes a pixel of PIL mode `mode` takes once decoded (4 for a mode not listed)."""
    return MODE_BYTES.get(mode, 4)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def open_image(source: ImageSource, *, max_pixels: int = MAX_IMAGE_PIXELS,
               max_bytes: int | None = None) -> Image.Image:
    """Open and fully decode `source` (path, bytes, PIL image or a datasets Image dict). The size
    is checked from the header first: over `max_pixels` pixels, or over `max_bytes` bytes once
    decoded (width x height x the bytes a pixel of its mode takes), it is refused undecoded."""
    name = _describe(source)
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, dict):  # datasets.Image(decode=False) rows: {"bytes": ..., "path": ...}
        source = source.get("bytes") or source.get("path")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise DataError(path, "image file not found")
        if path.stat().st_size == 0:
            raise DataError(path, "image file is empty (0 bytes)")
        fp = path
    elif isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise DataError(name, "image data is empty (0 bytes)")
        fp = io.BytesIO(source)
    else:
        raise DataError(name, f"cannot read an image from {type(source).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            check_image_size(name, img.width, img.height, img.mode, max_pixels=max_pixels, max_bytes=max_bytes)
            if getattr(img, "n_frames", 1) > 1:
                raise DataError(name, f"image has {img.n_frames} frames; give a single 2-D slice")
            img.load()
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        raise DataError(name, f"not a readable image ({public_message(f'{exc.__class__.__name__}: {exc}', name)})") from exc
    return img


def check_image_size(name, width: int, height: int, mode: str, *, max_pixels: int = MAX_IMAGE_PIXELS,
                     max_bytes: int | None = None) -> None:
    """DataError when a `width` x `height` image of PIL `mode` is over `max_pixels` pixels or, once
    decoded, over `max_bytes` bytes (from the header alone: nothing is decoded)."""
    if width * height > max_pixels:
        raise DataError(name, f"image is {width}x{height} ({width * height:,} pixels), over the {max_pixels:,} "
                              "pixel limit; scale it down (an MRI slice rarely needs more than 1024x1024)")
    decoded = width * height * mode_bytes(mode)
    if max_bytes is not None and decoded > max_bytes:
        raise DataError(name, f"image is {width}x{height} in mode {mode}, {_mb(decoded)} once decoded, over the "
                              f"{_mb(max_bytes)} decoding limit; scale it down or save it with 8 bits a pixel")


WINDOW_CHUNK = 1 << 22  # elements windowed at a time: the float32 working copy stays at 16 MB


def _blocks(arr: np.ndarray):
    """(start, block) along the first axis, about `WINDOW_CHUNK` elements a block."""
    if arr.ndim == 0:
        yield 0, arr.reshape(1)
        return
    step = max(1, WINDOW_CHUNK // max(1, arr[0].size))
    for start in range(0, arr.shape[0], step):
        yield start, arr[start:start + step]


def window(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """(`window_to_uint8(arr)`, how many of its values are NaN or +-inf). Works a block at a time,
    so windowing takes the uint8 result plus a few MB, not float32 copies of the whole array."""
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        return arr, 0
    lo, hi, nonfinite = math.inf, -math.inf, 0
    for _, block in _blocks(arr):
        x = block.astype(np.float32, copy=False)
        finite = np.isfinite(x)
        n_finite = int(np.count_nonzero(finite))
        nonfinite += x.size - n_finite
        if n_finite:
            vals = x if n_finite == x.size else x[finite]
            lo, hi = min(lo, float(vals.min())), max(hi, float(vals.max()))
    out = np.zeros(arr.shape, np.uint8)
    if not hi > lo:  # no finite value, or a flat image
        return out, nonfinite
    scale = np.float32(255.0 / (hi - lo))
    for start, block in _blocks(arr):
        x = block.astype(np.float32)  # a copy, worked on in place
        if nonfinite:
            np.nan_to_num(x, copy=False, nan=lo, posinf=hi, neginf=lo)
        x -= np.float32(lo)
        x *= scale
        np.rint(x, out=x)
        np.clip(x, 0, 255, out=x)
        out[start:start + len(block)] = x
    return out, nonfinite


def window_to_uint8(arr: np.ndarray) -> np.ndarray:
    """One min-max window over the finite values of 16-bit, signed or float data -> uint8 (MRI
    intensities have no fixed scale; a stack shares one window so its slices stay comparable).
    NaN and -inf become the window's low end (background), +inf its high end; they never set it.
    Every reader (plain images, DICOM, NIfTI) windows through here; `window` also counts them."""
    return window(arr)[0]


def array_to_rgb(arr: np.ndarray, name: str | None = None) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 array of any numeric dtype -> HxWx3 uint8."""
    return _array_to_rgb(arr, name)[0]


def _array_to_rgb(arr: np.ndarray, name: str | None = None) -> tuple[np.ndarray, int]:
    """(`array_to_rgb(arr)`, how many NaN/inf values were left out of the window)."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        src_dtype = arr.dtype
        alpha = arr[..., 3:].astype(np.float32) / (65535.0 if src_dtype == np.uint16 else 255.0)
        arr = arr[..., :3].astype(np.float32) * alpha  # composite on black, the MRI background
        if src_dtype in (np.uint8, np.uint16):
            arr = np.rint(arr).astype(src_dtype)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise DataError(name, f"expected a 2-D grayscale or 3-channel image, got an array of shape {arr.shape}")
    nonfinite = 0
    if arr.dtype != np.uint8:
        arr, nonfinite = window(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return np.ascontiguousarray(arr), nonfinite


def decode_image(source: ImageSource, *, max_pixels: int = MAX_IMAGE_PIXELS,
                 max_bytes: int | None = None) -> np.ndarray:
    """Any supported image -> HxWx3 uint8 RGB. Grayscale is replicated, alpha composited on
    black, palette expanded, 16-bit and float data min-max windowed to 8 bits (NaN/inf left out of
    the window). `max_pixels` / `max_bytes`: refused from the header, before decoding, past them."""
    return decode_image_counted(source, max_pixels=max_pixels, max_bytes=max_bytes)[0]


def decode_image_counted(source: ImageSource, *, max_pixels: int = MAX_IMAGE_PIXELS,
                         max_bytes: int | None = None) -> tuple[np.ndarray, int]:
    """(`decode_image(source)`, how many pixels were NaN or +-inf: left out of the window)."""
    name = _describe(source)
    if isinstance(source, np.ndarray):
        rgb, nonfinite = _array_to_rgb(source, name)
    else:
        img = open_image(source, max_pixels=max_pixels, max_bytes=max_bytes)
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif img.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            img = img.convert("RGB" if img.mode != "1" else "L")
        elif img.mode == "LA":
            img = img.convert("RGBA")
        elif img.mode == "PA":
            img = img.convert("RGBA")
        arr = np.asarray(img)
        del img  # PIL's copy goes now, before the windowed one is made
        rgb, nonfinite = _array_to_rgb(arr, name)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise DataError(name, f"image is {w}x{h}; at least {MIN_IMAGE_SIDE} px a side is needed")
    return rgb, nonfinite


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """Any mask array -> HxW uint8 of 0/1: foreground where the value is over 127 (any channel)."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask.max(axis=-1)
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    return (mask > MASK_THRESHOLD).astype(np.uint8)


def decode_mask(source: ImageSource) -> np.ndarray:
    """A mask file -> HxW uint8 of 0/1 (threshold 127)."""
    if isinstance(source, np.ndarray):
        return binarize_mask(source)
    img = open_image(source)
    if img.mode == "P":
        img = img.convert("L")
    return binarize_mask(np.asarray(img))


@dataclass(frozen=True)
class Letterbox:
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


def restore_map(prob: torch.Tensor | np.ndarray, box: Letterbox) -> np.ndarray:
    """A size x size map (probabilities) -> the original H x W grid (bilinear), padding dropped."""
    t = torch.as_tensor(np.asarray(prob, dtype=np.float32))
    crop = t[box.top : box.top + box.new_h, box.left : box.left + box.new_w]
    out = F.interpolate(crop[None, None], size=(box.orig_h, box.orig_w), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


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
