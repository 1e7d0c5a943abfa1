"""Leakage and duplicate audit: exact and near-duplicate images within and across datasets.
What it does, the thresholds and how they were measured: docs/explanation/audit.md.

Modules: `fingerprinting` (Fingerprint, pHash, thumbnails, the cache), `matching` (Hamming search,
`find_duplicates`), `dataset_audit` (`audit`, `format_table`), `overlap` (BRISC against its own
splits and the other datasets), `calibration` (`calibrate`), `thresholds`; the command line is
`python -m tumorlens.audit` (`__main__.py`)."""

from __future__ import annotations

from .calibration import CONTENT_BANDS, PLANTED_COPIES, calibrate
from .dataset_audit import DATASET_NAMES, audit, format_table
from .fingerprinting import (CACHE_ENV, DEFAULT_CACHE_DIR, FINGERPRINT_VERSION, HASH_BITS, HASH_SIZE, THUMB_SIZE,
                             Fingerprint, FingerprintCache, default_cache_dir, fingerprint, fingerprints,
                             normalized_thumb, phash_of, stretch, to_gray)
from .matching import _candidates, _hashes, find_duplicates, hamming, pair_stats, popcount64, popcount64_lut
from .overlap import brisc_split_overlap, brisc_test_leaks, brisc_train_overlap, duplicates_of_brisc
from .thresholds import (DETAIL_SIGMA, EXCLUSION_MIN_CORRELATION, MAX_HAMMING, MIN_CONTENT_STD, MIN_CORRELATION,
                         STRETCH_PERCENTILE)


def main(argv: list[str] | None = None) -> int:
    """The `python -m tumorlens.audit` command line (imported on call, so `-m` runs __main__ once)."""
    from .__main__ import main as cli_main
    return cli_main(argv)


__all__ = [
    "CACHE_ENV", "CONTENT_BANDS", "DATASET_NAMES", "DEFAULT_CACHE_DIR", "DETAIL_SIGMA", "EXCLUSION_MIN_CORRELATION",
    "FINGERPRINT_VERSION", "HASH_BITS", "HASH_SIZE", "MAX_HAMMING", "MIN_CONTENT_STD", "MIN_CORRELATION",
    "PLANTED_COPIES", "STRETCH_PERCENTILE", "THUMB_SIZE", "Fingerprint", "FingerprintCache", "audit",
    "brisc_split_overlap", "brisc_test_leaks", "brisc_train_overlap", "calibrate", "default_cache_dir",
    "duplicates_of_brisc", "find_duplicates", "fingerprint", "fingerprints", "format_table", "hamming", "main",
    "normalized_thumb", "pair_stats", "phash_of", "popcount64", "popcount64_lut", "stretch", "to_gray",
]
