"""Segmentation v3 after the ablation: the winner trained long (and any later stage), judged against the
shipped segmenter by the rule that ships models, with the learning curves drawn from the runs themselves.

    python -m tumorlens.bench.segmenter_campaign score RUN_DIR [--stage NAME]       # validation, per stage
    python -m tumorlens.bench.segmenter_campaign speed CANDIDATE [--dataset lgg]    # ms per slice, both, one run
    python -m tumorlens.bench.segmenter_campaign report --runs RUN_DIR ... [--candidate FOLDER ...]

- score: each stage's best checkpoint (RUN_DIR/best) and the shipped segmenter for the run's dataset
  (BRISC 2025 or LGG) on the same validation slices of that dataset, each tuned by
  `tumorlens.postprocess.tune_postprocess` (hflip TTA, the best tumor-slice Dice with at most 2 % of
  healthy slices given a >= 50 px mask), plus the average of the two probability maps, for the record;
  written to RUN_DIR/campaign_score.json with the run's learning curve and CPU-hours, under the run dir's
  name or --stage.
- speed: one real test slice of the dataset (BRISC 2025: 512 px; LGG: 256 px) through `Segmenter.segment`
  (letterbox, both flips, clean-up) for the dataset's shipped folder and the candidate folder, torch at
  this machine's precision, interleaved rounds, each folder's fastest round: the issue allows the
  candidate at most 2x the shipped time.
- report: the stages' scores and curves (stages recorded by an earlier report and not given again are kept:
  run dirs do not outlive a machine), and, for each released candidate folder, its test scores (eval.json)
  beside the shipped model of its dataset.
A stage ships only if its tuned validation Dice beats the shipped model's beyond the validation split's
noise: the 95 % paired-bootstrap interval of the per-tumor-slice Dice difference (each model at its own
tuned settings, the same slices resampled together) lies above 0."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..models import EVAL_NAME
from ..paths import MODELS_DIR
from ..registry import BRISC_SEGMENTER, LGG_SEGMENTER

SHIPPED = MODELS_DIR / BRISC_SEGMENTER
SHIPPED_BY_DATASET = {"brisc2025": SHIPPED, "lgg": MODELS_DIR / LGG_SEGMENTER}  # what a stage is judged against
SCORE_NAME = "campaign_score.json"
SPEED_ROUNDS = 3
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 2000, 0
SPEED_LIMIT = 2.0  # the candidate's one-slice time may be at most this multiple of the shipped one's
REPORT = "segmenter_v3"


def _tuned(probs, val) -> dict:
    from ..packs import patient_ids
    from ..postprocess import tune_postprocess
    t = tune_postprocess(probs, val["masks"], patients=patient_ids(val))
    return {k: t[k] for k in ("val_dice_tumor", "val_healthy_fp_rate", "threshold", "min_component_fraction",
                              "n_val_tumor", "n_val_healthy")}


def tumor_slice_dice(probs, truths, tuned: dict) -> np.ndarray:
    """Per-slice Dice on the tumor slices, at the tuned threshold and clean-up (as `tune_postprocess` scores)."""
    from ..metrics import dice
    from ..postprocess import clean_mask
    out = []
    for prob, truth in zip(probs, truths):
        truth = np.asarray(truth, bool)
        if truth.any():
            pred = clean_mask(prob >= tuned["threshold"], max(1, int(tuned["min_component_fraction"] * prob.size)))
            out.append(dice(pred, truth))
    return np.asarray(out)


def paired_bootstrap(new: np.ndarray, old: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> dict:
    """Mean of `new - old` (paired per slice) and its 95 % bootstrap interval."""
    diff = np.asarray(new, float) - np.asarray(old, float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean_difference": round(float(diff.mean()), 5), "ci95": [round(float(low), 5), round(float(high), 5)],
            "n_slices": int(len(diff)), "resamples": resamples}


def logged_cpu_hours(log: Path) -> float:
    """CPU-hours the run's log shows: each start (resumes may use other thread counts) to its last logged
    event, x that start's threads. Work after the last epoch of a stopped start is not counted."""
    from datetime import datetime
    total, start, last, threads = 0.0, None, None, 1
    for line in log.read_text().splitlines():
        event = json.loads(line)
        t = datetime.fromisoformat(event["time"])
        if event["event"] == "start":
            if start is not None:
                total += (last - start).total_seconds() * threads
            start, last, threads = t, t, event.get("hardware", {}).get("threads", 1)
        elif start is not None:
            last = t
    if start is not None:
        total += (last - start).total_seconds() * threads
    return round(total / 3600, 2)


