"""Pairs of fingerprints: a blocked, vectorised pHash Hamming search (the candidates), confirmed by
thumb correlation (`find_duplicates`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from .fingerprinting import THUMB_SIZE, Fingerprint
from .thresholds import MAX_HAMMING, MIN_CORRELATION

_BLOCK = 512  # rows per block of the Hamming search: 512 x 6000 uint64 = 24 MB


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
