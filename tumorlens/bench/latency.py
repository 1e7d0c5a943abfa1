"""Inference latency of the shipped models on this machine, per runtime (torch precision picked
per CPU, torch fp32, ONNX Runtime): the evidence behind `runtime='auto'`. `time_call` is the one
timer every speed measurement here uses.

    python -m tumorlens.bench.latency [--seg-model X] [--cls-model Y] [--runs 50] [--image PATH]"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ..hardware import hardware_summary
from ..inference import Classifier, Segmenter
from ..preprocess import decode_image
from ..registry import default_model


def time_call(fn, runs: int, warmup: int = 5) -> dict:
    """p50 and p90 milliseconds of `fn()` over `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p90_ms": round(float(np.percentile(times, 90)), 2),
            "runs": runs}



def fastest_of_rounds(calls: dict, runs: int, rounds: int = 3) -> dict:
    """`time_call` for each named call, interleaved over `rounds` rounds (`runs` calls in all per name),
    each name's fastest round kept: the first model timed alone ran 2x slow (clock ramp-up, allocator
    warm-up), the same model later in the run did not."""
    timed = [{name: time_call(fn, max(1, runs // rounds)) for name, fn in calls.items()} for _ in range(rounds)]
    return {name: min((r[name] for r in timed), key=lambda t: t["p50_ms"]) for name in calls}


def model_latency(kind: str, name: str, image: np.ndarray, runs: int) -> dict:
    out = {}
    for label, kw in (("torch-auto", {"runtime": "torch"}), ("torch-fp32", {"runtime": "torch", "precision": "fp32"}),
                      ("onnx", {"runtime": "onnx"})):
        if kind == "segmenter":
            model = Segmenter.from_pretrained(name, tta=False, **kw)
            x = model.pre.normalize(torch.from_numpy(model.pre.prepare(image)[0])[None])
        else:
            model = Classifier.from_pretrained(name, **kw)
            x = model.pre.normalize(torch.from_numpy(model.pre.prepare(image)[0])[None])
        out[label] = {**time_call(lambda: model.runner(x), runs), "precision": model.runner.precision}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tumorlens.bench.latency", description=__doc__)
    p.add_argument("--seg-model", default=default_model("segmenter"))
    p.add_argument("--cls-model", default=default_model("classifier"))
    p.add_argument("--image", default=None, help="an MRI slice (default: a 512x512 random image)")
    p.add_argument("--runs", type=int, default=50)
    args = p.parse_args(argv)
    image = decode_image(args.image) if args.image else np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    result = {"hardware": hardware_summary(), "note": "one image, model forward only (preprocessing excluded)"}
    if args.seg_model:
        result["segmenter"] = model_latency("segmenter", args.seg_model, image, args.runs)
    if args.cls_model:
        result["classifier"] = model_latency("classifier", args.cls_model, image, args.runs)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