def score_stage(run_dir: Path, shipped: Path | None = None, stage: str | None = None) -> dict:
    """The stage's best checkpoint, the shipped model (default: the one for the run's dataset) and their
    average, tuned on the same validation slices."""
    import torch
    from ..hardware import default_threads
    from ..inference import Segmenter
    from ..training.specs import DataSpec
    from ..training.splits import train_val_packs
    torch.set_num_threads(default_threads())
    spec = json.loads((run_dir / "spec.json").read_text())
    state = json.loads((run_dir / "state" / "trainer_state.json").read_text())
    dataset = spec["data"]["dataset"]
    if shipped is None and dataset not in SHIPPED_BY_DATASET:
        from ..errors import ConfigError
        raise ConfigError(f"no shipped segmenter to judge a {dataset} stage against; pass shipped=")
    shipped = shipped or SHIPPED_BY_DATASET[dataset]
    new = Segmenter.from_pretrained(run_dir / "best", runtime="torch")
    old = Segmenter.from_pretrained(shipped, runtime="torch")
    data = DataSpec(**{k: v for k, v in spec["data"].items() if k in DataSpec.__dataclass_fields__})
    val = train_val_packs("segmentation", new.pre.size, data).val
    images = list(val["images"])
    p_new = new.probabilities(images)
    p_old = p_new if new.pre.size != old.pre.size else old.probabilities(images)
    score = {
        "stage": stage or run_dir.name, "run_dir": str(run_dir), "dataset": dataset, "shipped_folder": shipped.name,
        "setup": spec["setup"], "init_from": spec.get("init_from"),
        "extra_train": spec["data"].get("extra_train"), "epochs": spec["schedule"]["epochs"],
        "epochs_done": state["epoch"], "done": state.get("done", False), "best_epoch": state["best_epoch"],
        "train_seconds": round(state["train_seconds"], 1),
        "cpu_hours_estimate": logged_cpu_hours(run_dir / "log.jsonl"),
        "candidate": _tuned(p_new, val), "scored": time.strftime("%Y-%m-%d %H:%M"),
        "curve": [{k: r.get(k) for k in ("epoch", "train_loss", "score", "val_dice_tumor", "val_healthy_fp_rate")}
                  for r in state["history"]],
    }
    if new.pre.size == old.pre.size:
        score["shipped"] = _tuned(p_old, val)
        score["average_with_shipped"] = _tuned([(a + b) / 2 for a, b in zip(p_new, p_old)], val)
        score["versus_shipped"] = paired_bootstrap(tumor_slice_dice(p_new, val["masks"], score["candidate"]),
                                                   tumor_slice_dice(p_old, val["masks"], score["shipped"]))
    score["beats_shipped"] = bool(score.get("versus_shipped")) and score["versus_shipped"]["ci95"][0] > 0
    (run_dir / SCORE_NAME).write_text(json.dumps(score, indent=1) + "\n")
    return score


def speed_slice(dataset: str) -> np.ndarray:
    """One real test slice of the dataset, as a user would upload it: a 512 px BRISC 2025 test slice, or the
    first tumor slice of the first LGG test patient (256 px, pre-contrast/FLAIR/post-contrast)."""
    from ..paths import data_home
    from ..preprocess import decode_image
    if dataset == "brisc2025":
        from .app_load import pick_slices
        return decode_image(str(pick_slices(data_home(), 1)[0]))
    from PIL import Image
    from ..data import lgg
    test = set(lgg.recorded_split()["test"])
    root = lgg._case_root(lgg.resolve_root(lgg.NAME, env_var=lgg.ROOT_ENV))
    for row in lgg.scan(root):
        if row["patient_id"] in test and np.asarray(Image.open(row["mask"])).any():
            return decode_image(row["image"])
    raise FileNotFoundError(f"no LGG test slice with a tumor under {root}")


