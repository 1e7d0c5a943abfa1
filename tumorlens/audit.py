"""Leakage and duplicate audit: exact and near-duplicate images within and across datasets.

Every image gets a `Fingerprint`:

- `pixel_sha256`: sha256 of the decoded grayscale pixels at native size (size included), so a
  PNG re-save of a JPEG's pixels, or an RGB file holding gray pixels, matches exactly;
  `file_sha256`: sha256 of the file bytes, when the image came from a file or bytes;
- `gray32`: grayscale, intensity stretched (minimum -> 0, 99.5th percentile -> 255, so dim
  slices keep their detail in uint8, and brightness/gain changes cancel), letterboxed to
  32x32 with `tumorlens.preprocess.letterbox_image`;
- `phash`: DCT perceptual hash of `gray32`: 2-D DCT-II (`scipy.fft.dctn`, orthonormal), the
  top-left 8x8 block without its DC term, bit = coefficient > median of those 63, packed in a
  uint64 (bit 63 always 0). Exactly 31 bits are set, so Hamming distances are even;
- `thumb`: the *detail* of `gray32` (minus its Gaussian blur, sigma 1.5 px), float32, zero
  mean, unit norm: the dot product of two thumbs is their Pearson correlation;
- `content`: standard deviation of the unstretched 32x32 thumbnail in grey levels. Under
  MIN_CONTENT_STD the image is *blank* (all-black end slices): its thumb is zeros, so it
  matches only exactly.

`find_duplicates` calls a pair *exact* when the pixel hashes agree, and *near* when the pHash
Hamming distance is at most `max_hamming` (a blocked, vectorised popcount search: the
candidates) AND the thumb correlation is at least `min_correlation` (the confirmation).
Flips, rotations and crops are not matched.

Default thresholds, chosen from data
------------------------------------
Measured with ``python -m tumorlens.audit --calibrate`` (fingerprint version 2; about 75 s
with the fingerprint cache warm, about 3 min cold, one process) on the full datasets:

- Distinct slices: all 7,635,771 pairs of LGG slices of *different patients* (they cannot
  share a slice). pHash alone cannot separate them: 162,792 pairs are within 14 bits and the
  minimum distance is 0. Their thumb (detail) correlation peaks at 0.935 (99.99th percentile
  0.891). Plain, un-high-passed thumbnails would reach 0.987 here (small top-of-head slices
  are all one bright oval), as high as real copies, which is why the detail is compared.
- Real copies: BRISC contains Figshare slices (512 -> 256 px, re-encoded). Each Figshare
  slice's best BRISC match is either >= 0.995 (1640 slices) or <= 0.9685 (0 in between); the
  ones just under are neighbouring slices of the same patient. Copies are within 4 bits.
- Planted copies of 300 random non-blank slices (100 per dataset): PNG re-save 300/300 exact;
  JPEG q70, resize 90%, resize 50% + JPEG q90, brightness +10, gain x1.2: Hamming <= 4,
  correlation >= 0.9959; gamma 0.8: Hamming <= 8, correlation >= 0.9897. All 2100 found.
- Dim slices (LGG, 20 per content band, same 7 copies): lowest copy correlation 0.9813 at
  content 5-10, 0.978 at 3-5, 0.931 at 2-3, 0.79 at 1-2, and Hamming up to 14-36 under 3;
  151 of 3929 LGG slices (none in BRISC or Figshare) have content under 5.
- BRISC's 55 byte-identical file pairs all come out `exact`.

So MAX_HAMMING = 14: copies need <= 8 (real ones <= 4); 14 leaves 6 bits of slack while
passing only ~2% of distinct pairs on to the correlation check. MIN_CORRELATION = 0.975:
between the highest distinct-slice correlation seen (0.9685, a same-patient neighbour;
0.935 across patients) and the lowest planted copy (0.9813; real copies >= 0.995).
MIN_CONTENT_STD = 5: below it planted copies fall to 0.978 and under, into the range of
distinct slices. At these defaults the LGG cross-patient pairs give 0 false pairs and LGG vs
BRISC/Figshare (different sources) 0 pairs. Caveat: neighbouring slices of one patient can be
as alike as copies (LGG, adjacent slices: 139 of 3819 pairs >= 0.975, max 0.9945), so a
'near' pair may be an adjacent slice of the same scan, which for leakage is as bad.

CLI: ``python -m tumorlens.audit [--data-root DIR] [--out DIR] [--datasets brisc2025 figshare lgg]``
audits train vs test inside each dataset (BRISC classification train/test, LGG train/validation/
test by patient, Figshare's 5 patient-wise folds against each other) and every split of each
dataset against every split of the others, writes ``duplicates.json`` (default runs/audit/)
and prints a table; ``--calibrate`` prints the measurements above instead.
Fingerprints are cached under ~/.cache/tumorlens/audit/ ($TUMORLENS_AUDIT_CACHE), keyed by
file path, size and mtime.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import scipy.fft
import scipy.ndimage
from PIL import Image
from tqdm.auto import tqdm

from .errors import DataError
from .preprocess import decode_image, letterbox_image

THUMB_SIZE = 32
HASH_SIZE = 8
HASH_BITS = HASH_SIZE * HASH_SIZE - 1  # the DC term is left out
MAX_HAMMING = 14
MIN_CORRELATION = 0.975
# Leaving training images out is cheaper to overdo than to underdo: a looser bar also drops the
# neighbouring slices of a shared patient (<= 0.9685 seen), still above distinct patients (max 0.935).
EXCLUSION_MIN_CORRELATION = 0.90
MIN_CONTENT_STD = 5.0
DETAIL_SIGMA = 1.5
STRETCH_PERCENTILE = 99.5
FINGERPRINT_VERSION = 2
CACHE_ENV = "TUMORLENS_AUDIT_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/tumorlens/audit")
DATASET_NAMES = ("brisc2025", "figshare", "lgg")
_BLOCK = 512  # rows per block of the Hamming search: 512 x 6000 uint64 = 24 MB


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


# --------------------------------------------------------------------------- fingerprints

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


# --------------------------------------------------------------------------- matching

_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount64_lut(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64, through a 256-entry byte table (for numpy without bitwise_count)."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _POP8[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (np.bitwise_count where numpy has it)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(np.asarray(x, dtype=np.uint64))
    return popcount64_lut(x)


def hamming(h1: int, h2: int) -> int:
    """Bits in which two pHashes differ."""
    return (int(h1) ^ int(h2)).bit_count()


def _hashes(fps: Sequence[Fingerprint]) -> np.ndarray:
    return np.fromiter((f.phash for f in fps), dtype=np.uint64, count=len(fps))


def _thumbs(fps: Sequence[Fingerprint]) -> np.ndarray:
    if not fps:
        return np.zeros((0, THUMB_SIZE * THUMB_SIZE), dtype=np.float32)
    return np.stack([f.thumb.ravel() for f in fps]).astype(np.float32, copy=False)


def _candidates(ha: np.ndarray, hb: np.ndarray, max_hamming: int, within: bool, block: int = _BLOCK):
    """All (i, j, distance) with Hamming(ha[i], hb[j]) <= max_hamming (j > i when within)."""
    ii, jj, dd = [], [], []
    for start in range(0, len(ha), block):
        rows = ha[start:start + block]
        col0 = start if within else 0
        cols = hb[col0:]
        if not len(cols):
            break
        dist = popcount64(rows[:, None] ^ cols[None, :])
        r, c = np.nonzero(dist <= max_hamming)
        d = dist[r, c]
        r, c = r + start, c + col0
        if within:
            keep = c > r
            r, c, d = r[keep], c[keep], d[keep]
        ii.append(r), jj.append(c), dd.append(d)
    if not ii:
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.uint8),)
    return np.concatenate(ii).astype(np.int64), np.concatenate(jj).astype(np.int64), np.concatenate(dd)


def pair_stats(a: Sequence[Fingerprint], b: Sequence[Fingerprint] | None = None, *, max_hamming: int = 64):
    """(i, j, hamming, correlation) arrays of every candidate pair within `max_hamming`; with the
    default 64 that is every pair. For calibration and diagnostics; `find_duplicates` decides."""
    within = b is None
    a = list(a)
    b = a if within else list(b)
    i, j, d = _candidates(_hashes(a), _hashes(b), max_hamming, within)
    return i, j, d.astype(np.int64), _correlations(_thumbs(a), _thumbs(b), i, j)


def _correlations(ta: np.ndarray, tb: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 65536) -> np.ndarray:
    out = np.empty(len(i), dtype=np.float32)
    for s in range(0, len(i), chunk):
        out[s:s + chunk] = np.einsum("ij,ij->i", ta[i[s:s + chunk]], tb[j[s:s + chunk]])
    return out


def find_duplicates(a: Sequence[Fingerprint], b: Sequence[Fingerprint] | None = None, *,
                    max_hamming: int = MAX_HAMMING, min_correlation: float = MIN_CORRELATION) -> list[dict]:
    """Exact and near-duplicate pairs between fingerprint lists `a` and `b`, or within `a` when `b`
    is None (each unordered pair once, index_a < index_b). Each pair is a dict: index_a, index_b,
    kind ('exact': same decoded pixels, correlation reported as 1.0; 'near': pHash Hamming <=
    max_hamming and thumb correlation >= min_correlation), hamming, correlation. Sorted by
    (index_a, index_b). Blocked: memory stays ~_BLOCK x len(b) x 9 bytes whatever the sizes."""
    within = b is None
    a = list(a)
    b = a if within else list(b)
    if not a or not b:
        return []
    by_sha = defaultdict(list)
    for j, f in enumerate(b):
        by_sha[f.pixel_sha256].append(j)
    exact = {(i, j) for i, f in enumerate(a) for j in by_sha.get(f.pixel_sha256, ()) if not within or j > i}

    i, j, d = _candidates(_hashes(a), _hashes(b), max_hamming, within)
    if exact:  # identical pixels always hash alike; this only guards odd inputs
        seen = set(zip(i.tolist(), j.tolist()))
        extra = sorted(exact - seen)
        if extra:
            ei, ej = (np.array(x, dtype=np.int64) for x in zip(*extra))
            ed = popcount64(_hashes(a)[ei] ^ _hashes(b)[ej])
            i, j, d = np.concatenate([i, ei]), np.concatenate([j, ej]), np.concatenate([d, ed])
    corr = _correlations(_thumbs(a), _thumbs(b), i, j)
    pairs = []
    for ii, jj, dd, cc in zip(i.tolist(), j.tolist(), d.tolist(), corr.tolist()):
        if (ii, jj) in exact:
            kind, cc = "exact", 1.0  # identical pixels (a blank pair's thumbs would give 0)
        elif cc >= min_correlation:
            kind = "near"
        else:
            continue
        pairs.append({"index_a": ii, "index_b": jj, "kind": kind, "hamming": int(dd),
                      "correlation": round(float(cc), 4)})
    pairs.sort(key=lambda p: (p["index_a"], p["index_b"]))
    return pairs


# --------------------------------------------------------------------------- dataset audit

@dataclass
class _Collection:
    """One dataset's images, fingerprints and named groups (splits or folds) of row indices."""

    name: str
    file_names: list[str]
    fps: list[Fingerprint]
    groups: dict[str, np.ndarray]


