"""The benchmark run: every section scored from the shipped weights (Figshare from its stored
cross-validation folds), written to results.json + results.md, with plots beside them."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import time
from pathlib import Path

from .. import registry
from ..data.registry import get_dataset
from ..hardware import hardware_summary
from ..registry import default_model
from . import figshare_cv
from .seeds import SEEDS, TARGETS

LGG_MODEL = registry.LGG_SEGMENTER


def _shipped(folder: str) -> str | None:
    path = registry.MODELS_DIR / folder
    return str(path) if (path / "config.json").is_file() else None


def _compact_seg(ev: dict) -> dict:
    return {k: v for k, v in ev.items() if k not in ("per_image", "dice_per_patient")}


def audit_section(data_home, out: Path, limit: int | None) -> dict:
    """Within and across datasets; the pair lists go to out/audit/duplicates.json, counts here."""
    from .. import audit
    report = audit.audit(data_home, out / "audit", progress=False)
    rows = [{k: c[k] for k in ("a", "b", "scope", "n_a", "n_b", "exact_pairs", "near_pairs",
                                 "a_images_with_duplicate", "b_images_with_duplicate")}
            for c in report["comparisons"]]
    return {
        "method": "exact: identical decoded pixels; near: 64-bit DCT perceptual hash (DC left out) within "
                  f"Hamming {audit.MAX_HAMMING}, confirmed by correlation >= {audit.MIN_CORRELATION} of "
                  "detail-filtered 32 px thumbnails",
        "thresholds_chosen": "by `python -m tumorlens.audit --calibrate`: planted copies of real slices (re-encoded, "
                             "resized, gamma/brightness-shifted) are all found, while distinct real slices of "
                             "different patients stay below the correlation cut",
        "thresholds": report["thresholds"],
        "datasets": report["datasets"],
        "comparisons": rows,
        "lists": str(out / "audit" / "duplicates.json"),
        "seconds": report["seconds"],
    }


def brisc_section(root, limit: int | None, cases_dir: Path | None) -> dict:
    """`root`: BRISC 2025's own folder (None: its usual place)."""
    from ..evaluate import evaluate
    out = {}
    seg_model, cls_model = default_model("segmenter"), default_model("classifier")
    if seg_model:
        ev = evaluate(seg_model, "segmenter", "brisc2025", root, limit=limit)
        out["segmentation"] = {"model": Path(seg_model).name, **_compact_seg(ev),
                               "dice_values": [r["dice"] for r in ev["per_image"]]}
        if cases_dir:
            from .report import brisc_cases
            brisc_cases(seg_model, ev["per_image"], root, cases_dir / "brisc")
    if cls_model:
        ev = evaluate(cls_model, "classifier", "brisc2025", root, limit=limit)
        variants = Path(cls_model) / "variants.json"  # alternatives measured and not shipped (stored)
        out["classification"] = {"model": Path(cls_model).name, **ev,
                                 "variants": json.loads(variants.read_text()) if variants.is_file() else []}
    return out


def lgg_section(root, limit: int | None, cases_dir: Path | None) -> dict:
    """`root`: LGG's own folder (None: its usual place)."""
    from ..evaluate import evaluate
    model = _shipped(LGG_MODEL)
    if model is None:
        return {"missing": f"models/{LGG_MODEL} is not shipped"}
    ev = evaluate(model, "segmenter", "lgg", root, limit=limit)
    if cases_dir:
        from .report import lgg_cases
        lgg_cases(model, ev["per_image"], root, cases_dir / "lgg")
    return {"model": LGG_MODEL, **_compact_seg(ev), "dice_per_patient": ev["dice_per_patient"],
            "dice_values": [r["dice"] for r in ev["per_image"] if r["tumor"]]}


def _figshare_start_section(start: str, results_dir: Path) -> dict:
    stored = figshare_cv.load_results(results_dir)
    made = [r["made"] for rs in stored.values() for r in rs.values()]
    hw = {json.dumps(r["training"]["hardware"], sort_keys=True) for rs in stored.values() for r in rs.values()}
    inits = sorted({r["init"] for rs in stored.values() for r in rs.values()})
    return {
        "start": start,
        "init": "; ".join(inits) if inits else figshare_cv.IMAGENET_INIT,
        "stored_in": str(results_dir),
        "when": sorted(m["when"] for m in made),
        "hardware": [json.loads(h) for h in sorted(hw)],
        "rerun": f"python -m tumorlens.bench.figshare_cv --start {start}",
        "starts_trained": {kind: next(iter(rs.values()))["start"] for kind, rs in stored.items()
                           if rs and next(iter(rs.values())).get("start")},
        "per_fold": {kind: {k: {"accuracy" if kind == "classifier" else "dice_mean":
                                r["accuracy"] if kind == "classifier" else r["dice_mean"],
                                "epochs": r["training"]["epochs"], "best_epoch": r["training"]["best_epoch"],
                                "train_seconds": r["training"]["train_seconds"], "command": r["made"]["command"]}
                            for k, r in rs.items()} for kind, rs in stored.items()},
        **figshare_cv.summarize(stored),
    }


