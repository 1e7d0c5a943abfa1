"""Figshare 5-fold cross-validation over the author's patient-wise folds (cvind5fold.mat).

Each fold trains a classifier (3 classes) and a segmenter on the other four folds, with the same
recipes as the shipped models, and scores the held-out fold. Two starts, stored apart:

- `imagenet` (benchmarks/figshare_cv/): the checksum-verified ImageNet checkpoints;
- `brisc` (benchmarks/figshare_cv/brisc-start/): a BRISC model trained for this purpose with every
  BRISC train image the audit finds in Figshare left out (`--exclude-duplicates-of figshare`; the
  shipped BRISC models saw Figshare slices: ~1,500 inside BRISC train, and the classifier all it was allowed
  (`--extra-train figshare`), so they may not start a fold). The start is
  trained once (under --run-root) and each fold fine-tunes from it.

Training is slow on a CPU, so each fold's result is stored with how, where and when it was made,
and the bench reads those files; this module re-runs them:

    python -m tumorlens.bench.figshare_cv --start brisc --folds 1 2 3 4 5 --kinds classifier segmenter
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.registry import get_dataset
from ..errors import ConfigError, TumorLensError
from ..models import EVAL_NAME, TRAINING_INFO_NAME, read_training_info
from ..paths import runs_dir
from ..training.cli import command_line
from ..training.specs import DataSpec, ReleaseSpec

KINDS = ("classifier", "segmenter")
DEFAULT_EPOCHS = {"classifier": 5, "segmenter": 4}
# The BRISC-minus-Figshare start, trained once per kind. The classifier's 16 epochs beat 8 on its BRISC
# validation split (98.57% vs 96.86%, best epochs 14 and 6); the segmenter's 8 were not revisited.
START_EPOCHS = {"classifier": 16, "segmenter": 8}
# Folds fine-tuned from a BRISC start use a lower peak rate than the from-scratch recipes: at the
# classifier's 2e-3, fold 1's validation accuracy fell from 96.6% to 91.7% after one epoch.
FINETUNE_LR = {"classifier": 5e-4, "segmenter": 4e-4}
RESULTS_DIR = Path("benchmarks") / "figshare_cv"
STARTS = ("imagenet", "brisc")
IMAGENET_INIT = "ImageNet (checksum-verified shipped checkpoint); no BRISC-trained weights"


def results_dir(root: Path, start: str) -> Path:
    """Where a start's fold results live: the ImageNet ones at the root, the BRISC-start ones beside."""
    return Path(root) if start == "imagenet" else Path(root) / f"{start}-start"


@dataclass(frozen=True)
class Smoke:
    """Smaller runs for tests: a handful of images, a few steps."""
    limit: int | None = None
    max_steps: int | None = None
    batch_size: int | None = None


def _specs(kind: str, epochs: int, threads: int | None, lr: float | None, init_from: str | None, smoke: Smoke):
    """(setup, schedule) as the recipe's command line would make them, with a fixed schedule: validation
    only picks the best epoch."""
    from ..hardware import default_threads
    from ..training.cli import DEFAULTS, FINETUNE_LR_FACTOR, parent_settings
    from ..training.loop import TrainConfig
    from ..training.tasks import ClassificationSetup, SegmentationSetup
    d = DEFAULTS[kind]
    inherited = parent_settings(init_from, kind) if init_from else {}
    if kind == "segmenter":
        setup = SegmentationSetup(encoder=inherited.get("encoder", d["encoder"]), decoder=inherited.get("decoder", d["decoder"]),
                                  imagenet_init=not init_from, input_size=inherited.get("input_size", d["input_size"]),
                                  crop=inherited.get("crop", d["crop"]))
    else:
        setup = ClassificationSetup(arch=inherited.get("arch", d["arch"]), imagenet_init=not init_from,
                                    input_size=inherited.get("input_size", d["input_size"]))
    schedule = TrainConfig(epochs=epochs, patience=epochs, batch_size=smoke.batch_size or d["batch_size"],
                           lr=lr or d["lr"] * (FINETUNE_LR_FACTOR if init_from else 1.0), max_steps=smoke.max_steps,
                           num_threads=threads or default_threads())
    return setup, schedule