def _brisc_root(data_root):
    if data_root is None:
        return None
    root = Path(data_root).expanduser()
    return root if (root / "classification_task").is_dir() else root / "brisc2025"


def _sub(root, name):
    return None if root is None else Path(root).expanduser() / name


def _load_collection(name: str, data_root, cache, progress: bool = True) -> _Collection:
    import datasets

    from .data import brisc2025, figshare, lgg
    if name == "brisc2025":
        dd = brisc2025.load_classification(_brisc_root(data_root), check="none")
        parts = [(split, dd[split]) for split in brisc2025.SPLITS]
    elif name == "lgg":
        dd = lgg.load(_sub(data_root, "lgg"), check="none")
        parts = [(split, dd[split]) for split in lgg.SPLIT_NAMES]
    elif name == "figshare":
        ds = figshare.load(_sub(data_root, "figshare"), check="none")["train"]
        fold = np.asarray(ds["fold"])
        parts = [(f"fold{k}", ds.select(np.flatnonzero(fold == k))) for k in range(1, figshare.N_FOLDS + 1)]
    else:
        raise ValueError(f"unknown dataset {name!r}; choose from {DATASET_NAMES}")
    whole = datasets.concatenate_datasets([p for _, p in parts])
    fps = fingerprints(whole, f"fingerprinting {name}", cache=cache, progress=progress)
    groups, start = {}, 0
    for split, part in parts:
        groups[split] = np.arange(start, start + len(part))
        start += len(part)
    return _Collection(name, list(whole["file_name"]), fps, groups)


