"""Compact training packs: a dataset split decoded once through the shared `Preprocessor`
(decode + letterbox) into uint8 arrays. Training reads them from memory, a GPU run carries
them (a 256 px BRISC pack is ~0.3 GB raw, far less compressed)."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm

from .paths import packs_cache_dir
from .preprocess import PreprocessConfig, Preprocessor

PACK_VERSION = 1  # bump when the preprocessing changes, so stale packs are rebuilt


def _prepare_one(args):
    image, mask, size = args
    pre = Preprocessor(PreprocessConfig(input_size=size))
    pixels, _ = pre.prepare(image)
    return pixels, (pre.prepare_mask(mask) if mask is not None else None)


def build_pack(ds: datasets.Dataset, size: int, *, workers: int | None = None, desc: str = "pack") -> dict[str, np.ndarray]:
    """images (N,S,S,3) uint8; masks (N,S,S) uint8 0/1 when the split has masks; labels; file_names."""
    has_mask = "mask" in ds.column_names
    raw = ds.cast_column("image", datasets.Image(decode=False))
    if has_mask:
        raw = raw.cast_column("mask", datasets.Image(decode=False))
    jobs = [(r["image"], r["mask"] if has_mask else None, size) for r in raw]
    n = len(jobs)
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=np.uint8) if has_mask else None
    workers = workers or min(4, os.cpu_count() or 1)
    with ProcessPoolExecutor(workers) as pool:
        for i, (img, msk) in enumerate(tqdm(pool.map(_prepare_one, jobs, chunksize=32), total=n, desc=desc, unit="img")):
            images[i] = img
            if has_mask:
                masks[i] = msk
    pack = {"images": images, "file_names": np.asarray(ds["file_name"])}
    if "label" in ds.column_names:
        pack["labels"] = np.asarray(ds["label"], dtype=np.int64)
    if "patient_id" in ds.column_names:
        pack["patient_ids"] = np.asarray([p or "" for p in ds["patient_id"]])
    if has_mask:
        pack["masks"] = masks
    return pack


def patient_ids(pack: dict) -> np.ndarray | None:
    """The pack's per-slice patient ids, or None where the data has none (BRISC) or lost them (Figshare)."""
    ids = pack.get("patient_ids")
    return ids if ids is not None and len(ids) and all(ids) else None


def build_tumor_roi_pack(ds: datasets.Dataset, pre: Preprocessor, segmenter, *, batch: int = 16,
                         desc: str = "tumor-region pack") -> dict[str, np.ndarray]:
    """A classification pack of tumor regions: each image cropped to the square around `segmenter`'s
    mask (the whole image where it finds none), then letterboxed, exactly as inference does."""
    from .preprocess import decode_image
    raw = ds.cast_column("image", datasets.Image(decode=False))
    n, size = len(raw), pre.size
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    found = np.zeros(n, dtype=bool)
    for start in tqdm(range(0, n, batch), desc=desc, unit="batch"):
        rgbs = [decode_image(r) for r in raw.select(range(start, min(n, start + batch)))["image"]]
        for i, (rgb, prob) in enumerate(zip(rgbs, segmenter.probabilities(rgbs)), start):
            mask = segmenter.from_probability(prob).mask
            found[i] = mask.any()
            images[i] = pre.prepare(pre.crop(rgb, mask))[0]
    pack = {"images": images, "file_names": np.asarray(ds["file_name"]), "tumor_found": found}
    if "label" in ds.column_names:
        pack["labels"] = np.asarray(ds["label"], dtype=np.int64)
    return pack


def save_pack(pack: dict[str, np.ndarray], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **pack)
    tmp.replace(path)
    return path


def load_pack(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def cached(name: str, build, *, directory: Path | None = None) -> dict[str, np.ndarray]:
    """Load the pack `name` from the cache, building it with `build()` and saving it if absent."""
    path = (directory or packs_cache_dir()) / f"{name}-v{PACK_VERSION}.npz"
    if path.is_file():
        return load_pack(path)
    pack = build()
    save_pack(pack, path)
    return pack


def cached_pack(key: str, ds_factory, size: int, *, directory: Path | None = None) -> dict[str, np.ndarray]:
    """Load the pack `key` at `size` px from the cache, building it from `ds_factory()` if absent."""
    return cached(f"{key}-{size}px", lambda: build_pack(ds_factory(), size, desc=key), directory=directory)


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), each class split in the same proportion, seeded."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = max(1, round(len(idx) * fraction))
        val.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.asarray(train)), np.sort(np.asarray(val))
