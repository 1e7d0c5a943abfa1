"""Runtime and precision for 'auto' on a CPU, chosen by measuring, not by CPU flags: a few forward
passes of the model itself in each candidate (ONNX Runtime fp32, torch fp32, torch bf16 where the CPU
has native bf16), in interleaved rounds, the fastest kept. CPU flags mislead: on an Intel Xeon with avx512_bf16, bf16 autocast
was slower end to end than fp32 (160 vs 148 ms p50), the opposite of the AMD EPYC the flag rule was
written on. The choice is cached per weights, threads, CPU and library versions
(onnx_cache_dir()/runtime_choice.json), so a machine measures once."""

from __future__ import annotations

import json
import os
import statistics
import time

import torch

from .hardware import BF16_CPU_FLAGS, cpu_flags, cpu_model
from .paths import onnx_cache_dir

CACHE_NAME = "runtime_choice.json"
WARMUP, TIMED = 2, 5  # passes per candidate: the first ones pay for allocation and kernel selection
ROUNDS = 2            # interleaved rounds over the candidates; each one's fastest round counts


def candidates() -> list[tuple[str, str]]:
    """(runtime, precision) pairs worth timing on this CPU (emulated bf16 is never a contender)."""
    out = [("onnx", "fp32"), ("torch", "fp32")]
    if any(flag in cpu_flags() for flag in BF16_CPU_FLAGS):
        out.append(("torch", "bf16"))
    return out


def cache_key(model_key: str, size: int) -> str:
    import onnxruntime
    from .runtime import ORT_SPINNING
    return (f"{model_key}|{size}px|threads {torch.get_num_threads()}|{cpu_model()}|torch {torch.__version__}"
            f"|onnxruntime {onnxruntime.__version__} spinning {ORT_SPINNING}")


HOPELESS = 3.0  # a candidate whose first timed pass is this many times the best so far stops there


def time_runner(runner, size: int, best: float = float("inf")) -> float:
    """Median seconds of one batch-1 forward pass (random input: no all-zero shortcuts); a candidate
    far slower than `best` after one timed pass is not timed further (its one pass is returned)."""
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    for _ in range(WARMUP):
        runner(x)
    times = []
    for _ in range(TIMED):
        start = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - start)
        if times[0] > HOPELESS * best:
            break
    return statistics.median(times)


def _read_cache() -> dict:
    path = onnx_cache_dir() / CACHE_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, entry: dict) -> None:
    path = onnx_cache_dir() / CACHE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    cache = _read_cache()
    cache[key] = entry
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1) + "\n")
    tmp.replace(path)  # atomic: two processes measuring at once leave one whole file


def measured_choice(model: torch.nn.Module, size: int, *, kind: str, model_key: str) -> tuple[str, str]:
    """(runtime, precision) for this model on this CPU: cached, else measured now and cached."""
    from .runtime import Runner
    key = cache_key(model_key, size)
    cached = _read_cache().get(key)
    if cached:
        return cached["runtime"], cached["precision"]
    runners = {f"{r}/{p}": Runner(model, size, kind=kind, cache_key=model_key, runtime=r, precision=p)
               for r, p in candidates()}
    seconds: dict[str, float] = {}
    # interleaved rounds, each candidate's fastest kept: a burst of load elsewhere then slows one round of
    # every candidate, not one candidate's whole measurement (a choice measured beside a training run
    # once held torch at 1.9 s per pass against ONNX's 0.06 s, and stayed cached)
    for round_ in range(ROUNDS):
        for name, runner in runners.items():
            if round_ and seconds[name] > HOPELESS * min(seconds.values()):
                continue  # hopeless after the first round: not timed again
            t = time_runner(runner, runner.size, min(seconds.values(), default=float("inf")))
            seconds[name] = min(t, seconds.get(name, t))
    best = min(seconds, key=seconds.get)
    runtime, precision = best.split("/")
    _write_cache(key, {"runtime": runtime, "precision": precision, "kind": kind,
                       "median_seconds": {k: round(v, 5) for k, v in seconds.items()},
                       "measured": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return runtime, precision