def _train(kind: str, data: DataSpec, setup, schedule, release: ReleaseSpec, run_dir: Path, init_from: str | None):
    """Train through the very recipe the command line uses."""
    from ..training.recipes import train_classifier, train_segmenter
    train = train_segmenter if kind == "segmenter" else train_classifier
    return train(data, setup, schedule, release, run_dir, init_from=init_from)


def checked_start(folder: Path) -> dict:
    """The start's training record; refuses a model that saw Figshare slices."""
    info = read_training_info(folder)
    data = info.get("data") or {}
    if data.get("dataset") != "brisc2025" or data.get("excluded_duplicates_of") != "figshare":
        raise ConfigError(f"{folder} cannot start a Figshare fold: its training did not leave out the BRISC "
                          f"images that duplicate Figshare slices (train it with --exclude-duplicates-of figshare)")
    return info


def train_start(kind: str, *, run_root: Path, epochs: int | None = None, threads: int | None = None,
                data_home=None, smoke: Smoke = Smoke()) -> tuple[Path, dict]:
    """Train (or resume, or reuse) the BRISC-minus-Figshare start for `kind`; (its folder, provenance).
    `data_home`: the folder holding brisc2025/ and figshare/ (tumorlens.data.registry)."""
    epochs = epochs or START_EPOCHS[kind]
    run_dir = Path(run_root) / f"brisc-start-{kind}"
    folder = run_dir / "model"
    data = DataSpec(dataset="brisc2025", root=get_dataset("brisc2025").root_in(data_home),
                    exclude_duplicates_of="figshare", limit=smoke.limit)
    release = ReleaseSpec(out=folder, replace=True, evaluate=False)
    setup, schedule = _specs(kind, epochs, threads, None, None, smoke)
    command = command_line(kind, data, setup, schedule, release, run_dir)
    if not (folder / TRAINING_INFO_NAME).is_file():
        result = _train(kind, data, setup, schedule, release, run_dir, None)
        if result.model is None:
            raise RuntimeError(f"the BRISC start for the {kind}: training stopped before the schedule ended; re-run to resume")
    info = checked_start(folder)
    return folder, {"model": str(folder), "command": command,
                    "epochs": (info.get("train_config") or {}).get("epochs"), "best_epoch": info.get("best_epoch"),
                    "train_seconds": info.get("train_seconds"), "data": info["data"], "val_metrics": info.get("val_metrics")}


def result_path(out_dir: Path, kind: str, fold: int) -> Path:
    return Path(out_dir) / f"fold{fold}-{kind}.json"


