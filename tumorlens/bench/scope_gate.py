"""The out-of-scope gate (tumorlens.scope_gate): fit it, and measure what it refuses.

    python -m tumorlens.bench.scope_gate fit    # -> models/<classifier>/scope_gate.{safetensors,json}
    python -m tumorlens.bench.scope_gate run    # -> benchmarks/scope_gate.{json,md}, printed
    ... fit --limit 40 --out /tmp/gate; ... run --limit 30 --classifier /tmp/gate   # smoke runs

Data, each named (nothing is fitted or calibrated on a test split or on the held-out out-of-scope set):
- positives to fit on: TRAINING slices, up to --n-fit per dataset (seeded), each with one augmented view
  (framing only: crop, black padding, small rotation, mirror; `AUGMENT`); 60 % of the slices (with
  their views) fit the Gaussians, the other 40 % the logistic regression:
  BRISC 2025: the training part of the classifier's own split (classification_task/train less the
  seeded 10 % validation, `train_val_packs("classification", ..., DataSpec())`);
  Figshare: the training part of `--dataset figshare --fold 1` (folds 2-5 less their validation id blocks);
  LGG: the recorded patient-wise training split;
- validation slices the threshold is calibrated on (at most --max-refused of EACH refused): the
  validation splits those same calls carve (BRISC 501, Figshare 265, LGG 409 slices);
- negatives: `training_negatives()` of tumorlens.bench.scope_negatives, disjoint from the test set;
- the benchmark's out-of-scope set: `out_of_scope_images()` (held out: only measured);
- reported besides, never fitted on: each dataset's test split (BRISC classification_task/test,
  Figshare fold 1, LGG's recorded test split), LGG's FLAIR channel alone, non-square BRISC slices, and
  MR files that are not from the three datasets (pydicom's MR_small.dcm, matplotlib's s1045.ima,
  nibabel's anatomical.nii and example4d.nii.gz, read the way the app reads them).
Images are decoded from the dataset files with the app's own decoder, as an upload would be.

How the variant was chosen (development record): candidates (feature stages, 128 vs 256 px input, PCA
axes, augmentation or none, framing-only or also intensity augmentation) were compared on validation
refusal, on refusal of augmented validation views, of non-square BRISC validation slices, and on
leave-one-source-out refusal of the training-negative pool; the framing-only augmentation won there.
The held-out set's and the test splits' figures were seen while developing (a first version without
augmentation refused 2-6 % of non-square BRISC validation slices; an intensity-augmented one let blank
images through, which the two-colour rule now refuses), so they are not untouched estimates."""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..scope_gate import (GATE_FILE, GATE_SIZE, GATE_STAGES, STAT_NAMES, GateModel, GaussianGroup, ScopeGate,
                          calibrate_threshold, extract_features, fit_logistic)
from .scope_gate_data import (AUGMENT, SOURCES, backbone_features, concat_features, decode, features_of_files, limited,
                              other_mr_images, split_files, take_rows)

log = logging.getLogger("tumorlens.bench.scope_gate")

METHOD = ("Lee et al. 2018 feature ensemble: per-stage Gaussian Mahalanobis distances (per-dataset means, "
          "shared covariance as its top-k principal axes plus residual) on the per-channel mean and std of "
          "the classifier backbone's blocks 0-5 (EfficientNet-Lite0, input letterboxed to {size} px), and on "
          "22 image statistics; combined by a class-balanced logistic regression with non-positive weights; "
          "an image of at most two distinct colours scores 0")


