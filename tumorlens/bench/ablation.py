"""The segmenter ablation: one fixed, small training budget per arm, each arm changing one factor of
today's recipe, scored on the BRISC validation split by the rule that chooses shipped models.

Budget for every arm: 8 epochs of 192 px crops from 256 px letterboxed slices, BRISC 2025 train with
its no_tumor slices (validation carved as always: seed 42, 10 %), batch 16, lr 1e-3, warm-up 1 epoch +
cosine. Threads (2 for the baseline, 1 for later arms, leaving a core for other work) change the
time, not the recipe. Scored with `tumorlens.postprocess.tune_postprocess` on the validation maps (hflip
TTA, as shipped): the best tumor-slice Dice with at most 2 % of healthy slices given a >= 50 px mask.

    python -m tumorlens.bench.ablation run [--arms A B] [--run-root DIR]   # train (resumes), score, report
    python -m tumorlens.bench.ablation speed                              # inference ms per arm, one run
    python -m tumorlens.bench.ablation report                             # benchmarks/ablation.{md,json}

Each arm is one setting of the segmenter recipe (a flag of train/train_segmenter.py); the table prints
the command that reruns it. The runner calls the typed recipe directly."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..paths import MODELS_DIR, runs_dir
from ..registry import BRISC_CLASSIFIER

EPOCHS, CROP = 8, 192
SPEED_ROUNDS = 3
CLASSIFIER = MODELS_DIR / BRISC_CLASSIFIER  # the shipped tumor-type classifier


@dataclass(frozen=True)
class Arm:
    name: str
    factor: str         # which factor of the recipe it changes
    change: str         # what it changes it to
    setup: dict = field(default_factory=dict)  # SegmentationSetup fields it sets


ARMS = (
    Arm("baseline", "-", "MobileNetV2 (ImageNet) U-Net, BCE + Dice: today's recipe"),
    Arm("encoder-lite2", "encoder", "EfficientNet-Lite2 (ImageNet)", {"encoder": "tu-tf_efficientnet_lite2"}),
    Arm("encoder-lite0-mri", "encoder", "EfficientNet-Lite0 from the shipped tumor-type classifier",
        {"encoder": "tu-tf_efficientnet_lite0", "encoder_from_classifier": str(CLASSIFIER), "imagenet_init": False}),
    Arm("decoder-scse", "decoder", "U-Net with scSE attention", {"decoder": "unet-scse"}),
    Arm("decoder-unetplusplus", "decoder", "U-Net++", {"decoder": "unetplusplus"}),
    Arm("loss-posweight3", "loss", "BCE with pos_weight 3 + Dice", {"bce_pos_weight": 3.0}),
    Arm("joint-type-head", "joint", "tumor-type head on the encoder, CE x 0.5", {"joint_weight": 0.5}),
)
ARM_NAMES = tuple(a.name for a in ARMS)


def arm(name: str) -> Arm:
    for a in ARMS:
        if a.name == name:
            return a
    raise KeyError(f"unknown arm {name!r}; arms: {', '.join(ARM_NAMES)}")


def default_run_root() -> Path:
    return runs_dir("ablation")


def arm_specs(a: Arm, run_root: Path, threads: int = 2):
    """(data, setup, schedule, release, run dir) of one arm: the same budget for all."""
    from ..training.loop import TrainConfig
    from ..training.specs import DataSpec, ReleaseSpec
    from ..training.tasks import SegmentationSetup
    setup = SegmentationSetup(crop=CROP, **a.setup)
    schedule = TrainConfig(epochs=EPOCHS, patience=EPOCHS, checkpoint_minutes=5, num_threads=threads)
    return DataSpec(), setup, schedule, ReleaseSpec(finalize=False), run_root / a.name


def rerun_command(a: Arm, threads: int = 2) -> str:
    from ..training.cli import command_line
    data, setup, schedule, release, _ = arm_specs(a, Path("runs/ablation"), threads)
    command = command_line("segmenter", data, setup, schedule, release, Path("runs/ablation") / a.name)
    return command.replace(str(MODELS_DIR.parent) + "/", "")


def train_arm(a: Arm, run_root: Path, threads: int = 2) -> None:
    """Train (or resume) one arm to the end of its budget."""
    from ..training.recipes import train_segmenter
    data, setup, schedule, release, run_dir = arm_specs(a, run_root, threads)
    train_segmenter(data, setup, schedule, release, run_dir)


def trainer_state(run_dir: Path) -> dict | None:
    path = run_dir / "state" / "trainer_state.json"
    return json.loads(path.read_text()) if path.is_file() else None


def score_arm(a: Arm, run_root: Path) -> dict:
    """Validation scores of the arm's best checkpoint by the shipping rule, written to score.json."""
    import torch
    from ..hardware import default_threads
    from ..inference import Segmenter
    from ..packs import patient_ids
    from ..postprocess import tune_postprocess
    from ..training.splits import train_val_packs
    run_dir = run_root / a.name
    state = trainer_state(run_dir)
    if not state or not state.get("done"):
        raise RuntimeError(f"arm {a.name} has not finished training in {run_dir}")
    torch.set_num_threads(default_threads())
    seg = Segmenter.from_pretrained(run_dir / "best", runtime="torch")
    data = arm_specs(a, run_root)[0]
    val = train_val_packs("segmentation", seg.pre.size, data).val
    probs = seg.probabilities(list(val["images"]))
    tuned = tune_postprocess(probs, val["masks"], patients=patient_ids(val))
    info = json.loads((run_dir / "best" / "training_info.json").read_text())
    threads = info["hardware"]["threads"]
    score = {
        "arm": a.name, "factor": a.factor, "change": a.change, "command": rerun_command(a),
        "val_dice_tumor": tuned["val_dice_tumor"], "val_healthy_fp_rate": tuned["val_healthy_fp_rate"],
        "threshold": tuned["threshold"], "min_component_fraction": tuned["min_component_fraction"],
        "n_val_tumor": tuned["n_val_tumor"], "n_val_healthy": tuned["n_val_healthy"],
        "best_epoch": state["best_epoch"], "epochs": len(state["history"]),
        "train_seconds": round(state["train_seconds"], 1), "threads": threads,
        "cpu_hours": round(state["train_seconds"] * threads / 3600, 3),
        "cpu": info["hardware"].get("cpu"), "precision": info["hardware"].get("precision"),
        "curve": [{k: r.get(k) for k in ("epoch", "train_loss", "val_dice_tumor", "val_healthy_fp_rate")}
                  for r in state["history"]],
    }
    (run_dir / "score.json").write_text(json.dumps(score, indent=1) + "\n")
    return score