def _compare(ca: _Collection, ga: str, cb: _Collection, gb: str, max_hamming, min_correlation) -> dict:
    ia, ib = ca.groups[ga], cb.groups[gb]
    pairs = find_duplicates([ca.fps[k] for k in ia], [cb.fps[k] for k in ib],
                            max_hamming=max_hamming, min_correlation=min_correlation)
    listed = [{"a": ca.file_names[ia[p["index_a"]]], "b": cb.file_names[ib[p["index_b"]]], "kind": p["kind"],
               "hamming": p["hamming"], "correlation": p["correlation"]} for p in pairs]
    return {
        "a": f"{ca.name}/{ga}", "b": f"{cb.name}/{gb}", "scope": "within" if ca is cb else "across",
        "n_a": int(len(ia)), "n_b": int(len(ib)),
        "exact_pairs": sum(p["kind"] == "exact" for p in pairs),
        "near_pairs": sum(p["kind"] == "near" for p in pairs),
        "a_images_with_duplicate": len({p["a"] for p in listed}),
        "b_images_with_duplicate": len({p["b"] for p in listed}),
        "pairs": listed,
    }


def audit(data_root: str | Path | None = None, out: str | Path | None = None,
          datasets: Iterable[str] = DATASET_NAMES, *, max_hamming: int = MAX_HAMMING,
          min_correlation: float = MIN_CORRELATION, cache: bool | str | Path = True,
          progress: bool = True) -> dict:
    """Train-vs-test inside each dataset and every split against every split across datasets.
    data_root: the folder holding brisc2025/, figshare/, lgg/ (default: each loader's own default).
    Returns the report; with `out`, also writes out/duplicates.json."""
    names = list(dict.fromkeys(datasets))
    for n in names:
        if n not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {n!r}; choose from {DATASET_NAMES}")
    store = _as_store(cache)
    t0 = time.perf_counter()
    cols = {n: _load_collection(n, data_root, store, progress) for n in names}
    t_fp = time.perf_counter() - t0
    comparisons = []
    for n in names:  # within a dataset: each pair of its splits / folds
        c = cols[n]
        g = list(c.groups)
        comparisons += [_compare(c, g[x], c, g[y], max_hamming, min_correlation)
                        for x in range(len(g)) for y in range(x + 1, len(g))]
    for x in range(len(names)):  # across datasets: every split against every split
        for y in range(x + 1, len(names)):
            ca, cb = cols[names[x]], cols[names[y]]
            comparisons += [_compare(ca, ga, cb, gb, max_hamming, min_correlation)
                            for ga in ca.groups for gb in cb.groups]
    report = {
        "fingerprint_version": FINGERPRINT_VERSION,
        "thresholds": {"max_hamming": max_hamming, "min_correlation": min_correlation,
                       "hash_bits": HASH_BITS, "thumb_size": THUMB_SIZE},
        "datasets": {n: {"n_images": len(c.fps), "groups": {g: int(len(ix)) for g, ix in c.groups.items()}}
                     for n, c in cols.items()},
        "seconds": {"fingerprints": round(t_fp, 1), "total": round(time.perf_counter() - t0, 1)},
        "comparisons": comparisons,
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "duplicates.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def format_table(report: dict) -> str:
    head = f"{'a':<22} {'b':<22} {'n_a':>5} {'n_b':>5} {'exact':>6} {'near':>6} {'b dup':>6}"
    lines = [head, "-" * len(head)]
    for c in report["comparisons"]:
        lines.append(f"{c['a']:<22} {c['b']:<22} {c['n_a']:>5} {c['n_b']:>5} {c['exact_pairs']:>6} "
                     f"{c['near_pairs']:>6} {c['b_images_with_duplicate']:>6}")
    t = report["thresholds"]
    lines.append(f"near = pHash Hamming <= {t['max_hamming']}/{t['hash_bits']} and thumbnail correlation >= "
                 f"{t['min_correlation']}; 'b dup' = images of b with a duplicate in a")
    return "\n".join(lines)


def brisc_test_leaks(data_root: str | Path | None = None, *, max_hamming: int = MAX_HAMMING,
                     min_correlation: float = MIN_CORRELATION, cache: bool | str | Path = True,
                     progress: bool = True) -> set[str]:
    """File names of BRISC classification *test* images that exactly or nearly duplicate some
    classification *train* image; drop them to report a de-duplicated test score. data_root:
    the BRISC root or the folder holding brisc2025/. Fingerprints are cached, so a second call
    only stats the files."""
    store = _as_store(cache)
    c = _load_collection("brisc2025", data_root, store, progress)
    itrain, itest = c.groups["train"], c.groups["test"]
    pairs = find_duplicates([c.fps[k] for k in itrain], [c.fps[k] for k in itest],
                            max_hamming=max_hamming, min_correlation=min_correlation)
    return {c.file_names[itest[p["index_b"]]] for p in pairs}


def _brisc_pairs(other: str, data_root, rows_of, *, max_hamming, min_correlation, cache,
                 progress) -> list[tuple[str, str]]:
    """(BRISC file name, `other` file name) of every duplicate pair between the BRISC rows that
    rows_of(collection) picks and all of `other`. data_root: the BRISC root or the folder holding both."""
    if other not in DATASET_NAMES or other == "brisc2025":
        raise ValueError(f"other must be one of {[n for n in DATASET_NAMES if n != 'brisc2025']}, not {other!r}")
    parent = data_root
    if data_root is not None and (Path(data_root).expanduser() / "classification_task").is_dir():
        parent = Path(data_root).expanduser().parent  # given the BRISC root itself
    store = _as_store(cache)
    brisc = _load_collection("brisc2025", parent, store, progress)
    rest = _load_collection(other, parent, store, progress)
    rows = rows_of(brisc)
    pairs = find_duplicates([brisc.fps[k] for k in rows], rest.fps,
                            max_hamming=max_hamming, min_correlation=min_correlation)
    return [(brisc.file_names[rows[p["index_a"]]], rest.file_names[p["index_b"]]) for p in pairs]


def brisc_train_overlap(other: str, data_root: str | Path | None = None, *, max_hamming: int = MAX_HAMMING,
                        min_correlation: float = EXCLUSION_MIN_CORRELATION, cache: bool | str | Path = True,
                        progress: bool = True) -> set[str]:
    """File names of BRISC *train* images that duplicate, or nearly duplicate, any image of dataset
    `other` (at the looser EXCLUSION_MIN_CORRELATION by default). Leave them out of BRISC training
    before a BRISC-trained model is scored on, or used as the start for, `other`.
    data_root: the BRISC root or the folder holding brisc2025/ and `other`/."""
    return brisc_split_overlap(other, "train", data_root, max_hamming=max_hamming, min_correlation=min_correlation,
                               cache=cache, progress=progress)


def brisc_split_overlap(other: str, split: str, data_root: str | Path | None = None, *,
                        max_hamming: int = MAX_HAMMING, min_correlation: float = EXCLUSION_MIN_CORRELATION,
                        cache: bool | str | Path = True, progress: bool = True) -> set[str]:
    """File names of the BRISC `split` images that duplicate, or nearly duplicate, any image of `other`."""
    pairs = _brisc_pairs(other, data_root, lambda c: c.groups[split], max_hamming=max_hamming,
                         min_correlation=min_correlation, cache=cache, progress=progress)
    return {a for a, _ in pairs}


def duplicates_of_brisc(other: str, brisc_file_names=(), data_root: str | Path | None = None, *,
                        splits: Sequence[str] = (), max_hamming: int = MAX_HAMMING,
                        min_correlation: float = EXCLUSION_MIN_CORRELATION, cache: bool | str | Path = True,
                        progress: bool = True) -> set[str]:
    """File names of dataset `other`'s images that duplicate, or nearly duplicate, any of the named
    BRISC images or any image of the BRISC `splits`. Leave them out of extra training data before
    scoring on those images: BRISC reuses slices of the other public datasets."""
    wanted = set(brisc_file_names)

    def rows_of(brisc: _Collection) -> np.ndarray:
        named = [i for i, name in enumerate(brisc.file_names) if name in wanted]
        if len(named) != len(wanted):
            raise ValueError(f"{len(wanted) - len(named)} of the named images are not in BRISC 2025")
        return np.union1d(np.asarray(named, dtype=np.int64),
                          np.concatenate([brisc.groups[s] for s in splits] or [np.zeros(0, np.int64)]))

    pairs = _brisc_pairs(other, data_root, rows_of, max_hamming=max_hamming, min_correlation=min_correlation,
                         cache=cache, progress=progress)
    return {b for _, b in pairs}


# --------------------------------------------------------------------------- calibration

def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _shift(img: Image.Image, delta: int) -> Image.Image:
    return Image.fromarray(np.clip(np.asarray(img).astype(np.int16) + delta, 0, 255).astype(np.uint8))


def _gamma(img: Image.Image, g: float) -> Image.Image:
    return Image.fromarray(np.rint(255.0 * (np.asarray(img) / 255.0) ** g).astype(np.uint8))


def _resize(img: Image.Image, f: float) -> Image.Image:
    return img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.BILINEAR)