def fit_gate(classifier: str, *, data_home: Path | None = None, n_fit: int = 2000, k: int = 32, l2: float = 1e-3,
             max_refused: float = 0.01, size: int = GATE_SIZE, seed: int = 0, out: Path | None = None,
             limit: int | None = None) -> GateModel:
    """Fit the gate on the data the module docstring names and save it to `out` (default: the classifier
    folder). `limit`: a smoke run on that many slices per split (never the shipped gate)."""
    from .scope_negatives import training_negatives
    t0 = time.time()
    extractor = backbone_features(classifier)
    rng = np.random.default_rng(seed)
    fit_a, fit_b, val, counts, sources = {}, {}, {}, {}, {}
    for source in SOURCES:
        files = limited(split_files(source, data_home), limit)
        train = sorted(rng.choice(files["train"], size=min(n_fit, len(files["train"])), replace=False))
        feats = features_of_files(extractor, train, f"{source.name} train", size)
        views = features_of_files(extractor, train, f"{source.name} train, augmented", size,
                                  augment_rng=np.random.default_rng([seed, len(fit_a), 1]))
        a = rng.random(len(train)) < 0.6  # a slice and its augmented view stay on the same side
        fit_a[source.name] = concat_features(take_rows(feats, a), take_rows(views, a))
        fit_b[source.name] = concat_features(take_rows(feats, ~a), take_rows(views, ~a))
        val[source.name] = features_of_files(extractor, files["val"], f"{source.name} validation", size)
        counts[source.name] = {"train_available": len(files["train"]), "sampled": len(train),
                               "gaussians": int(a.sum()), "regression": int((~a).sum()),
                               "validation": len(files["val"])}
        sources[source.name] = source.describe()
    pool = training_negatives()
    neg = extract_features(extractor, [rgb for _, rgb in pool], size=size)
    names = [f"stage{i}" for i in range(GATE_STAGES)] + ["stats"]
    datasets = [s.name for s in SOURCES]
    groups = {g: GaussianGroup.fit([fit_a[d][g] for d in datasets], k=k) for g in names}
    model = GateModel(groups, np.zeros(len(names)), 0.0, np.zeros(len(names)), np.ones(len(names)), 0.0, datasets)
    pos = np.concatenate([model.log_distances(fit_b[d]) for d in datasets])
    negx = model.log_distances(neg)
    w, b, mean, scale = fit_logistic(np.concatenate([pos, negx]), np.r_[np.ones(len(pos)), np.zeros(len(negx))], l2=l2)
    model.weights, model.bias, model.x_mean, model.x_scale = w, b, mean, scale
    model = GateModel.from_arrays(*model.to_arrays())  # calibrate what is saved (float32), not what was fitted
    val_scores = {d: model.score(val[d]) for d in datasets}
    model.threshold = calibrate_threshold(val_scores, max_refused)
    families = Counter(name.split("~")[0].split("/")[1] if not name.startswith("train/synthetic")
                       else "synthetic" for name, _ in pool)
    model.meta = {
        "method": METHOD.format(size=size),
        "reference": "Lee, Lee, Lee, Shin (2018), A Simple Unified Framework for Detecting Out-of-Distribution "
                     "Samples and Adversarial Attacks, NeurIPS",
        "classifier": Path(classifier).name if Path(classifier).is_dir() else str(classifier),
        "input_size": size, "stages": GATE_STAGES, "pca_axes": k,
        "groups": names, "stat_names": list(STAT_NAMES), "l2": l2,
        "weights": dict(zip(names, np.round(w, 4).tolist())),
        "score": "in-scope score in [0, 1): the regression's probability (0 for an image of at most two distinct "
                 "colours); an image scoring under the threshold is refused",
        "data": sources,
        "positives": {"counts": counts, "seed": seed, "augmentation": AUGMENT,
                      "use": "60 % of each dataset's sampled training slices (each with its augmented view) fit the "
                             "Gaussians, the other 40 % (with theirs) the regression"},
        "negatives": {"data": "tumorlens.bench.scope_negatives.training_negatives() (the training-negative pool; "
                              "disjoint from out_of_scope_images(), the held-out test set)",
                      "count": len(pool), "by_source": dict(sorted(families.items()))},
        "calibration": {"rule": f"at most {max_refused:.1%} of EACH dataset's validation slices refused: per dataset, halfway "
                                f"between its k-th and (k+1)-th lowest score (k = floor({max_refused} n)); the lowest of "
                                "those (tumorlens.scope_gate.calibrate_threshold), on the saved float32 parameters",
                        "max_refused": max_refused,
                        "validation_refused": {d: {"n": int(len(s)), "refused": int((s < model.threshold).sum()),
                                                   "rate": float((s < model.threshold).mean())}
                                               for d, s in val_scores.items()},
                        "training_negatives_refused": float((model.score(neg) < model.threshold).mean())},
        "fit_seconds": round(time.time() - t0, 1),
        "fit_command": "python -m tumorlens.bench.scope_gate fit " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["fit"] else []),
    }
    path = model.save(out if out is not None else Path(classifier))
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB): threshold {model.threshold:.4f}; validation refused "
          + ", ".join(f"{d} {v['refused']}/{v['n']}" for d, v in model.meta["calibration"]["validation_refused"].items()))
    return model


# -- benchmark ------------------------------------------------------------------------------------


