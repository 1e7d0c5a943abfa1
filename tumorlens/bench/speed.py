"""Speed against the seeds' own models, side by side in one run on the same machine.

Ours: one 512x512 RGB image end to end (letterbox + normalise + segmenter + mask clean-up +
classifier), without and with the shipped hflip test-time augmentation. Seeds, built with random
weights for timing only: seed 004's U-Net/VGG16 at 256 px, and seed 001's pair (a plain U-Net,
64 base filters doubling over 5 levels, at 256 px, plus DenseNet-121 at 224 px). Seeds are timed
on a pre-resized input tensor (forward only), which flatters them: our rows include preprocessing.
Each model runs in torch fp32 and bf16 (both channels_last) and in ONNX Runtime; p50/p90 over
`runs` single-image calls after warm-up, plus batch throughput.

    python -m tumorlens.bench.speed [--runs 50] [--batch 16] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

import numpy as np
import torch
from torch import nn

from ..hardware import BF16_CPU_FLAGS, cpu_flags, default_threads, hardware_summary, pick_precision
from ..inference import Classifier, Segmenter
from ..registry import default_model
from ..runtime import Runner
from . import seeds
from .latency import time_call

RUNTIMES = ("torch-fp32", "torch-bf16", "onnx")
OURS, OURS_TTA = "ours_seg+cls", "ours_seg+cls_hflip_tta"
SEED004 = "seed004_unet_vgg16"
SEED001_UNET, SEED001_DENSENET, SEED001_PAIR = "seed001_unet64x5", "seed001_densenet121", "seed001_pair"
TARGETS = {"vs_seed004_p50": seeds.TARGETS["speed_vs_seed004"],  # ours must be this many times faster
           "vs_seed001_pair_p50": seeds.TARGETS["speed_vs_seed001_pair"]}
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
HOW = ("ratio = seed p50 / ours p50 (>1: ours faster). 'best_vs_best': ours at its fastest runtime vs the "
       "seed at its fastest runtime; 'same_runtime': both in the same runtime. 'ours' is the end-to-end "
       "one-image path without TTA (preprocessing included); 'ours_tta' the shipped defaults with hflip "
       "TTA (segmenter, and classifier where its inference_config.json turns it on). Seeds: forward only on a pre-resized 1x3xSxS tensor, random weights. Throughput: images/s "
       "at the given batch, p50 over batch_runs calls.")


# -- seed 001's plain U-Net ------------------------------------------------------------------------
def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class PlainUNet(nn.Module):
    """The classic U-Net: `levels` double-conv blocks whose widths double from `base`
    (64/128/256/512/1024 by default), max-pool down, transposed conv up, skip concat, 1x1 head."""

    def __init__(self, base: int = 64, levels: int = 5, in_channels: int = 3, out_channels: int = 1):
        super().__init__()
        widths = [base * 2 ** i for i in range(levels)]
        self.widths = widths
        self.down = nn.ModuleList([_double_conv(c_in, c_out) for c_in, c_out in zip([in_channels] + widths[:-1], widths)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in reversed(widths[1:])])
        self.up_conv = nn.ModuleList([_double_conv(c, c // 2) for c in reversed(widths[1:])])
        self.head = nn.Conv2d(base, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips[:-1])):
            x = conv(torch.cat([skip, up(x)], dim=1))
        return self.head(x)


def build_seed_models(*, tiny: bool = False) -> dict[str, tuple[nn.Module, int]]:
    """name -> (eval-mode model with random weights, input size). `tiny` gives the plain U-Net 8
    base filters and every seed a 64 px input, so tests run in seconds."""
    import segmentation_models_pytorch as smp
    import timm
    torch.manual_seed(0)
    seg_size, cls_size = (64, 64) if tiny else (256, 224)
    models = {
        SEED004: (smp.Unet("vgg16", encoder_weights=None, classes=1), seg_size),
        SEED001_UNET: (PlainUNet(base=8 if tiny else 64), seg_size),
        SEED001_DENSENET: (timm.create_model("densenet121", pretrained=False, num_classes=4), cls_size),
    }
    return {name: (model.eval(), size) for name, (model, size) in models.items()}


# -- helpers ---------------------------------------------------------------------------------------
def _runtime_kwargs(runtime: str) -> dict:
    if runtime == "onnx":
        return {"runtime": "onnx"}
    if runtime in ("torch-fp32", "torch-bf16"):
        return {"runtime": "torch", "precision": runtime.split("-")[1]}
    raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")


def hardware_info(threads: int) -> dict:
    """hardware_summary() plus the SIMD flags that decide bf16 speed, and the threads actually used."""
    flags = cpu_flags()
    return {**hardware_summary(), "threads": threads, "cores": os.cpu_count(),
            "cpu_flags": [f for f in REPORTED_FLAGS if f in flags],
            "bf16_native": any(f in flags for f in BF16_CPU_FLAGS), "onnxruntime": _ort_version()}


def _ort_version() -> str | None:
    try:
        import onnxruntime
        return onnxruntime.__version__
    except ImportError:
        return None


def _timed_row(name: str, runtime: str, input_desc: str, one, batch_fn, *, runs: int, warmup: int, batch: int,
               batch_runs: int) -> dict:
    """Time `one()` (single image) and `batch_fn()` (a batch of `batch`); errors land in the row."""
    row = {"name": name, "runtime": runtime, "input": input_desc, "p50_ms": None, "p90_ms": None,
           "throughput_img_s": None, "batch": batch}
    if runtime == "torch-bf16":
        # bf16 without AVX-512 bf16/AMX is emulated and can be ~10x slower: measured, but flagged.
        row["emulated"] = pick_precision("auto", "cpu") != "bf16"
    try:
        timing = time_call(one, runs, warmup)
        row.update(p50_ms=timing["p50_ms"], p90_ms=timing["p90_ms"])
        if batch_fn is not None and batch_runs > 0:
            batch_p50 = time_call(batch_fn, batch_runs, warmup=1)["p50_ms"]
            row["batch_p50_ms"] = batch_p50
            row["throughput_img_s"] = round(batch * 1000.0 / batch_p50, 2) if batch_p50 > 0 else None
    except Exception as exc:  # one model failing (e.g. bf16 kernel missing) must not sink the table
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def _error_row(name: str, runtime: str, input_desc: str, exc: Exception) -> dict:
    return {"name": name, "runtime": runtime, "input": input_desc, "p50_ms": None, "p90_ms": None,
            "throughput_img_s": None, "error": f"{type(exc).__name__}: {exc}"}


def _seed_runner(name: str, model: nn.Module, size: int, runtime: str, tiny: bool) -> Runner:
    # The ONNX file is cached by name, size and torch version: weights are a fixed random draw.
    key = f"seed-{name}-{size}{'-tiny' if tiny else ''}-torch{torch.__version__}"
    kind = "classifier" if name == SEED001_DENSENET else "segmenter"
    return Runner(model, size, kind=kind, cache_key=key, **_runtime_kwargs(runtime))


def _ours_rows(seg_model, cls_model, runtime: str, image: np.ndarray, batch_images: list[np.ndarray], **timing) -> list[dict]:
    desc = f"{image.shape[0]}x{image.shape[1]} uint8"
    try:
        seg = Segmenter.from_pretrained(seg_model, tta=False, **_runtime_kwargs(runtime))
        cls = Classifier.from_pretrained(cls_model, **_runtime_kwargs(runtime))
    except Exception as exc:
        return [_error_row(OURS, runtime, desc, exc), _error_row(OURS_TTA, runtime, desc, exc)]

    def one():
        seg.segment(image)
        cls.probabilities([image])

    def many():
        for prob in seg.probabilities(batch_images, batch_size=len(batch_images)):
            seg.from_probability(prob)
        cls.logits(batch_images, batch_size=len(batch_images))

    shipped_cls_tta, cls.tta = cls.tta, False
    rows = [_timed_row(OURS, runtime, f"{desc} -> seg {seg.pre.size} + cls {cls.pre.size}", one, many, **timing)]
    seg.tta, cls.tta = True, shipped_cls_tta  # the shipped defaults: average with the mirrored view
    cls_desc = f"cls {cls.pre.size}" + (" x2" if cls.tta else "")
    rows.append(_timed_row(OURS_TTA, runtime, f"{desc} -> seg {seg.pre.size} x2 + {cls_desc}", one, many, **timing))
    seg.tta = cls.tta = False
    return rows


def _seed_rows(seeds: dict, runtime: str, tiny: bool, **timing) -> list[dict]:
    rows, runners, inputs, batch = [], {}, {}, timing["batch"]
    for name, (model, size) in seeds.items():
        desc = f"1x3x{size}x{size} float32"
        try:
            runners[name] = _seed_runner(name, model, size, runtime, tiny)
        except Exception as exc:  # e.g. an ONNX export failure: record it, keep going
            rows.append(_error_row(name, runtime, desc, exc))
            continue
        generator = torch.Generator().manual_seed(0)
        inputs[name] = (torch.randn(1, 3, size, size, generator=generator),
                        torch.randn(batch, 3, size, size, generator=generator))
        run, (x1, xb) = runners[name], inputs[name]
        rows.append(_timed_row(name, runtime, desc, lambda run=run, x=x1: run(x), lambda run=run, x=xb: run(x), **timing))
    if SEED001_UNET in runners and SEED001_DENSENET in runners:
        unet, densenet = runners[SEED001_UNET], runners[SEED001_DENSENET]
        (u1, ub), (d1, db) = inputs[SEED001_UNET], inputs[SEED001_DENSENET]
        rows.append(_timed_row(SEED001_PAIR, runtime, f"U-Net {u1.shape[-1]} + DenseNet {d1.shape[-1]}",
                               lambda: (unet(u1), densenet(d1)), lambda: (unet(ub), densenet(db)), **timing))
    elif SEED001_UNET in seeds and SEED001_DENSENET in seeds:
        rows.append(_error_row(SEED001_PAIR, runtime, "U-Net + DenseNet",
                               RuntimeError("needs both seed-001 models, and one failed to load")))
    return rows


def _p50(rows: list[dict], name: str) -> dict[str, float]:
    return {r["runtime"]: r["p50_ms"] for r in rows if r["name"] == name and r.get("p50_ms")}


def _ratio(seed_ms: float | None, ours_ms: float | None) -> float | None:
    return round(seed_ms / ours_ms, 2) if seed_ms and ours_ms else None


def compute_ratios(rows: list[dict]) -> dict:
    """Speed-ups (seed p50 / ours p50): best runtime vs best runtime, and runtime by runtime."""
    ratios = {"how": HOW}
    for key, seed_name in (("vs_seed004_p50", SEED004), ("vs_seed001_pair_p50", SEED001_PAIR)):
        seed = _p50(rows, seed_name)
        entry = {}
        for label, ours_name in (("", OURS), ("_tta", OURS_TTA)):
            ours = _p50(rows, ours_name)
            best_ours = min(ours, key=ours.get) if ours else None
            best_seed = min(seed, key=seed.get) if seed else None
            entry[f"best_vs_best{label}"] = _ratio(seed.get(best_seed), ours.get(best_ours))
            entry[f"best_runtimes{label}"] = {"ours": best_ours, "seed": best_seed}
            entry[f"same_runtime{label}"] = {rt: _ratio(seed.get(rt), ours.get(rt)) for rt in ours if rt in seed}
        ratios[key] = entry
    return ratios


def check_targets(ratios: dict) -> dict:
    out = {}
    for key, target in TARGETS.items():
        best, best_tta = ratios[key]["best_vs_best"], ratios[key]["best_vs_best_tta"]
        out[key] = {"target_x": target, "ratio": best, "met": best is not None and best >= target,
                    "ratio_tta": best_tta, "met_tta": best_tta is not None and best_tta >= target}
    return out


# -- the benchmark ---------------------------------------------------------------------------------
def speed_benchmark(seg_model=None, cls_model=None, *, runs: int = 50, warmup: int = 5, batch: int = 16,
                    batch_runs: int = 5, runtimes=RUNTIMES, image: np.ndarray | None = None, tiny: bool = False,
                    include_ours: bool = True, threads: int | None = None, command: str | None = None) -> dict:
    """Time ours and the seeds' models per runtime; see the module doc. Returns rows, ratios and
    targets (never asserted: a benchmark reports, the reader judges)."""
    threads = threads or default_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # ONNX sessions take torch's thread count as intra-op threads
    try:
        if image is None:
            side = 64 if tiny else 512
            image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
        seg_model = seg_model or default_model("segmenter")
        cls_model = cls_model or default_model("classifier")
        notes = []
        if include_ours and not (seg_model and cls_model):
            notes.append("ours skipped: no segmenter/classifier found (models/ or $TUMORLENS_SEG_MODEL/$TUMORLENS_CLS_MODEL)")
            include_ours = False
        timing = {"runs": runs, "warmup": warmup, "batch": batch, "batch_runs": batch_runs}
        seeds = build_seed_models(tiny=tiny)
        batch_images = [image] * batch
        rows = []
        for runtime in runtimes:
            if include_ours:
                rows += _ours_rows(seg_model, cls_model, runtime, image, batch_images, **timing)
            rows += _seed_rows(seeds, runtime, tiny, **timing)
        ratios = compute_ratios(rows)
        return {"hardware": hardware_info(threads), "threads": threads, "runs": runs, "warmup": warmup,
                "batch": batch, "batch_runs": batch_runs, "tiny": tiny, "runtimes": list(runtimes),
                "models": {"segmenter": seg_model if include_ours else None, "classifier": cls_model if include_ours else None},
                "rows": rows, "ratios": ratios, "targets": check_targets(ratios), "notes": notes,
                "command": command or (f"speed_benchmark(runs={runs}, warmup={warmup}, batch={batch}, "
                                       f"batch_runs={batch_runs}, runtimes={tuple(runtimes)}, tiny={tiny})")}
    finally:
        torch.set_num_threads(previous_threads)


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_speed_table(result: dict) -> str:
    """Markdown: a hardware line (CPU, AVX-512, bf16, threads), the table, then ratios and targets."""
    hw = result["hardware"]
    bf16 = ("native (" + ", ".join(f for f in BF16_CPU_FLAGS if hw.get(f)) + ")"
            if hw.get("bf16_native") else "emulated (no avx512_bf16/amx_bf16)")
    lines = [f"CPU: {hw['cpu']} | AVX-512: {'yes' if hw.get('avx512f') else 'no'} | bf16: {bf16} | "
             f"threads: {result['threads']} of {hw.get('cores')} cores | torch {hw.get('torch')} | "
             f"onnxruntime {hw.get('onnxruntime')}",
             f"p50/p90 over {result['runs']} single-image runs after {result['warmup']} warm-up; "
             f"throughput at batch {result['batch']}" + (" (tiny models: not the real figures)" if result.get("tiny") else ""),
             "",
             "| model | runtime | input | p50 ms | p90 ms | img/s (batch) | note |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in result["rows"]:
        note = r.get("error", "")[:80] if r.get("error") else ("bf16 emulated" if r.get("emulated") else "")
        lines.append(f"| {r['name']} | {r['runtime']} | {r['input']} | {_fmt(r['p50_ms'], 2)} | {_fmt(r['p90_ms'], 2)} | "
                     f"{_fmt(r['throughput_img_s'])} | {note} |")
    lines.append("")
    for key, label in (("vs_seed004_p50", "seed 004 U-Net/VGG16"), ("vs_seed001_pair_p50", "seed 001 U-Net + DenseNet-121")):
        entry, target = result["ratios"][key], result["targets"][key]
        same = ", ".join(f"{rt} {_fmt(v, 2)}x" for rt, v in entry["same_runtime"].items())
        lines.append(f"- ours vs {label} (p50): best vs best {_fmt(entry['best_vs_best'], 2)}x "
                     f"({entry['best_runtimes']['ours']} vs {entry['best_runtimes']['seed']}); "
                     f"with TTA {_fmt(entry['best_vs_best_tta'], 2)}x; same runtime: {same or '-'}; "
                     f"target >= {target['target_x']:g}x: {'met' if target['met'] else 'NOT met'}")
    lines.append(f"- {HOW}")
    lines.extend(f"- {note}" for note in result.get("notes", []))
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m tumorlens.bench.speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seg-model", default=None, help="default: the shipped segmenter")
    p.add_argument("--cls-model", default=None, help="default: the shipped classifier")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batch-runs", type=int, default=5)
    p.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    p.add_argument("--threads", type=int, default=None, help="default: $TUMORLENS_THREADS if set, else all cores")
    p.add_argument("--tiny", action="store_true", help="tiny seed models and a 64 px image: checks the harness only")
    p.add_argument("--out", default=None, help="also write the full result as JSON here")
    args = p.parse_args(argv)
    result = speed_benchmark(args.seg_model, args.cls_model, runs=args.runs, warmup=args.warmup, batch=args.batch,
                             batch_runs=args.batch_runs, runtimes=tuple(args.runtimes), threads=args.threads, tiny=args.tiny,
                             command=shlex.join(["python", "-m", "tumorlens.bench.speed", *argv]))
    print(format_speed_table(result))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
