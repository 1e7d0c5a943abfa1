"""`python -m tumorlens.audit`: audit the datasets (or, with --calibrate, print the measurements the
thresholds were chosen from). The command line lives here only; the library raises, this turns
errors into exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import DataError
from .calibration import calibrate
from ..data.registry import dataset_names
from .dataset_audit import audit, format_table
from .thresholds import MAX_HAMMING, MIN_CORRELATION

DESCRIPTION = "Leakage and duplicate audit: exact and near-duplicate images within and across datasets."


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tumorlens.audit", description=DESCRIPTION)
    p.add_argument("--data-home", "--data-root", dest="data_home",
                   help="the data home: the folder holding brisc2025/, figshare/, lgg/ (default $TUMORLENS_DATA or ../shared/data)")
    p.add_argument("--out", default="runs/audit", type=Path, help="folder for duplicates.json (default runs/audit)")
    p.add_argument("--datasets", nargs="+", choices=dataset_names(), default=list(dataset_names()))
    p.add_argument("--max-hamming", type=int, default=MAX_HAMMING)
    p.add_argument("--min-correlation", type=float, default=MIN_CORRELATION)
    p.add_argument("--no-cache", action="store_true", help="do not read or write the fingerprint cache")
    p.add_argument("--calibrate", action="store_true",
                   help="instead of auditing, print the measurements the default thresholds were chosen from")
    args = p.parse_args(argv)
    if args.calibrate:
        print(json.dumps(calibrate(args.data_home, cache=not args.no_cache), indent=1))
        return 0
    try:
        report = audit(args.data_home, args.out, args.datasets, max_hamming=args.max_hamming,
                       min_correlation=args.min_correlation, cache=not args.no_cache)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(f"wrote {args.out / 'duplicates.json'} ({report['seconds']['total']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