def _shown(path: Path) -> str:
    """`path` relative to the project when it lies inside it (no machine's folders in committed results)."""
    from ..paths import PROJECT_ROOT
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _rates(scores: np.ndarray, threshold: float) -> dict:
    refused = scores < threshold
    return {"n": int(len(scores)), "refused": int(refused.sum()), "rate": float(refused.mean()) if len(scores) else None}


def _timing(gate: ScopeGate, images: list[np.ndarray], classifier: str) -> dict:
    """ms per image of `gate.check` (one image at a time, as a request makes it) and, for scale, of one
    plain 256 px classifier pass in torch on the same images."""
    import torch

    from ..models import load_classifier
    from ..preprocess import Preprocessor
    torch.set_num_threads(1)
    net, pre, _ = load_classifier(classifier)
    prep = Preprocessor(pre)
    gate_ms, cls_ms = [], []
    for rgb in images[:3]:
        gate.check(rgb)
    with torch.inference_mode():
        for rgb in images:
            t = time.perf_counter()
            gate.check(rgb)
            gate_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            net(prep.normalize(torch.from_numpy(prep.prepare(rgb)[0][None])))
            cls_ms.append((time.perf_counter() - t) * 1000)
    return {"n": len(images), "threads": 1, "gate_ms_p50": float(np.median(gate_ms)),
            "gate_ms_p95": float(np.percentile(gate_ms, 95)), "classifier_pass_ms_p50": float(np.median(cls_ms)),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "note": "gate = decode-free letterbox to the gate size, image statistics, backbone blocks 0-5, "
                    "distances and regression; the classifier pass is one plain 256 px forward for scale. "
                    "Both measured interleaved on the same, possibly busy, machine"}


