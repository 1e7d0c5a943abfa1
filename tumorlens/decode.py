"""Decoding: any supported image file or array -> RGB uint8 (and masks -> 0/1), within a size and
memory budget checked before decoding; 16-bit, signed and float data through one min-max window that
ignores and counts non-finite values (`window`). The first step of tumorlens.preprocess's path."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError, public_message

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_THRESHOLD = 127
# Uploads past this many pixels are refused before decoding (a 16k x 16k bomb would need GBs).
MAX_IMAGE_PIXELS = 40_000_000
MIN_IMAGE_SIDE = 16

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
    so windowing takes the uint8 result plus a few MB, not float32 copies of the whole array. Non-finite
    values never set the window and take their nearest finite neighbour's level (`fill_from_neighbours`)."""
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
    bad = np.zeros(arr.shape, bool) if nonfinite else None
    for start, block in _blocks(arr):
        x = block.astype(np.float32)  # a copy, worked on in place
        if nonfinite:
            bad[start:start + len(block)] = ~np.isfinite(x)
            np.nan_to_num(x, copy=False, nan=lo, posinf=hi, neginf=lo)
        x -= np.float32(lo)
        x *= scale
        np.rint(x, out=x)
        np.clip(x, 0, 255, out=x)
        out[start:start + len(block)] = x
    if nonfinite:
        fill_from_neighbours(out, bad)
    return out, nonfinite


MAX_FILL_REGIONS = 10_000  # past this many separate holes, they stay at the window's ends (cost bound)


def fill_from_neighbours(out: np.ndarray, bad: np.ndarray) -> None:
    """Each non-finite value takes the windowed value of its nearest finite neighbour, in place, so a
    few NaN/inf pixels look like the tissue around them rather than black or white specks the models
    could read as structure. Works hole by hole in padded boxes: memory stays near the holes' size."""
    from scipy import ndimage
    labels, n = ndimage.label(bad)
    if n == 0 or n > MAX_FILL_REGIONS or bad.all():
        return
    for region in ndimage.find_objects(labels):
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in region)
        holes = bad[box]
        if holes.all():  # a hole that fills its padded box (the array's edge): leave it at the window's end
            continue
        nearest = ndimage.distance_transform_edt(holes, return_distances=False, return_indices=True)
        sub = out[box]
        sub[holes] = sub[tuple(i[holes] for i in nearest)]


def window_to_uint8(arr: np.ndarray) -> np.ndarray:
    """One min-max window over the finite values of 16-bit, signed or float data -> uint8 (MRI
    intensities have no fixed scale; a stack shares one window so its slices stay comparable).
    NaN and +-inf never set it and take their nearest finite neighbour's level.
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