def measure_speed(runs: int = 60) -> dict:
    """One 256 px slice through each arm's architecture (random weights: speed does not depend on them),
    torch at the precision this machine trains in, p50 ms; all arms in one run on one machine, interleaved
    over SPEED_ROUNDS rounds, each arm's fastest round kept."""
    import torch
    from ..hardware import default_threads, hardware_summary, pick_precision
    from ..models import build_segmenter
    from .latency import fastest_of_rounds
    torch.set_num_threads(default_threads())
    precision = pick_precision("auto", "cpu")
    x = torch.randn(1, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    models = {}
    for a in ARMS:
        setup = arm_specs(a, Path("."))[1]
        models[a.name] = build_segmenter(setup.encoder, decoder=setup.decoder).eval().to(memory_format=torch.channels_last)

    def forward(model):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            model(x)
    fastest = fastest_of_rounds({name: (lambda m=m: forward(m)) for name, m in models.items()}, runs, SPEED_ROUNDS)
    rows = {name: {**fastest[name], "rounds": SPEED_ROUNDS,
                   "params_m": round(sum(p.numel() for p in m.parameters()) / 1e6, 2)} for name, m in models.items()}
    return {"precision": precision, "hardware": hardware_summary("cpu"), "input": "1 x 3 x 256 x 256", "arms": rows,
            "measured": time.strftime("%Y-%m-%d")}


def collect(run_root: Path, recorded: Path | None = None) -> list[dict]:
    """One row per arm: its score.json in run_root, else the score already in the report `recorded`
    (run folders do not outlive the machine; the committed report does), else its training status."""
    kept = {s["arm"]: s for s in _read_report(recorded).get("arms", []) if "val_dice_tumor" in s} if recorded else {}
    scores = []
    for a in ARMS:
        path = run_root / a.name / "score.json"
        if path.is_file():
            scores.append(json.loads(path.read_text()))
        elif a.name in kept and trainer_state(run_root / a.name) is None:
            scores.append(kept[a.name])
        else:
            scores.append({"arm": a.name, "factor": a.factor, "change": a.change, "command": rerun_command(a),
                           "status": _status(run_root / a.name)})
    return scores


def _status(run_dir: Path) -> str:
    state = trainer_state(run_dir)
    if state is None:
        return "not run yet"
    return f"training: epoch {state['epoch']}/{EPOCHS}, step {state['step_in_epoch']}" if not state.get("done") else "trained, not scored"


def plot_curves(scores: list[dict], path: Path) -> Path | None:
    """Validation tumor Dice (at threshold 0.5, as training selects) and training loss per epoch, one line per arm."""
    scored = [s for s in scores if s.get("curve")]
    if not scored:
        return None
    from .report import _plt
    plt = _plt()
    fig, (ax_dice, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.6))
    for s in scored:
        epochs = [r["epoch"] for r in s["curve"]]
        ax_dice.plot(epochs, [r["val_dice_tumor"] for r in s["curve"]], marker="o", ms=3, label=s["arm"])
        ax_loss.plot(epochs, [r["train_loss"] for r in s["curve"]], marker="o", ms=3, label=s["arm"])
    ax_dice.set(xlabel="epoch", ylabel="validation tumor Dice (t=0.5)", title="Validation")
    ax_loss.set(xlabel="epoch", ylabel="BCE + Dice (+ CE)", title="Training loss")
    ax_dice.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(scores: list[dict], speed: dict | None, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(scores, out / "ablation_curves.png")
    (out / "ablation.json").write_text(json.dumps({"budget": f"{EPOCHS} epochs of {CROP} px crops", "arms": scores,
                                                   "speed": speed}, indent=1) + "\n")
    lines = ["# Segmenter ablation (BRISC 2025 validation)", "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             "| arm | changes | val tumor Dice | healthy masked | epoch chosen | CPU-hours | ms / slice (256 px) | status |",
             "|---|---|---|---|---|---|---|---|"]
    base = next((s for s in scores if s["arm"] == "baseline" and "val_dice_tumor" in s), None)
    for s in scores:
        ms = (speed or {}).get("arms", {}).get(s["arm"], {}).get("p50_ms")
        if "val_dice_tumor" in s:
            delta = f" ({s['val_dice_tumor'] - base['val_dice_tumor']:+.4f})" if base and s is not base else ""
            lines.append(f"| {s['arm']} | {s['change']} | {s['val_dice_tumor']:.4f}{delta} | "
                         f"{s['val_healthy_fp_rate']:.1%} of {s['n_val_healthy']} | {s['best_epoch']}/{s['epochs']} | "
                         f"{s['cpu_hours']:.2f} | {ms if ms is not None else '-'} | scored |")
        else:
            lines.append(f"| {s['arm']} | {s['change']} | - | - | - | - | {ms if ms is not None else '-'} | {s['status']} |")
    if speed:
        lines += ["", f"Inference: p50 over one 256 px slice, torch {speed['precision']}, "
                      f"{speed['hardware'].get('cpu')}, {speed['hardware'].get('threads')} threads, {speed['measured']}; "
                      "arms interleaved over rounds, each arm's fastest round. baseline and loss-posweight3 share one "
                      "architecture: the gap between their figures is this measurement's noise."]
    lines += ["", "CPU-hours = training wall-clock seconds x threads / 3600 (validation passes not counted).",
              "", "![learning curves](ablation_curves.png)", "",
              "Rerun an arm:", ""] + [f"- `{s['command']}`" for s in scores]
    (out / "ablation.md").write_text("\n".join(lines) + "\n")


def run(arms: list[str], run_root: Path, out: Path, threads: int = 2) -> None:
    """Train, score and report each arm in turn; finished arms are skipped, a stopped one resumes."""
    for name in arms:
        a = arm(name)
        if not (run_root / a.name / "score.json").is_file():
            state = trainer_state(run_root / a.name)
            if not (state and state.get("done")):
                train_arm(a, run_root, threads)
            score_arm(a, run_root)
        write_report(collect(run_root, out), _read_speed(out), out)


def _read_report(out: Path) -> dict:
    path = out / "ablation.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _read_speed(out: Path) -> dict | None:
    return _read_report(out).get("speed")


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m tumorlens.bench.ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("run", "score", "speed", "report"))
    p.add_argument("--arms", nargs="+", default=list(ARM_NAMES), choices=ARM_NAMES)
    p.add_argument("--run-root", type=Path, default=None, help="one run folder per arm (default runs/ablation)")
    p.add_argument("--out", type=Path, default=Path("benchmarks"))
    p.add_argument("--threads", type=int, default=2, help="training threads (the recipe does not depend on it; the time does)")
    args = p.parse_args(argv)
    run_root = args.run_root or default_run_root()
    if args.command == "run":
        run(args.arms, run_root, args.out, args.threads)
    elif args.command == "score":
        for name in args.arms:
            print(json.dumps({k: v for k, v in score_arm(arm(name), run_root).items() if k != "curve"}))
        write_report(collect(run_root, args.out), _read_speed(args.out), args.out)
    elif args.command == "speed":
        write_report(collect(run_root, args.out), measure_speed(), args.out)
    else:
        write_report(collect(run_root, args.out), _read_speed(args.out), args.out)
    print(f"wrote {args.out / 'ablation.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