def run_benchmark(classifier: str, *, data_home: Path | None = None, out: Path | None = Path("benchmarks"),
                  test_splits: bool = True, timing_images: int = 60, limit: int | None = None) -> dict:
    """Measure the gate beside `classifier` (see the module docstring); writes scope_gate.json/.md to `out`.
    `limit`: a smoke run on that many slices per split (its rates mean nothing)."""
    import torch

    from .out_of_scope import out_of_scope_images
    from .scope_negatives import training_negatives
    torch.set_num_threads(1)  # as the app's workers do; two threads beside another job only slow both
    gate = ScopeGate.from_pretrained(classifier)
    thr = gate.threshold
    result = {"gate": _shown(Path(classifier) / GATE_FILE), "threshold": thr, "method": gate.model.meta.get("method"),
              "command": "python -m tumorlens.bench.scope_gate run " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["run"] else []),
              "validation": {}, "test": {}, "checks": {}}
    nearest_confusion = {}
    timing_pool: list[np.ndarray] = []
    kept: dict[str, dict[str, np.ndarray]] = {"val": {}, "test": {}}  # scores, for the operating points
    for source in SOURCES:
        files = limited(split_files(source, data_home), limit)
        splits = ("val", "test") if test_splits else ("val",)
        for split in splits:
            feats = features_of_files(gate.extractor, files[split], f"{source.name} {split}", gate.size)
            s = gate.model.score(feats)
            kept[split][source.name] = s
            result["validation" if split == "val" else "test"][source.name] = {
                **_rates(s, thr), "data": source.describe(),
                "lowest": [[Path(files[split][i]).name, round(float(s[i]), 4)] for i in np.argsort(s)[:3]]}
            if split == "val":
                near = gate.model.nearest(feats)
                nearest_confusion[source.name] = dict(Counter(gate.model.datasets[i] for i in near))
        if source.name == "lgg":  # one LGG channel alone, as grey: not the 3-channel kind the LGG model reads
            flair = [np.repeat(decode(p)[..., 1:2], 3, 2) for p in files["val"]]
            result["checks"]["lgg_val_flair_channel_as_grey"] = _rates(gate.scores(flair), thr)
        if source.name == "brisc2025":  # non-square slices (letterboxed with bars)
            from PIL import Image
            sizes = {}
            for split in splits:
                odd = []
                for p in files[split]:
                    with Image.open(p) as im:
                        if im.size[0] != im.size[1]:
                            odd.append(p)
                sizes[split] = _rates(gate.scores([decode(p) for p in odd]), thr) if odd else {"n": 0}
            result["checks"]["brisc_non_square"] = sizes
        timing_pool += [decode(p) for p in files["val"][: timing_images // 3]]
    result["checks"]["nearest_dataset_on_validation"] = nearest_confusion

    oos = out_of_scope_images()
    s = gate.scores([rgb for _, rgb in oos])
    by_source = {}
    for (name, _), v in zip(oos, s):
        src = name.split("/")[0]
        by_source.setdefault(src, [0, 0])
        by_source[src][0] += int(v < thr)
        by_source[src][1] += 1
    result["out_of_scope"] = {**_rates(s, thr), "data": "tumorlens.bench.out_of_scope.out_of_scope_images() (held out)",
                              "by_source": {k: {"refused": r, "n": n} for k, (r, n) in by_source.items()},
                              "passed": [[name, round(float(v), 4)] for (name, _), v in zip(oos, s) if v >= thr],
                              "highest": [[oos[i][0], round(float(s[i]), 4)] for i in np.argsort(s)[::-1][:5]]}
    # other calibration targets, for information only (the shipped threshold is the fit's): what a
    # stricter or looser --max-refused would give on the same scores
    result["operating_points"] = []
    for q in (0.02, 0.01, 0.005, 0.0025):
        t = calibrate_threshold(kept["val"], q)
        result["operating_points"].append({
            "max_refused_validation": q, "threshold": t,
            "validation_refused": {d: float((v < t).mean()) for d, v in kept["val"].items()},
            "test_refused": {d: float((v < t).mean()) for d, v in kept["test"].items()},
            "out_of_scope_refused": float((s < t).mean())})
    pool = training_negatives()
    result["training_negatives"] = {**_rates(gate.scores([rgb for _, rgb in pool]), thr),
                                     "note": "the pool the regression was fitted on (in-sample)"}
    mr = other_mr_images()
    mr_scores = gate.scores([rgb for _, rgb in mr]) if mr else np.zeros(0)
    result["checks"]["other_mr"] = [{"name": n, "score": round(float(v), 4), "refused": bool(v < thr),
                                     "shape": list(rgb.shape[:2])} for (n, rgb), v in zip(mr, mr_scores)]
    result["timing"] = _timing(gate, timing_pool + [rgb for _, rgb in oos[:: max(1, len(oos) // 20)]], classifier)
    result["done_when"] = {
        "out_of_scope_refused_at_least_99pct": result["out_of_scope"]["rate"] >= 0.99,
        "each_validation_refused_at_most_1pct": all(v["rate"] <= 0.01 for v in result["validation"].values())}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "scope_gate.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "scope_gate.md").write_text(render(result))
        if not limit:
            record_in_model(Path(classifier), result)
    return result


def record_in_model(folder: Path, result: dict) -> None:
    """The gate's figures into the classifier folder's eval.json (`out_of_scope`) and its card, which
    report them beside the classifier's own scores (a folder without eval.json is left alone)."""
    from ..hub import write_card
    from ..models import EVAL_NAME
    path = folder / EVAL_NAME
    if not folder.is_dir() or not path.is_file():
        return
    ev = json.loads(path.read_text())
    ev["out_of_scope"] = eval_block(result)
    path.write_text(json.dumps(ev, indent=1, default=float) + "\n")
    write_card(folder, "classifier")


def eval_block(result: dict) -> dict:
    """The few numbers an eval.json or a model card carries, from a `run_benchmark` result."""
    return {"threshold": result["threshold"], "method": result["method"],
            "validation_n": {d: v["n"] for d, v in result["validation"].items()},
            "out_of_scope_sources": sorted(result["out_of_scope"]["by_source"]),
            "validation_refused": {d: v["rate"] for d, v in result["validation"].items()},
            "test_refused": {d: v["rate"] for d, v in result.get("test", {}).items()},
            "out_of_scope_refused": result["out_of_scope"]["rate"], "out_of_scope_n": result["out_of_scope"]["n"],
            "gate_ms_p50": result["timing"]["gate_ms_p50"], "benchmark": "python -m tumorlens.bench.scope_gate run"}


def _pct(r: dict) -> str:
    return f"{r['refused']}/{r['n']} = {100 * r['rate']:.2f} %" if r.get("n") else "none"


def render(r: dict) -> str:
    lines = ["# Out-of-scope gate", "", f"`{r['command'].strip()}` — gate `{r['gate']}`, threshold {r['threshold']:.4f}", "",
             r["method"] or "", "", "| data | split | refused |", "|---|---|---|"]
    for d, v in r["validation"].items():
        lines.append(f"| {d} | validation (calibration) | {_pct(v)} |")
    for d, v in r["test"].items():
        lines.append(f"| {d} | test (reported only) | {_pct(v)} |")
    o = r["out_of_scope"]
    lines.append(f"| out-of-scope set (held out) | all | {_pct(o)} |")
    for src, v in o["by_source"].items():
        lines.append(f"| out-of-scope: {src} | | {v['refused']}/{v['n']} |")
    lines.append(f"| training-negative pool | in-sample | {_pct(r['training_negatives'])} |")
    c = r["checks"]
    if "lgg_val_flair_channel_as_grey" in c:
        lines.append(f"| LGG validation, FLAIR channel alone as grey | check | {_pct(c['lgg_val_flair_channel_as_grey'])} |")
    for split, v in c.get("brisc_non_square", {}).items():
        lines.append(f"| BRISC non-square slices | {split} | {_pct(v)} |")
    lines += ["", f"Passed from the out-of-scope set: {', '.join(f'{n} ({s})' for n, s in o['passed']) or 'none'}",
              f"Highest-scoring out-of-scope images: {', '.join(f'{n} ({s})' for n, s in o['highest'])}", "",
              "Other MR (not the trained kind; reported, not required): "
              + "; ".join(f"{m['name']} {m['score']} {'refused' if m['refused'] else 'passes'}" for m in c.get("other_mr", [])),
              "", f"Nearest training dataset, by validation set: {c.get('nearest_dataset_on_validation')}", ""]
    if r.get("operating_points"):
        lines += ["Other calibration targets on the same scores (information only; the gate ships the fit's threshold):", "",
                  "| max refused per validation set | threshold | validation refused | test refused | out-of-scope refused |",
                  "|---|---|---|---|---|"]
        for op in r["operating_points"]:
            fmt = lambda d: " / ".join(f"{100 * v:.2f}" for v in d.values()) + " %" if d else "-"
            lines.append(f"| {100 * op['max_refused_validation']:.2f} % | {op['threshold']:.4f} | {fmt(op['validation_refused'])} "
                         f"| {fmt(op['test_refused'])} | {100 * op['out_of_scope_refused']:.2f} % |")
        lines.append("")
    t = r["timing"]
    lines.append(f"Time per image ({t['threads']} thread, {t['n']} images): gate p50 {t['gate_ms_p50']:.1f} ms, "
                 f"p95 {t['gate_ms_p95']:.1f} ms; one 256 px classifier pass p50 {t['classifier_pass_ms_p50']:.1f} ms "
                 "(same machine, interleaved)")
    lines += ["", "Done when: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in r["done_when"].items()), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    from ..registry import default_model
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m tumorlens.bench.scope_gate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit the gate and write scope_gate.{safetensors,json} beside the classifier")
    r = sub.add_parser("run", help="measure: validation/test refusal per dataset, the out-of-scope set, timing")
    for q in (f, r):
        q.add_argument("--classifier", default=None, help="classifier folder (default: the shipped one)")
        q.add_argument("--data-home", type=Path, default=None, help="folder holding brisc2025/, figshare/, lgg/")
    f.add_argument("--out", type=Path, default=None, help="where to write the gate (default: the classifier folder)")
    f.add_argument("--n-fit", type=int, default=2000, help="training slices sampled per dataset")
    f.add_argument("--pca-axes", type=int, default=32)
    f.add_argument("--max-refused", type=float, default=0.01, help="most validation slices refused, per dataset")
    f.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", type=Path, default=Path("benchmarks"), help="scope_gate.json and scope_gate.md go here")
    r.add_argument("--no-test-splits", action="store_true", help="validation only (quicker)")
    for q in (f, r):
        q.add_argument("--limit", type=int, default=None, help="smoke run: this many slices per split")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    classifier = args.classifier or default_model("classifier")
    if classifier is None:
        print("error: no classifier folder: pass --classifier", file=sys.stderr)
        return 2
    if args.command == "fit":
        if not 0 <= args.max_refused < 1:
            print("error: --max-refused must lie in [0, 1)", file=sys.stderr)
            return 2
        fit_gate(classifier, data_home=args.data_home, n_fit=args.n_fit, k=args.pca_axes,
                 max_refused=args.max_refused, seed=args.seed, out=args.out, limit=args.limit)
        return 0
    result = run_benchmark(classifier, data_home=args.data_home, out=args.out, test_splits=not args.no_test_splits,
                           limit=args.limit)
    print(render(result))
    return 0 if all(result["done_when"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