def measure_speed(candidate: Path, dataset: str = "brisc2025", runs: int = 30) -> dict:
    """`Segmenter.segment` on one real test slice of the dataset, its shipped folder and the candidate, torch,
    interleaved rounds."""
    import torch
    from ..hardware import default_threads, hardware_summary
    from ..inference import Segmenter
    from .latency import fastest_of_rounds
    torch.set_num_threads(default_threads())
    shipped = SHIPPED_BY_DATASET[dataset]
    rgb = speed_slice(dataset)
    models = {"shipped": Segmenter.from_pretrained(shipped, runtime="torch"),
              "candidate": Segmenter.from_pretrained(candidate, runtime="torch")}
    rows = fastest_of_rounds({n: (lambda m=m: m.segment(rgb)) for n, m in models.items()}, runs, SPEED_ROUNDS)
    ratio = rows["candidate"]["p50_ms"] / rows["shipped"]["p50_ms"]
    return {"dataset": dataset, "folders": {"shipped": str(shipped), "candidate": str(candidate)}, "ms": rows,
            "ratio": round(ratio, 3), "within_limit": ratio <= SPEED_LIMIT, "runtime": "torch",
            "input": f"one {rgb.shape[1]}x{rgb.shape[0]} px slice", "precision": models["shipped"].runner.precision,
            "hardware": hardware_summary("cpu"), "measured": time.strftime("%Y-%m-%d %H:%M")}


def read_speeds(path: Path) -> dict[str, dict]:
    """Dataset -> speed record; a file from before LGG had its own (one record, BRISC) still reads."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {"brisc2025": data} if "ms" in data else data


def merge_stages(earlier: list[dict], scored: list[dict]) -> list[dict]:
    """The earlier report's stages, each replaced by a new score of the same name, then the new ones."""
    names = {s["stage"] for s in scored}
    return [s for s in earlier if s["stage"] not in names] + scored


def _source_name(init_from: str) -> str:
    """A stage's starting point by name: its run dir for a run's best checkpoint, else the folder or repo id."""
    path = Path(init_from)
    return path.parent.name if path.name == "best" else init_from


def _test_row(name: str, ev: dict) -> str:
    d = ev.get("dice_definitions", {})
    labels = ", ".join(f"{k} {v['dice']['mean']:.4f}" for k, v in ev.get("by_label", {}).items()) or "-"
    sizes = ", ".join(f"{k} {ev['by_size'][k]['dice']['mean']:.4f}" for k in ("small", "medium", "large")
                      if k in ev.get("by_size", {}))
    h = ev.get("healthy", {})
    all_slices, pooled = (d.get(k, {}).get("value", float("nan")) for k in ("all_slices_mean", "pooled"))
    patients = ("" if "dice_per_patient_mean" not in ev else
                f"{ev['dice_per_patient_mean']:.4f} | {ev['dice_per_patient_median']:.4f} | ")
    return (f"| {name} | {patients}{ev['dice_mean']:.4f} | {ev['dice_median']:.4f} | {all_slices:.4f} | "
            f"{pooled:.4f} | {labels} | {sizes} | {h.get('masked', '-')}/{h.get('n', '-')} |")


def _test_record(ev: dict) -> dict:
    """The test figures the report's json keeps: the Dice definitions, and the per-patient ones where scored."""
    return {**ev.get("dice_definitions", {}),
            **{k: ev[k] for k in ("dice_per_patient_mean", "dice_per_patient_median") if k in ev}}


TEST_SECTIONS = {  # dataset -> (heading, leading columns of its headline)
    "brisc2025": ("BRISC 2025 test (eval.json)", []),
    "lgg": ("LGG test patients (eval.json)", ["mean Dice per patient", "median per patient"]),
}


