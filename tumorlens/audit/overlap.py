"""Cross-dataset queries: which BRISC images duplicate which images of its own train split or of
another dataset (for de-duplicated test scores and for leaving copies out of training)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .dataset_audit import DATASET_NAMES, _Collection, _load_collection
from .fingerprinting import _as_store
from .matching import find_duplicates
from .thresholds import EXCLUSION_MIN_CORRELATION, MAX_HAMMING, MIN_CORRELATION


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