CONTENT_BANDS = [(0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 5.0), (5.0, 10.0), (10.0, 1000.0)]

# What a copy of a slice goes through on its way into another collection: re-saving, lossy
# re-encoding, rescaling (Figshare's 512 -> 256), and intensity changes.
PLANTED_COPIES = {
    "png_resave": lambda im: _encode(im, "PNG"),
    "jpeg_q70": lambda im: _encode(im, "JPEG", quality=70),
    "resize_90": lambda im: _encode(_resize(im, 0.9), "PNG"),
    "resize_50_jpeg_q90": lambda im: _encode(_resize(im, 0.5), "JPEG", quality=90),
    "brightness_+10": lambda im: _encode(_shift(im, 10), "PNG"),
    "gain_x1.2": lambda im: _encode(Image.fromarray(np.clip(np.asarray(im).astype(np.float32) * 1.2,
                                                             0, 255).round().astype(np.uint8)), "PNG"),
    "gamma_0.8": lambda im: _encode(_gamma(im, 0.8), "PNG"),
}


def _raw_thumb(fp: Fingerprint) -> np.ndarray:
    """The plain (not high-passed) normalised thumbnail, for comparison in `calibrate`."""
    v = fp.gray32.astype(np.float32).ravel()
    v -= v.mean()
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-6 else v * 0