def test_section(dataset: str, shipped_ev: dict, shipped_name: str, candidate: Path | None,
                 cand_ev: dict | None) -> list[str]:
    heading, lead = TEST_SECTIONS[dataset]
    columns = lead + ["mean Dice per tumor slice", "median", "mean over all slices", "pooled", "by class",
                      "by size", "healthy masked"]
    lines = ["", f"## {heading}", "", "| model | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns), _test_row(f"shipped ({shipped_name})", shipped_ev)]
    lines.append(_test_row(f"candidate ({candidate.name})", cand_ev) if cand_ev else
                 "| candidate | not scored on test: no stage has beaten the shipped model on validation "
                 + "|  " * (len(columns) - 1) + "|")
    return lines


def candidate_dataset(folder: Path) -> str:
    from ..model_record import read_record
    return read_record(folder).trained_on


def write_report(stages: list[dict], speeds: dict[str, dict], candidates: dict[str, Path], out: Path,
                 shipped: dict[str, Path] | None = None) -> None:
    """`candidates`: dataset -> released folder; `shipped`: dataset -> the folder it is compared with (default:
    SHIPPED_BY_DATASET; a candidate released as the shipped model keeps its predecessor here)."""
    from .ablation import plot_curves
    shipped = {**SHIPPED_BY_DATASET, **(shipped or {})}
    out.mkdir(parents=True, exist_ok=True)
    plot_curves([{"arm": s["stage"], "curve": s["curve"]} for s in stages], out / f"{REPORT}_curves.png")
    datasets = ["brisc2025"] + [d for d in TEST_SECTIONS if d != "brisc2025" and d in candidates]
    tests, sections = {}, []
    for dataset in datasets:
        shipped_ev = json.loads((shipped[dataset] / EVAL_NAME).read_text())
        candidate = candidates.get(dataset)
        cand_ev = (json.loads((candidate / EVAL_NAME).read_text())
                   if candidate is not None and (candidate / EVAL_NAME).is_file() else None)
        tests[dataset] = {"shipped": _test_record(shipped_ev), "candidate": _test_record(cand_ev) if cand_ev else None}
        sections += test_section(dataset, shipped_ev, shipped[dataset].name, candidate, cand_ev)
    summary = {"stages": stages, "speed": speeds, "candidates": {d: str(c) for d, c in candidates.items()},
               "compared_with": {d: shipped[d].name for d in datasets}, "test": tests}
    (out / f"{REPORT}.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = ["# Segmentation v3: the ablation winner trained on", "", __doc__.split("\n\n")[0].replace("\n", " "), "",
             "## Validation (each stage's dataset, its validation split, the shipping rule)", "",
             "| stage | dataset | recipe | epochs | best epoch | CPU-hours (est.) | val tumor Dice | healthy masked | "
             "shipped, same slices | difference (95 % interval) | average of both | ships? |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in stages:
        c, sh, av = s["candidate"], s.get("shipped"), s.get("average_with_shipped")
        recipe = (f"{s['setup']['encoder']} {s['setup']['decoder']}, {s['setup']['crop']} px crops of "
                  f"{s['setup']['input_size']} px" + (f", + {s['extra_train']}" if s.get("extra_train") else "")
                  + (f", from {_source_name(s['init_from'])}" if s.get("init_from") else ""))
        epochs = f"{s['epochs_done']}/{s['epochs']}{'' if s['done'] else ' (not finished)'}"
        lines.append(f"| {s['stage']} | {s.get('dataset', 'brisc2025')} | {recipe} | {epochs} | "
                     f"{s['best_epoch']} | {s['cpu_hours_estimate']:.2f} | {c['val_dice_tumor']:.4f} | "
                     f"{c['val_healthy_fp_rate']:.1%} of {c['n_val_healthy']} | "
                     f"{_fmt(sh)} | {_difference(s.get('versus_shipped'))} | {_fmt(av)} | "
                     f"{'yes' if s['beats_shipped'] else 'no'} |")
    lines += ["", compute_line(stages, out / "ablation.json")]
    lines += ["", f"![learning curves]({REPORT}_curves.png)", "",
              "Curves: validation tumor Dice at threshold 0.5 without flip or clean-up (what training selects on) and "
              "training loss, per epoch, from each run's trainer state."]
    if speeds:
        lines += ["", "## One-slice inference time (same run, same runtime)", ""]
        for dataset, speed in speeds.items():
            ms = speed["ms"]
            lines.append(f"- {dataset}: `Segmenter.segment` on {speed['input']}, torch {speed['precision']}, "
                         f"{speed['hardware'].get('cpu')}, {speed['hardware'].get('threads')} threads, "
                         f"{speed['measured']}: shipped {ms['shipped']['p50_ms']} ms "
                         f"({Path(speed['folders']['shipped']).name}), candidate {ms['candidate']['p50_ms']} ms p50 "
                         f"({Path(speed['folders']['candidate']).name}) = **{speed['ratio']:.2f}x** "
                         f"(limit {SPEED_LIMIT:.0f}x: {'met' if speed['within_limit'] else 'not met'}).")
    lines += sections
    (out / f"{REPORT}.md").write_text("\n".join(lines) + "\n")


def compute_line(stages: list[dict], ablation_json: Path) -> str:
    """CPU-hours spent on the issue's training: the ablation's arms (its benchmark) and each stage (its log)."""
    arms = json.loads(ablation_json.read_text())["arms"] if ablation_json.is_file() else []
    ablation = sum(a.get("cpu_hours") or 0 for a in arms)
    per_stage = ", ".join(f"{s['stage']} {s['cpu_hours_estimate']:.2f}" for s in stages)
    total = ablation + sum(s["cpu_hours_estimate"] for s in stages)
    return (f"Training compute on this campaign: ablation {ablation:.2f} CPU-hours ({len(arms)} arms, "
            f"{ablation_json.name}) + stages {per_stage or 'none'} = **{total:.2f} CPU-hours**.")


def _difference(versus: dict | None) -> str:
    if not versus:
        return "-"
    low, high = versus["ci95"]
    return f"{versus['mean_difference']:+.4f} ({low:+.4f} to {high:+.4f})"


def _fmt(tuned: dict | None) -> str:
    return f"{tuned['val_dice_tumor']:.4f}" if tuned else "-"


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m tumorlens.bench.segmenter_campaign", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("score", "speed", "report"))
    p.add_argument("paths", nargs="*", type=Path, help="score: run dirs; speed: the candidate folder")
    p.add_argument("--stage", help="score: the stage's name in the report (one run dir; default: its name)")
    p.add_argument("--dataset", choices=sorted(SHIPPED_BY_DATASET), default="brisc2025",
                   help="speed: the dataset whose shipped segmenter and test slice to time")
    p.add_argument("--candidate", type=Path, nargs="*", default=[],
                   help="report: released candidate folders (each is compared on its own dataset's test)")
    p.add_argument("--compared-with", type=Path, nargs="*", default=[],
                   help="report: the shipped folders to compare with, when a candidate now ships in their place")
    p.add_argument("--runs", type=Path, nargs="*", default=[], help="report: the stages' run dirs")
    p.add_argument("--out", type=Path, default=Path("benchmarks"))
    args = p.parse_args(argv)
    if args.command == "score":
        if args.stage and len(args.paths) != 1:
            p.error("--stage names one run dir")
        for run_dir in args.paths:
            print(json.dumps({k: v for k, v in score_stage(run_dir, stage=args.stage).items() if k != "curve"},
                             indent=1))
    elif args.command == "speed":
        speed_path = args.out / f"{REPORT}_speed.json"
        speeds = {**read_speeds(speed_path), args.dataset: measure_speed(args.paths[0], args.dataset)}
        speed_path.write_text(json.dumps(speeds, indent=1) + "\n")
        print(json.dumps(speeds[args.dataset], indent=1))
    else:
        report_json = args.out / f"{REPORT}.json"
        earlier = json.loads(report_json.read_text())["stages"] if report_json.is_file() else []
        stages = merge_stages(earlier, [json.loads((r / SCORE_NAME).read_text()) for r in args.runs])
        candidates = {candidate_dataset(c): c for c in args.candidate}
        shipped = {candidate_dataset(f): f for f in args.compared_with}
        write_report(stages, read_speeds(args.out / f"{REPORT}_speed.json"), candidates, args.out, shipped)
        print((args.out / f"{REPORT}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
