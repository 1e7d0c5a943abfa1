"""`python -m tumorlens.audit --calibrate`: the measurements the thresholds were chosen from, one
function per measurement. The numbers they gave: docs/explanation/audit.md."""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..preprocess import decode_image
from .dataset_audit import DATASET_NAMES, _Collection, _load_collection, _sub
from .fingerprinting import Fingerprint, _as_store, fingerprint, normalized_thumb
from .matching import _candidates, _correlations, _hashes, _thumbs, find_duplicates, hamming, popcount64
from .thresholds import DETAIL_SIGMA, MAX_HAMMING, MIN_CONTENT_STD, MIN_CORRELATION


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


def _band(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}"


def _lgg_patients_and_slices(data_root) -> tuple[np.ndarray, np.ndarray]:
    """Patient id and slice number of every LGG slice, in the order of the audit's LGG collection."""
    from ..data import lgg as lgg_mod
    dd = lgg_mod.load(_sub(data_root, "lgg"), check="none")
    pid = np.concatenate([np.asarray(dd[s]["patient_id"]) for s in lgg_mod.SPLIT_NAMES])
    sl = np.concatenate([np.asarray(dd[s]["slice"]) for s in lgg_mod.SPLIT_NAMES])
    return pid, sl


def measure_distinct_slices(fps: Sequence[Fingerprint], pid: np.ndarray) -> dict:
    """Negatives: every pair of LGG slices from different patients (they cannot share a slice) whose
    pHashes are within 16 bits: their Hamming distances and correlations."""
    ha = _hashes(fps)
    i, j, d = _candidates(ha, ha, 16, True)
    keep = pid[i] != pid[j]
    i, j, d = i[keep], j[keep], d[keep].astype(np.int64)
    corr = _correlations(_thumbs(fps), _thumbs(fps), i, j)
    raw = np.stack([_raw_thumb(f) for f in fps])
    content = np.array([f.content for f in fps])
    rawc = _correlations(raw, raw, i, j)
    n_pairs = len(fps) * (len(fps) - 1) // 2 - int(sum(c * (c - 1) // 2 for c in np.unique(pid, return_counts=True)[1]))
    near = d <= MAX_HAMMING
    out = {
        "what": "LGG slice pairs from different patients", "pairs": n_pairs,
        "blank_slices": int(sum(f.blank for f in fps)),
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
        out["max_correlation_by_content"][_band(lo, hi)] = round(float(corr[sel].max()), 4) if sel.any() else None
    return out


def _pick_planted(cols: dict[str, _Collection], rng: np.random.Generator, n_planted: int) -> list[tuple[str, int]]:
    """(dataset, row) of `n_planted` random non-blank slices, drawn evenly from every dataset."""
    picks = []
    for name in DATASET_NAMES:
        ok = [k for k, f in enumerate(cols[name].fps) if not f.blank]
        picks += [(name, int(k)) for k in rng.choice(ok, min(len(ok), n_planted // len(DATASET_NAMES)), replace=False)]
    return picks


def _pick_low_content(lgg_fps: Sequence[Fingerprint], rng: np.random.Generator) -> list[tuple[str, int]]:
    """(content band, row) of up to 20 random LGG slices per CONTENT_BANDS band."""
    content = np.array([f.content for f in lgg_fps])
    band_picks = []
    for lo, hi in CONTENT_BANDS:
        ks = np.flatnonzero((content >= lo) & (content < hi))
        band_picks += [(_band(lo, hi), int(k)) for k in rng.choice(ks, min(len(ks), 20), replace=False)]
    return band_picks


def _copy_records(cols: dict[str, _Collection], todo, progress: bool) -> tuple[dict, dict]:
    """Fingerprint every PLANTED_COPIES copy of each (dataset, row, band) in `todo` against its
    original: (hamming, correlation, exact, correlation had it not been blanked) per copy kind
    (band None) and per content band."""
    per, per_band = defaultdict(list), defaultdict(list)
    for name, k, band in tqdm(todo, desc="planted copies", unit="img", disable=not progress, mininterval=1.0, leave=False):
        f0 = cols[name].fps[k]
        im = Image.fromarray(decode_image(f0.source))
        for kind, make in PLANTED_COPIES.items():
            f1 = fingerprint(make(im))
            rec = (hamming(f0.phash, f1.phash), float(f0.thumb.ravel() @ f1.thumb.ravel()),
                   f0.pixel_sha256 == f1.pixel_sha256,
                   float(normalized_thumb(f0.gray32).ravel() @ normalized_thumb(f1.gray32).ravel()))
            (per[kind] if band is None else per_band[band]).append(rec)
    return per, per_band


def _found_at_defaults(r) -> bool:
    return r[2] or (r[0] <= MAX_HAMMING and r[1] >= MIN_CORRELATION)


def measure_planted_copies(per: dict) -> dict:
    """Positives: per copy kind, how far the copies of random non-blank slices land and how many are found."""
    pos = {}
    for kind, recs in per.items():
        a = np.array(recs, dtype=np.float64)
        found = [_found_at_defaults(r) for r in recs]
        pos[kind] = {"n": len(recs), "exact": int(a[:, 2].sum()), "max_hamming": int(a[:, 0].max()),
                     "p99_hamming": float(np.percentile(a[:, 0], 99)), "min_correlation": round(float(a[:, 1].min()), 4),
                     "p1_correlation": round(float(np.percentile(a[:, 1], 1)), 4), "found_at_defaults": int(sum(found))}
    return pos


def measure_low_content(per_band: dict) -> dict:
    """Positives among dim LGG slices: per content band, the copies' worst Hamming distance and
    correlation (had the slice not been blanked), and how many are found."""
    return {band: {"n": len(recs), "max_hamming": int(max(r[0] for r in recs)),
                   "min_correlation_if_not_blanked": round(float(min(r[3] for r in recs)), 4),
                   "found_at_defaults": int(sum(_found_at_defaults(r) for r in recs))}
            for band, recs in per_band.items()}


def measure_byte_identical(brisc_fps: Sequence[Fingerprint]) -> dict:
    """BRISC's byte-identical files: whether every pair comes out 'exact'."""
    groups = defaultdict(list)
    for k, f in enumerate(brisc_fps):
        groups[f.file_sha256].append(k)
    same = {(min(x, y), max(x, y)) for v in groups.values() if len(v) > 1 for x in v for y in v if x != y}
    involved = sorted({k for p in same for k in p})
    sub = [brisc_fps[k] for k in involved]
    found = {(involved[p["index_a"]], involved[p["index_b"]]) for p in find_duplicates(sub) if p["kind"] == "exact"}
    return {"pairs": len(same), "found_exact": len(same & found)}


def measure_real_copies(figshare_fps: Sequence[Fingerprint], brisc_fps: Sequence[Fingerprint]) -> dict:
    """Real copies: BRISC holds Figshare slices (512 -> 256 resize, re-encoded): each Figshare slice's
    best BRISC match is either a copy or a different slice; the gap between the two is the margin."""
    cm = _thumbs(figshare_fps) @ _thumbs(brisc_fps).T
    hm = popcount64(_hashes(figshare_fps)[:, None] ^ _hashes(brisc_fps)[None, :])
    best = cm.max(axis=1)
    edges = [0.0, 0.9, 0.95, 0.96, 0.97, 0.975, 0.98, 0.99, 0.995, 1.001]
    copies = cm >= MIN_CORRELATION
    return {
        "best_match_correlation_histogram": {_band(lo, hi): int(n) for lo, hi, n in
                                             zip(edges[:-1], edges[1:], np.histogram(best, bins=edges)[0])},
        "highest_best_match_below_0.99": round(float(best[best < 0.99].max()), 4),
        f"pairs_correlation>={MIN_CORRELATION}": int(copies.sum()),
        f"max_hamming_of_pairs_correlation>={MIN_CORRELATION}": int(hm[copies].max()) if copies.any() else None,
    }


def measure_neighbouring_slices(lgg_fps: Sequence[Fingerprint], pid: np.ndarray, sl: np.ndarray) -> dict:
    """Same patient, neighbouring slices (LGG): these can be as alike as copies; never across splits."""
    where = {(p, s): k for k, (p, s) in enumerate(zip(pid, sl))}
    th = _thumbs(lgg_fps)
    out = {}
    for gap in (1, 2, 3):
        pr = np.array([(k, where[(p, s + gap)]) for k, (p, s) in enumerate(zip(pid, sl)) if (p, s + gap) in where])
        c = np.einsum("ij,ij->i", th[pr[:, 0]], th[pr[:, 1]])
        out[f"gap_{gap}"] = {"pairs": int(len(c)), "max_correlation": round(float(c.max()), 4),
                             f"pairs>={MIN_CORRELATION}": int((c >= MIN_CORRELATION).sum())}
    return out


def calibrate(data_root: str | Path | None = None, *, n_planted: int = 300, seed: int = 0,
              cache: bool | str | Path = True, progress: bool = True) -> dict:
    """Measure what the thresholds must separate (the numbers in docs/explanation/audit.md):
    - negatives: every pair of LGG slices from different patients (they cannot share a slice)
      whose pHashes are within 16 bits: their Hamming distances and correlations;
    - positives: planted copies (PLANTED_COPIES) of `n_planted` random non-blank slices drawn
      evenly from BRISC, Figshare and LGG, plus low-content LGG slices by content band;
    - BRISC's byte-identical files: whether every pair comes out 'exact';
    - real copies (Figshare slices in BRISC) and neighbouring LGG slices of one patient."""
    store = _as_store(cache)
    cols = {n: _load_collection(n, data_root, store, progress) for n in DATASET_NAMES}
    rng = np.random.default_rng(seed)
    lgg_fps, brisc_fps = cols["lgg"].fps, cols["brisc2025"].fps
    pid, sl = _lgg_patients_and_slices(data_root)
    report: dict = {"max_hamming": MAX_HAMMING, "min_correlation": MIN_CORRELATION,
                    "min_content_std": MIN_CONTENT_STD, "detail_sigma": DETAIL_SIGMA}
    report["negatives"] = measure_distinct_slices(lgg_fps, pid)
    todo = ([(name, k, None) for name, k in _pick_planted(cols, rng, n_planted)]
            + [("lgg", k, band) for band, k in _pick_low_content(lgg_fps, rng)])
    per, per_band = _copy_records(cols, todo, progress)
    report["positives"] = measure_planted_copies(per)
    report["low_content_lgg"] = measure_low_content(per_band)
    report["brisc_byte_identical"] = measure_byte_identical(brisc_fps)
    report["figshare_vs_brisc"] = measure_real_copies(cols["figshare"].fps, brisc_fps)
    report["lgg_neighbouring_slices"] = measure_neighbouring_slices(lgg_fps, pid, sl)
    return report
