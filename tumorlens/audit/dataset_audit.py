"""The dataset audit: train vs test inside each dataset, and every split against every split across
datasets, with the report written to duplicates.json and printed as a table."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .fingerprinting import FINGERPRINT_VERSION, HASH_BITS, THUMB_SIZE, Fingerprint, _as_store, fingerprints
from .matching import find_duplicates
from .thresholds import MAX_HAMMING, MIN_CORRELATION

from ..data.registry import dataset_names, get_dataset

DATASET_NAMES = dataset_names()  # at import; the audit checks names against the live registry


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

    record = get_dataset(name)  # ConfigError (a ValueError) for an unknown name
    root = _brisc_root(data_root) if name == "brisc2025" else record.root_in(data_root)
    parts = record.groups(record.load(root, check="none"))  # its splits, or its folds
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
          datasets: Iterable[str] | None = None, *, max_hamming: int = MAX_HAMMING,
          min_correlation: float = MIN_CORRELATION, cache: bool | str | Path = True,
          progress: bool = True) -> dict:
    """Train-vs-test inside each dataset and every split against every split across datasets.
    data_root: the data home, the folder holding brisc2025/, figshare/, lgg/ (default: each loader's own
    default); the BRISC root itself also works. datasets: default every registered one.
    Returns the report; with `out`, also writes out/duplicates.json."""
    names = list(dict.fromkeys(dataset_names() if datasets is None else datasets))
    for n in names:
        get_dataset(n)  # ConfigError (a ValueError) for an unknown name
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