def calibrate(data_root: str | Path | None = None, *, n_planted: int = 300, seed: int = 0,
              cache: bool | str | Path = True, progress: bool = True) -> dict:
    """Measure what the thresholds must separate (the numbers in this module's docstring):
    - negatives: every pair of LGG slices from different patients (they cannot share a slice)
      whose pHashes are within 16 bits: their Hamming distances and correlations;
    - positives: planted copies (PLANTED_COPIES) of `n_planted` random non-blank slices drawn
      evenly from BRISC, Figshare and LGG, plus low-content LGG slices by content band;
    - BRISC's byte-identical files: whether every pair comes out 'exact'."""
    from .data import lgg as lgg_mod
    store = _as_store(cache)
    cols = {n: _load_collection(n, data_root, store, progress) for n in DATASET_NAMES}
    rng = np.random.default_rng(seed)
    report: dict = {"max_hamming": MAX_HAMMING, "min_correlation": MIN_CORRELATION,
                    "min_content_std": MIN_CONTENT_STD, "detail_sigma": DETAIL_SIGMA}

    # negatives
    lg = cols["lgg"]
    dd = lgg_mod.load(_sub(data_root, "lgg"), check="none")
    pid = np.concatenate([np.asarray(dd[s]["patient_id"]) for s in lgg_mod.SPLIT_NAMES])
    ha = _hashes(lg.fps)
    i, j, d = _candidates(ha, ha, 16, True)
    keep = pid[i] != pid[j]
    i, j, d = i[keep], j[keep], d[keep].astype(np.int64)
    corr = _correlations(_thumbs(lg.fps), _thumbs(lg.fps), i, j)
    raw = np.stack([_raw_thumb(f) for f in lg.fps])
    content = np.array([f.content for f in lg.fps])
    rawc = _correlations(raw, raw, i, j)
    n_pairs = len(lg.fps) * (len(lg.fps) - 1) // 2 - int(sum(c * (c - 1) // 2 for c in np.unique(pid, return_counts=True)[1]))
    near = d <= MAX_HAMMING
    report["negatives"] = {
        "what": "LGG slice pairs from different patients", "pairs": n_pairs,
        "blank_slices": int(sum(f.blank for f in lg.fps)),
        "pairs_hamming<=16": int(len(d)), f"pairs_hamming<={MAX_HAMMING}": int(near.sum()),
        "min_hamming": int(d.min()) if len(d) else None,
        "max_correlation_hamming<=16": float(corr.max()),
        f"max_correlation_hamming<={MAX_HAMMING}": float(corr[near].max()),
        "p99.99_correlation_hamming<=16": float(np.percentile(corr, 99.99)),
        "max_raw_thumbnail_correlation_hamming<=16": float(rawc.max()),
        "false_pairs_at_defaults": int((near & (corr >= MIN_CORRELATION)).sum()),
        "max_correlation_by_content": {},
    }
    lowest = np.minimum(content[i], content[j])
    for lo, hi in CONTENT_BANDS:
        sel = (lowest >= lo) & (lowest < hi)
        report["negatives"]["max_correlation_by_content"][f"{lo:g}-{hi:g}"] = \
            round(float(corr[sel].max()), 4) if sel.any() else None

    # positives
    picks = []
    for name in DATASET_NAMES:
        ok = [k for k, f in enumerate(cols[name].fps) if not f.blank]
        picks += [(name, int(k)) for k in rng.choice(ok, min(len(ok), n_planted // len(DATASET_NAMES)), replace=False)]
    band_picks = []
    for lo, hi in CONTENT_BANDS:
        ks = np.flatnonzero((content >= lo) & (content < hi))
        band_picks += [(f"{lo:g}-{hi:g}", int(k)) for k in rng.choice(ks, min(len(ks), 20), replace=False)]
    per = defaultdict(list)
    per_band = defaultdict(list)
    todo = [(name, k, None) for name, k in picks] + [("lgg", k, band) for band, k in band_picks]
    for name, k, band in tqdm(todo, desc="planted copies", unit="img", disable=not progress, mininterval=1.0, leave=False):
        f0 = cols[name].fps[k]
        im = Image.fromarray(decode_image(f0.source))
        for kind, make in PLANTED_COPIES.items():
            f1 = fingerprint(make(im))
            rec = (hamming(f0.phash, f1.phash), float(f0.thumb.ravel() @ f1.thumb.ravel()),
                   f0.pixel_sha256 == f1.pixel_sha256,
                   float(normalized_thumb(f0.gray32).ravel() @ normalized_thumb(f1.gray32).ravel()))
            (per[kind] if band is None else per_band[band]).append(rec)
    pos = {}
    for kind, recs in per.items():
        a = np.array(recs, dtype=np.float64)
        found = [(r[2] or (r[0] <= MAX_HAMMING and r[1] >= MIN_CORRELATION)) for r in recs]
        pos[kind] = {"n": len(recs), "exact": int(a[:, 2].sum()), "max_hamming": int(a[:, 0].max()),
                     "p99_hamming": float(np.percentile(a[:, 0], 99)), "min_correlation": round(float(a[:, 1].min()), 4),
                     "p1_correlation": round(float(np.percentile(a[:, 1], 1)), 4), "found_at_defaults": int(sum(found))}
    report["positives"] = pos
    report["low_content_lgg"] = {
        band: {"n": len(recs), "max_hamming": int(max(r[0] for r in recs)),
               "min_correlation_if_not_blanked": round(float(min(r[3] for r in recs)), 4),
               "found_at_defaults": int(sum(r[2] or (r[0] <= MAX_HAMMING and r[1] >= MIN_CORRELATION) for r in recs))}
        for band, recs in per_band.items()}

    # BRISC byte-identical files
    br = cols["brisc2025"]
    groups = defaultdict(list)
    for k, f in enumerate(br.fps):
        groups[f.file_sha256].append(k)
    same = {(min(x, y), max(x, y)) for v in groups.values() if len(v) > 1 for x in v for y in v if x != y}
    involved = sorted({k for p in same for k in p})
    sub = [br.fps[k] for k in involved]
    found = {(involved[p["index_a"]], involved[p["index_b"]]) for p in find_duplicates(sub) if p["kind"] == "exact"}
    report["brisc_byte_identical"] = {"pairs": len(same), "found_exact": len(same & found)}

    # real copies: BRISC holds Figshare slices (512 -> 256 resize, re-encoded): each Figshare slice's
    # best BRISC match is either a copy or a different slice; the gap between the two is the margin
    fs = cols["figshare"]
    cm = _thumbs(fs.fps) @ _thumbs(br.fps).T
    hm = popcount64(_hashes(fs.fps)[:, None] ^ _hashes(br.fps)[None, :])
    best = cm.max(axis=1)
    edges = [0.0, 0.9, 0.95, 0.96, 0.97, 0.975, 0.98, 0.99, 0.995, 1.001]
    copies = cm >= MIN_CORRELATION
    report["figshare_vs_brisc"] = {
        "best_match_correlation_histogram": {f"{lo:g}-{hi:g}": int(n) for lo, hi, n in
                                             zip(edges[:-1], edges[1:], np.histogram(best, bins=edges)[0])},
        "highest_best_match_below_0.99": round(float(best[best < 0.99].max()), 4),
        f"pairs_correlation>={MIN_CORRELATION}": int(copies.sum()),
        f"max_hamming_of_pairs_correlation>={MIN_CORRELATION}": int(hm[copies].max()) if copies.any() else None,
    }

    # same patient, neighbouring slices (LGG): these can be as alike as copies; never across splits
    sl = np.concatenate([np.asarray(dd[s]["slice"]) for s in lgg_mod.SPLIT_NAMES])
    where = {(p, s): k for k, (p, s) in enumerate(zip(pid, sl))}
    th = _thumbs(lg.fps)
    report["lgg_neighbouring_slices"] = {}
    for gap in (1, 2, 3):
        pr = np.array([(k, where[(p, s + gap)]) for k, (p, s) in enumerate(zip(pid, sl)) if (p, s + gap) in where])
        c = np.einsum("ij,ij->i", th[pr[:, 0]], th[pr[:, 1]])
        report["lgg_neighbouring_slices"][f"gap_{gap}"] = {
            "pairs": int(len(c)), "max_correlation": round(float(c.max()), 4),
            f"pairs>={MIN_CORRELATION}": int((c >= MIN_CORRELATION).sum())}
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tumorlens.audit", description=__doc__.split("\n")[0])
    p.add_argument("--data-root", help="folder holding brisc2025/, figshare/, lgg/ (default $TUMORLENS_DATA or ../shared/data)")
    p.add_argument("--out", default="runs/audit", type=Path, help="folder for duplicates.json (default runs/audit)")
    p.add_argument("--datasets", nargs="+", choices=DATASET_NAMES, default=list(DATASET_NAMES))
    p.add_argument("--max-hamming", type=int, default=MAX_HAMMING)
    p.add_argument("--min-correlation", type=float, default=MIN_CORRELATION)
    p.add_argument("--no-cache", action="store_true", help="do not read or write the fingerprint cache")
    p.add_argument("--calibrate", action="store_true",
                   help="instead of auditing, print the measurements the default thresholds were chosen from")
    args = p.parse_args(argv)
    if args.calibrate:
        print(json.dumps(calibrate(args.data_root, cache=not args.no_cache), indent=1))
        return 0
    try:
        report = audit(args.data_root, args.out, args.datasets, max_hamming=args.max_hamming,
                       min_correlation=args.min_correlation, cache=not args.no_cache)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(f"wrote {args.out / 'duplicates.json'} ({report['seconds']['total']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
