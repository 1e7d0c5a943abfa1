"""Image fingerprints for the duplicate audit: pixel and file hashes, the DCT pHash, the stretched
32x32 thumbnail and its detail, and an on-disk cache of them."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.ndimage
from tqdm.auto import tqdm

from ..errors import DataError
from ..preprocess import decode_image, letterbox_image
from .thresholds import DETAIL_SIGMA, MIN_CONTENT_STD, STRETCH_PERCENTILE

THUMB_SIZE = 32
HASH_SIZE = 8
HASH_BITS = HASH_SIZE * HASH_SIZE - 1  # the DC term is left out
FINGERPRINT_VERSION = 2
CACHE_ENV = "TUMORLENS_AUDIT_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/tumorlens/audit")


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


@dataclass(eq=False)
class Fingerprint:
    """What the audit keeps of one image. `gray32`: the letterboxed 32x32 uint8 grayscale
    thumbnail after an intensity stretch (min .. 99.5th percentile -> 0 .. 255, so dim slices keep
    their detail through uint8); `content`: standard deviation of the unstretched thumbnail, in
    grey levels (under MIN_CONTENT_STD the image is blank: it can match only exactly)."""

    pixel_sha256: str
    phash: int
    gray32: np.ndarray
    height: int
    width: int
    content: float
    file_sha256: str | None = None
    source: str | None = None
    thumb: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.thumb = np.zeros((THUMB_SIZE, THUMB_SIZE), np.float32) if self.blank else normalized_thumb(self.gray32)

    @property
    def blank(self) -> bool:
        return self.content < MIN_CONTENT_STD

    @classmethod
    def from_gray(cls, gray: np.ndarray, *, file_sha256: str | None = None, source: str | None = None):
        gray = np.ascontiguousarray(gray, dtype=np.uint8)
        h, w = gray.shape
        pixel_sha = hashlib.sha256(f"{h}x{w}:".encode() + gray.tobytes()).hexdigest()
        raw32 = _thumbnail(gray)
        gray32 = _thumbnail(stretch(gray))
        return cls(pixel_sha, phash_of(gray32), gray32, h, w, round(float(raw32.std()), 3), file_sha256, source)


def _thumbnail(gray: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(letterbox_image(np.repeat(gray[..., None], 3, axis=-1), THUMB_SIZE)[0][..., 0])


def stretch(gray: np.ndarray, upper: float = STRETCH_PERCENTILE) -> np.ndarray:
    """uint8 grayscale -> uint8 with its minimum at 0 and its `upper` percentile at 255."""
    counts = np.bincount(gray.ravel(), minlength=256)
    cum = np.cumsum(counts)
    lo = int(np.flatnonzero(counts)[0])
    hi = int(np.searchsorted(cum, cum[-1] * upper / 100.0))
    if hi - lo < 1:
        return gray
    lut = np.clip(np.rint((np.arange(256, dtype=np.float32) - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
    return lut[gray]


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> HxW uint8 luma (ITU-R 601, PIL's fixed-point weights, which sum to 1 exactly,
    so a gray image stored as RGB gives back its own values)."""
    rgb = rgb.astype(np.uint32)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def phash_of(gray32: np.ndarray) -> int:
    """32x32 thumbnail -> 63-bit DCT pHash as an int (0 for a constant thumbnail)."""
    if gray32.min() == gray32.max():
        return 0
    coef = scipy.fft.dctn(gray32.astype(np.float64), type=2, norm="ortho")[:HASH_SIZE, :HASH_SIZE].ravel()[1:]
    bits = np.append(coef > np.median(coef), False)
    return int(np.packbits(bits, bitorder="little").view("<u8")[0])


def normalized_thumb(gray32: np.ndarray) -> np.ndarray:
    """32x32 uint8 -> its detail: the thumbnail minus a Gaussian blur (sigma DETAIL_SIGMA px), then
    zero mean and unit norm, float32 32x32 (all zeros for a constant thumbnail)."""
    g = gray32.astype(np.float32)
    v = g - scipy.ndimage.gaussian_filter(g, DETAIL_SIGMA)
    v -= v.mean()
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-6 else np.zeros_like(v)


def fingerprint(source, *, max_pixels: int | None = None) -> Fingerprint:
    """An image path, bytes, array, PIL image or datasets Image dict -> its `Fingerprint`.
    Unreadable images raise `DataError` naming the file."""
    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    if isinstance(source, dict):  # datasets.Image(decode=False): {"bytes": ..., "path": ...}
        source = source.get("bytes") or source.get("path")
        if source is None:
            raise DataError(None, "image row holds neither bytes nor a path")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise DataError(path, "image file not found")
        data = path.read_bytes()
        try:
            rgb = decode_image(data, **kwargs)
        except DataError as exc:
            raise DataError(path, exc.reason) from exc
        return Fingerprint.from_gray(to_gray(rgb), file_sha256=hashlib.sha256(data).hexdigest(), source=str(path))
    if isinstance(source, (bytes, bytearray)):
        return Fingerprint.from_gray(to_gray(decode_image(bytes(source), **kwargs)),
                                     file_sha256=hashlib.sha256(source).hexdigest())
    return Fingerprint.from_gray(to_gray(decode_image(source, **kwargs)))


