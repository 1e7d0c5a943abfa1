"""Figshare 5-fold cross-validation over the author's patient-wise folds (cvind5fold.mat).

Each fold trains a classifier (3 classes) and a segmenter from ImageNet weights on the other four
folds, with the same recipes as the shipped models, and scores the held-out fold. BRISC-trained
weights are not used as a start: BRISC train holds ~1,600 Figshare slices (see the audit), so a
BRISC start would have seen test folds. Training is slow on a CPU, so each fold's result is stored
in benchmarks/figshare_cv/ with how, where and when it was made, and the bench reads those files;
this module re-runs them:

    python -m tumorlens.bench.figshare_cv --folds 1 2 3 4 5 --kinds classifier segmenter
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from ..models import EVAL_NAME, TRAINING_INFO_NAME

KINDS = ("classifier", "segmenter")
DEFAULT_EPOCHS = {"classifier": 5, "segmenter": 4}
RESULTS_DIR = Path("benchmarks") / "figshare_cv"


def result_path(out_dir: Path, kind: str, fold: int) -> Path:
    return Path(out_dir) / f"fold{fold}-{kind}.json"


def train_argv(kind: str, fold: int, run_dir: Path, epochs: int, threads: int | None, data_root) -> list[str]:
    argv = ["--dataset", "figshare", "--fold", str(fold), "--run-dir", str(run_dir), "--epochs", str(epochs),
            "--patience", str(epochs)]  # a fixed schedule: validation only picks the best epoch
    if threads:
        argv += ["--threads", str(threads)]
    if data_root:
        argv += ["--data-root", str(data_root)]
    return argv


def run_fold(kind: str, fold: int, *, run_root: Path, out_dir: Path = RESULTS_DIR, epochs: int | None = None,
             threads: int | None = None, data_root=None, extra_argv: list[str] = ()) -> dict:
    """Train (or resume) one fold, score it, and store the compact result with its provenance."""
    from ..training.recipes import train_classifier, train_segmenter
    epochs = epochs or DEFAULT_EPOCHS[kind]
    run_dir = Path(run_root) / f"fold{fold}-{kind}"
    argv = train_argv(kind, fold, run_dir, epochs, threads, data_root) + list(extra_argv)
    script = "train/train_segmenter.py" if kind == "segmenter" else "train/train_classifier.py"
    t0 = time.time()
    model = (train_segmenter if kind == "segmenter" else train_classifier)(argv)
    if model is None:
        raise RuntimeError(f"fold {fold} {kind}: training stopped before the schedule ended; re-run to resume")
    ev = json.loads((model / EVAL_NAME).read_text())
    info = json.loads((model / TRAINING_INFO_NAME).read_text())
    ev.pop("per_image", None)
    result = {
        **ev,
        "kind": kind,
        "init": "ImageNet (checksum-verified shipped checkpoint); no BRISC-trained weights",
        "training": {"epochs": epochs, "best_epoch": info.get("best_epoch"), "train_seconds": info.get("train_seconds"),
                     "val_metrics": info.get("val_metrics"), "hardware": info.get("hardware"),
                     "validation": "id blocks of 40 slices held out from the training folds (patients kept together)"},
        "made": {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "wall_seconds": round(time.time() - t0, 1),
                 "command": f"python {script} " + shlex.join(argv),
                 "rerun": f"python -m tumorlens.bench.figshare_cv --folds {fold} --kinds {kind} --epochs {epochs}"},
    }
    path = result_path(out_dir, kind, fold)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return result


def load_results(out_dir: Path = RESULTS_DIR) -> dict[str, dict[int, dict]]:
    """{kind: {fold: stored result}} for whatever folds have been run."""
    found = {k: {} for k in KINDS}
    for kind in KINDS:
        for fold in range(1, 6):
            path = result_path(out_dir, kind, fold)
            if path.is_file():
                found[kind][fold] = json.loads(path.read_text())
    return found


def summarize(results: dict[str, dict[int, dict]]) -> dict:
    """Cross-validation summary: pooled over all test slices (each slice is scored exactly once) and per fold."""
    out = {}
    cls = results.get("classifier", {})
    if cls:
        n = sum(r["n"] for r in cls.values())
        correct = sum(round(r["accuracy"] * r["n"]) for r in cls.values())
        cm = np.sum([np.asarray(r["confusion_matrix"]) for r in cls.values()], axis=0)
        per_class_recall = (np.diag(cm) / cm.sum(1).clip(min=1)).tolist()
        out["classification"] = {
            "folds": sorted(cls), "complete": sorted(cls) == [1, 2, 3, 4, 5], "n": n, "accuracy": correct / n,
            "accuracy_per_fold": {k: r["accuracy"] for k, r in sorted(cls.items())},
            "macro_f1_per_fold": {k: r["macro_f1"] for k, r in sorted(cls.items())},
            "confusion_matrix": cm.tolist(), "class_names": next(iter(cls.values()))["class_names"],
            "recall_per_class": per_class_recall,
        }
    seg = results.get("segmenter", {})
    if seg:
        n = sum(r["n_tumor_slices"] for r in seg.values())
        out["segmentation"] = {
            "folds": sorted(seg), "complete": sorted(seg) == [1, 2, 3, 4, 5], "n": n,
            "dice_mean": sum(r["dice_mean"] * r["n_tumor_slices"] for r in seg.values()) / n,
            "dice_mean_per_fold": {k: r["dice_mean"] for k, r in sorted(seg.items())},
            "miou": sum(r["miou"] * r["n_tumor_slices"] for r in seg.values()) / n,
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tumorlens.bench.figshare_cv", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5], choices=range(1, 6))
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--epochs", type=int, help="epochs per fold (default: classifier 5, segmenter 4)")
    p.add_argument("--run-root", type=Path, default=Path("runs/figshare_cv"), help="checkpoints; re-running resumes")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--threads", type=int)
    p.add_argument("--data-root")
    p.add_argument("--skip-done", action="store_true", help="leave folds that already have a stored result")
    args = p.parse_args(argv)
    for fold in args.folds:
        for kind in args.kinds:
            if args.skip_done and result_path(args.out, kind, fold).is_file():
                continue
            r = run_fold(kind, fold, run_root=args.run_root, out_dir=args.out, epochs=args.epochs,
                         threads=args.threads, data_root=args.data_root)
            score = f"accuracy {r['accuracy']:.4f}" if kind == "classifier" else f"Dice {r['dice_mean']:.4f}"
            print(f"fold {fold} {kind}: {score}", flush=True)
    print(json.dumps(summarize(load_results(args.out)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