def figshare_section(results_root: Path) -> dict:
    """Every start's stored folds; the headline per task is the BRISC start once its 5 folds are all
    stored (a rule fixed before any score was seen), else the ImageNet start."""
    starts = {s: _figshare_start_section(s, figshare_cv.results_dir(results_root, s)) for s in figshare_cv.STARTS}
    out = {"protocol": "the author's patient-wise 5 folds (cvind5fold.mat): train on 4, score the 5th; "
                       "each slice is scored once, metrics pooled over all 3064",
           "headline_rule": "BRISC-minus-Figshare start when all 5 folds are stored, else ImageNet start",
           "starts": starts}
    for task in ("classification", "segmentation"):
        brisc = starts["brisc"].get(task)
        chosen = "brisc" if brisc and brisc["complete"] else "imagenet"
        if starts[chosen].get(task):
            out[task] = {**starts[chosen][task], "start": chosen}
    return out


def targets_section(results: dict) -> dict:
    def get(*keys):
        d = results
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d

    checks = {
        "brisc_dice_mean": (get("brisc", "segmentation", "dice_mean"), ">="),
        "brisc_healthy_masked_rate": (get("brisc", "segmentation", "healthy", "masked_rate"), "<="),
        "brisc_accuracy": (get("brisc", "classification", "accuracy"), ">="),
        "figshare_accuracy": (get("figshare", "classification", "accuracy"), ">="),
        "figshare_dice_mean": (get("figshare", "segmentation", "dice_mean"), ">="),
        "lgg_dice_per_patient_mean": (get("lgg", "dice_per_patient_mean"), ">="),
        "speed_vs_seed004": (get("speed", "ratios", "vs_seed004_p50"), ">="),
        "speed_vs_seed001_pair": (get("speed", "ratios", "vs_seed001_pair_p50"), ">="),
    }
    out = {}
    for name, (value, op) in checks.items():
        if isinstance(value, dict):  # speed ratios may be reported per runtime; the headline is "best"
            value = value.get("best_vs_best", value.get("best"))
        met = None if value is None else (value >= TARGETS[name] if op == ">=" else value <= TARGETS[name])
        out[name] = {"value": value, "target": f"{op} {TARGETS[name]}", "met": met}
    return out


def run_bench(out: Path, *, data_home=None, limit: int | None = None, speed_runs: int = 50,
              sections=("audit", "brisc", "figshare", "lgg", "speed"), figshare_results: Path = figshare_cv.RESULTS_DIR,
              cases_dir: Path | None = None, argv: list[str] | None = None, merge: bool = False) -> dict:
    """data_home: the folder holding brisc2025/, figshare/, lgg/ (None: $TUMORLENS_DATA, else ../shared/data).
    merge: keep the other sections of an existing out/results.json (re-run one section, e.g. speed
    on a quiet machine, without re-scoring the rest); each section records its own command and time."""
    from .report import plot_all, write_markdown
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    previous = out / "results.json"
    results = json.loads(previous.read_text()) if merge and previous.is_file() else {}
    if merge and results.get("complete") != (limit is None):
        raise ValueError("cannot merge a subset run with a complete one")
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    command = "python -m tumorlens.bench" + (" " + shlex.join(argv) if argv else "")
    results.update({"generated": now, "complete": limit is None, "hardware": hardware_summary(), "seeds": SEEDS})
    made = results.setdefault("sections_made", {})
    for name in sections:
        made[name] = {"when": now, "command": command}
    results["command"] = command if not merge else "; ".join(dict.fromkeys(m["command"] for m in made.values()))
    if "audit" in sections:
        results["audit"] = audit_section(data_home, out, limit)
    if "brisc" in sections:
        results["brisc"] = brisc_section(get_dataset("brisc2025").root_in(data_home), limit, cases_dir)
    if "figshare" in sections:
        results["figshare"] = figshare_section(figshare_results)
    if "lgg" in sections:
        results["lgg"] = lgg_section(get_dataset("lgg").root_in(data_home), limit, cases_dir)
    if "speed" in sections:
        from .speed import speed_benchmark
        results["speed"] = speed_benchmark(runs=speed_runs, batch_runs=max(2, speed_runs // 10),
                                           tiny=limit is not None and speed_runs < 10)
    results["targets"] = targets_section(results)
    results["seconds"] = round(time.time() - t0, 1)
    plots = plot_all(results, out)
    results["plots"] = [p.name for p in plots]
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    write_markdown(results, out / "results.md")
    return results
