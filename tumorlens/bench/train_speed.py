"""Time one training step per precision on this machine: the evidence behind `--precision auto`.

    python -m tumorlens.bench.train_speed [--model segmenter|classifier] [--steps 3]"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ..hardware import hardware_summary, pick_precision
from ..models import build_classifier, build_segmenter

SETUPS = {"segmenter": (192, 16), "classifier": (224, 32)}


def time_train_step(model: torch.nn.Module, size: int, batch: int, precision: str, steps: int = 3,
                    channels_last: bool = True) -> float:
    """Best-of-`steps` milliseconds per image of forward + backward + AdamW on random data."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            y = model(x)
        y.float().mean().backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return min(times[1:]) / batch * 1000


def main(argv=None, prog: str = "python -m tumorlens.bench.train_speed") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    p.add_argument("--model", choices=sorted(SETUPS), default="segmenter")
    p.add_argument("--arch", default="tf_efficientnet_lite0")
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)
    size, batch = SETUPS[args.model]
    results = {}
    for precision in ("bf16", "fp32"):
        model = build_segmenter() if args.model == "segmenter" else build_classifier(args.arch, 4)
        results[precision] = round(time_train_step(model, size, batch, precision, args.steps), 1)
    print(json.dumps({"model": args.model, "input": size, "batch": batch, "ms_per_image": results,
                      "auto_picks": pick_precision("auto", "cpu"), "hardware": hardware_summary()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
