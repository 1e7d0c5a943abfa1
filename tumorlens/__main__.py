"""The `tumorlens` command: every TumorLens job is one of its subcommands.

    tumorlens predict scans/ --out results/
    tumorlens train segmenter --epochs 40
    tumorlens evaluate segmenter models/tumorlens-unet-mobilenetv2-brisc2025
    tumorlens COMMAND --help

Each subcommand forwards its arguments to the module that owns the job, so `tumorlens evaluate ...` and
`python -m tumorlens.evaluate ...` (and `python train/train_segmenter.py ...`) are the same command."""

from __future__ import annotations

import importlib
import logging
import sys

# subcommand -> ("module:function" taking argv, what it does); the order is the --help listing's
COMMANDS = {
    "predict": ("tumorlens.__main__:predict", "segment (and classify) images and scans; write masks and predictions.csv"),
    "train": ("tumorlens.__main__:train", "train a model: `train segmenter ...` or `train classifier ...`"),
    "evaluate": ("tumorlens.evaluate:main", "score a model folder on its test set; write eval.json, re-render the card"),
    "postprocess": ("tumorlens.postprocess.__main__:main",
                    "re-tune a model's threshold, clean-up or TTA on validation data (inference_config.json)"),
    "bench": ("tumorlens.bench.__main__:main", "the results table beside the published systems (benchmarks/)"),
    "ablation": ("tumorlens.bench.ablation:main", "the segmenter ablation: train, score and report each arm"),
    "figshare-cv": ("tumorlens.bench.figshare_cv:main", "re-train and re-score the Figshare cross-validation folds"),
    "speed": ("tumorlens.bench.speed:main", "inference speed against the published systems' architectures"),
    "latency": ("tumorlens.bench.latency:main", "our models' latency per runtime (torch, ONNX)"),
    "train-speed": ("tumorlens.bench.train_speed:main", "one training step per precision on this machine"),
    "audit": ("tumorlens.audit.__main__:main", "the duplicate audit within and across datasets"),
    "data": ("tumorlens.data.__main__:main", "package a dataset from its original layout as a Hugging Face dataset"),
    "publish": ("tumorlens.publish:main",
                "push the shipped models, datasets and the Space to the Hub (--dry-run lists the plan)"),
}
TRAINABLE = ("segmenter", "classifier")


def predict(argv: list[str] | None = None) -> int:
    """`tumorlens predict ...` (its options: tumorlens.predict.add_parser)."""
    import argparse
    from . import predict as predict_module
    parser = argparse.ArgumentParser(prog="tumorlens")
    predict_module.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["predict", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


def train(argv: list[str] | None = None) -> int:
    """`tumorlens train segmenter|classifier ...`: the training entry point of that model kind."""
    from .training import cli
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TRAINABLE:
        if argv and argv[0] in ("-h", "--help"):
            print(f"usage: tumorlens train {{{','.join(TRAINABLE)}}} [options]   (see tumorlens train segmenter --help)")
            return 0
        print(f"error: tumorlens train needs the model kind first: {' or '.join(TRAINABLE)}", file=sys.stderr)
        return 2
    return cli.main(argv[0], argv[1:])


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [__doc__.split("\n\n")[0], "", "usage: tumorlens COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    module, function = COMMANDS[command][0].split(":")
    return getattr(importlib.import_module(module), function)(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