def run_fold(kind: str, fold: int, *, run_root: Path, out_dir: Path = RESULTS_DIR, epochs: int | None = None,
             threads: int | None = None, data_home=None, smoke: Smoke = Smoke(), start: dict | None = None,
             lr: float | None = None) -> dict:
    """Train (or resume) one fold, score it, and store the compact result with its provenance.
    start: None for ImageNet weights, or train_start's provenance of a BRISC-minus-Figshare model.
    `data_home`: the folder holding figshare/ (tumorlens.data.registry)."""
    epochs = epochs or DEFAULT_EPOCHS[kind]
    run_dir = Path(run_root) / (f"fold{fold}-{kind}" if start is None else f"brisc-start-fold{fold}-{kind}")
    init_from = None
    if start is not None:
        checked_start(start["model"])
        init_from = str(start["model"])
    data = DataSpec(dataset="figshare", root=get_dataset("figshare").root_in(data_home), fold=fold,
                    limit=smoke.limit)
    release = ReleaseSpec()  # a fold model stays in its run directory: a measurement, not a release
    setup, schedule = _specs(kind, epochs, threads, lr, init_from, smoke)
    command = command_line(kind, data, setup, schedule, release, run_dir, init_from)
    t0 = time.time()
    result = _train(kind, data, setup, schedule, release, run_dir, init_from)
    model = result.model
    if model is None:
        raise RuntimeError(f"fold {fold} {kind}: training stopped before the schedule ended; re-run to resume")
    ev = json.loads((model / EVAL_NAME).read_text())
    info = json.loads((model / TRAINING_INFO_NAME).read_text())
    ev.pop("per_image", None)
    result = {
        **ev,
        "kind": kind,
        "init": IMAGENET_INIT if start is None else
                (f"BRISC-trained {kind} with the {start['data']['n_excluded']} BRISC train images the audit finds "
                 f"in Figshare left out ({start['data']['n_kept']} kept)"),
        "start": start,
        "training": {"epochs": epochs, "best_epoch": info.get("best_epoch"), "train_seconds": info.get("train_seconds"),
                     "val_metrics": info.get("val_metrics"), "hardware": info.get("hardware"),
                     "validation": "id blocks of 40 slices held out from the training folds (patients kept together)"},
        "made": {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "wall_seconds": round(time.time() - t0, 1),
                 "command": command,
                 "rerun": f"python -m tumorlens.bench.figshare_cv --start {'imagenet' if start is None else 'brisc'} "
                          f"--folds {fold} --kinds {kind} --epochs {epochs}" + (f" --{kind}-lr {lr}" if lr else "")
                          + (f" --start-epochs {start['epochs']}" if start is not None and start.get("epochs") else "")},
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
    p.add_argument("--start", choices=STARTS, default="imagenet",
                   help="initial weights of every fold: ImageNet, or BRISC trained without Figshare's slices")
    p.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5], choices=range(1, 6))
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--epochs", type=int, help="epochs per fold (default: classifier 5, segmenter 4)")
    p.add_argument("--start-epochs", type=int, help=f"epochs of the BRISC start (default: {START_EPOCHS})")
    p.add_argument("--classifier-lr", type=float,
                   help=f"peak learning rate of the classifier folds (default: the recipe's; {FINETUNE_LR['classifier']} from a BRISC start)")
    p.add_argument("--segmenter-lr", type=float,
                   help=f"peak learning rate of the segmenter folds (default: the recipe's; {FINETUNE_LR['segmenter']} from a BRISC start)")
    p.add_argument("--run-root", type=Path, default=runs_dir("figshare_cv"), help="checkpoints; re-running resumes")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results root (a BRISC start's go in a subfolder)")
    p.add_argument("--threads", type=int)
    p.add_argument("--data-home", "--data-root", dest="data_home",
                   help="the data home: the folder holding brisc2025/ and figshare/ (default $TUMORLENS_DATA or ../shared/data)")
    p.add_argument("--skip-done", action="store_true", help="leave folds that already have a stored result")
    args = p.parse_args(argv)
    out = results_dir(args.out, args.start)
    try:
        for kind in args.kinds:
            todo = [f for f in args.folds if not (args.skip_done and result_path(out, kind, f).is_file())]
            start = None
            if todo and args.start == "brisc":
                _, start = train_start(kind, run_root=args.run_root, epochs=args.start_epochs, threads=args.threads,
                                       data_home=args.data_home)
            for fold in todo:
                r = run_fold(kind, fold, run_root=args.run_root, out_dir=out, epochs=args.epochs, threads=args.threads,
                             data_home=args.data_home, start=start,
                             lr=getattr(args, f"{kind}_lr") or (FINETUNE_LR[kind] if start else None))
                score = f"accuracy {r['accuracy']:.4f}" if kind == "classifier" else f"Dice {r['dice_mean']:.4f}"
                print(f"fold {fold} {kind} ({args.start} start): {score}", flush=True)
    except TumorLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summarize(load_results(out)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