class FingerprintCache:
    """Fingerprints of files on disk, one .npz shard per folder, keyed by the resolved file path
    and stamped with its size and mtime: a changed file is fingerprinted again and replaces its
    old entry. Shards are written atomically (a concurrent writer can only lose entries)."""

    def __init__(self, root: str | Path | None = None):
        self.root = (Path(root).expanduser() if root is not None else default_cache_dir()) / f"v{FINGERPRINT_VERSION}"
        self._shards: dict[str, dict[str, tuple]] = {}
        self._dirty: set[str] = set()

    @staticmethod
    def key(path: Path) -> tuple[str, str, str]:
        """(folder, resolved path, 'size|mtime_ns') of a file; OSError if it cannot be stat'ed."""
        path = Path(path).resolve()
        st = path.stat()
        return str(path.parent), str(path), f"{st.st_size}|{st.st_mtime_ns}"

    def _shard_file(self, folder: str) -> Path:
        return self.root / (hashlib.sha1(folder.encode()).hexdigest()[:20] + ".npz")

    def _shard(self, folder: str) -> dict[str, tuple]:
        if folder not in self._shards:
            entries: dict[str, tuple] = {}
            f = self._shard_file(folder)
            if f.is_file():
                try:
                    with np.load(f, allow_pickle=False) as z:
                        for row in zip(z["paths"], z["stamps"], z["pixel_sha"], z["file_sha"], z["shape"],
                                       z["phash"], z["gray32"], z["content"]):
                            p, st, ps, fs, hw, ph, g, ct = row
                            entries[str(p)] = (str(st), str(ps), str(fs) or None, int(hw[0]), int(hw[1]), int(ph),
                                               g, float(ct))
                except (OSError, ValueError, KeyError, EOFError):
                    entries = {}  # a broken or foreign shard is rebuilt
            self._shards[folder] = entries
        return self._shards[folder]

    def get(self, path: str | Path) -> Fingerprint | None:
        try:
            folder, rpath, stamp = self.key(path)
        except OSError:
            return None
        hit = self._shard(folder).get(rpath)
        if hit is None or hit[0] != stamp:
            return None
        _, ps, fs, h, w, ph, g, ct = hit
        return Fingerprint(ps, ph, np.array(g, dtype=np.uint8), h, w, ct, fs, str(path))

    def put(self, path: str | Path, fp: Fingerprint) -> None:
        folder, rpath, stamp = self.key(path)
        self._shard(folder)[rpath] = (stamp, fp.pixel_sha256, fp.file_sha256, fp.height, fp.width, fp.phash,
                                      fp.gray32, fp.content)
        self._dirty.add(folder)

    def flush(self) -> None:
        if not self._dirty:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in sorted(self._dirty):
            entries = self._shards[folder]
            paths = sorted(entries)
            rows = [entries[k] for k in paths]
            target = self._shard_file(folder)
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.savez(f, paths=np.array(paths, dtype=str), stamps=np.array([r[0] for r in rows], dtype=str),
                         pixel_sha=np.array([r[1] for r in rows], dtype="U64"),
                         file_sha=np.array([r[2] or "" for r in rows], dtype="U64"),
                         shape=np.array([(r[3], r[4]) for r in rows], dtype=np.int32).reshape(-1, 2),
                         phash=np.array([r[5] for r in rows], dtype=np.uint64),
                         gray32=np.array([r[6] for r in rows], dtype=np.uint8).reshape(-1, THUMB_SIZE, THUMB_SIZE),
                         content=np.array([r[7] for r in rows], dtype=np.float64))
            os.replace(tmp, target)
        self._dirty.clear()


def _sources(dataset_or_paths, column: str) -> list:
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        datasets = None
    if datasets is not None and isinstance(dataset_or_paths, datasets.DatasetDict):
        raise TypeError("give one split of the DatasetDict (e.g. dd['train']), not the whole dict")
    if datasets is not None and isinstance(dataset_or_paths, datasets.Dataset):
        ds = dataset_or_paths.select_columns([column]).cast_column(column, datasets.Image(decode=False))
        rows = list(ds[column])
        return [r["path"] if isinstance(r, dict) and not r.get("bytes") and r.get("path") else r for r in rows]
    return list(dataset_or_paths)


def _as_store(cache) -> FingerprintCache | None:
    if isinstance(cache, FingerprintCache):
        return cache
    if cache is True:
        return FingerprintCache()
    return FingerprintCache(cache) if cache else None


def fingerprints(dataset_or_paths, desc: str = "fingerprinting", *, column: str = "image",
                 cache: bool | str | Path | FingerprintCache = False, progress: bool = True) -> list[Fingerprint]:
    """Fingerprint every image of a `datasets.Dataset` (its `column`, read with
    `datasets.Image(decode=False)`) or of an iterable of paths/bytes/arrays, in order.
    cache: False (none), True (the default cache folder), a folder, or a `FingerprintCache`;
    only images that are files are cached."""
    sources = _sources(dataset_or_paths, column)
    store = _as_store(cache)
    out = []
    try:
        for src in tqdm(sources, desc=desc, unit="img", disable=not progress or len(sources) < 2,
                        mininterval=1.0, leave=False):
            is_file = isinstance(src, (str, Path))
            fp = store.get(Path(src)) if store is not None and is_file else None
            if fp is None:
                fp = fingerprint(src)
                if store is not None and is_file:
                    store.put(Path(src), fp)
            out.append(fp)
    finally:
        if store is not None:
            store.flush()
    return out
