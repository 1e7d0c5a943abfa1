"""python -m tumorlens.bench: the results table beside the seeds, from the shipped weights.

    python -m tumorlens.bench                              # everything -> benchmarks/results.{md,json} + plots
    python -m tumorlens.bench --subset 16 --out /tmp/bench # a quick end-to-end check (CI)
    python -m tumorlens.bench --sections speed             # one section

Figshare cross-validation is read from benchmarks/figshare_cv/ (ImageNet start) and its brisc-start/
subfolder (training 10 models does not fit one CPU session); `python -m tumorlens.bench.figshare_cv
[--start brisc]` re-runs those folds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DataError
from ..paths import runs_dir
from . import figshare_cv
from .run import run_bench

SECTIONS = ("audit", "brisc", "figshare", "lgg", "speed")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m tumorlens.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks"), help="results.md, results.json and plots")
    p.add_argument("--data-home", "--data-root", dest="data_home",
                   help="the data home: the folder holding brisc2025/, figshare/, lgg/ (default $TUMORLENS_DATA or ../shared/data)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--subset", type=int, help="score only the first N test images per dataset (a smoke run)")
    p.add_argument("--speed-runs", type=int, default=50, help="timed runs per row after warm-up (>= 50 for the table)")
    p.add_argument("--figshare-results", type=Path, default=figshare_cv.RESULTS_DIR)
    p.add_argument("--cases-dir", type=Path, default=runs_dir("bench", "cases"),
                   help="best/worst overlay grids (dataset images: never commit them)")
    p.add_argument("--no-cases", action="store_true")
    p.add_argument("--merge", action="store_true",
                   help="keep the other sections of an existing results.json (e.g. re-time speed on a quiet machine)")
    args = p.parse_args(argv)
    try:
        run_bench(args.out, data_home=args.data_home, limit=args.subset, speed_runs=args.speed_runs,
                  sections=args.sections, figshare_results=args.figshare_results,
                  cases_dir=None if args.no_cases else args.cases_dir, argv=argv, merge=args.merge)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
