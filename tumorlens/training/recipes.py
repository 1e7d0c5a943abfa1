"""The two training recipes behind train/train_segmenter.py and train/train_classifier.py, importable
so that the benchmark can re-run its cross-validation folds with the very same code."""

from __future__ import annotations

import argparse
from pathlib import Path

from .augment import AugmentConfig
from .cli import add_common_args, resolve_out, run, train_val_packs, tumor_roi_packs
from .tasks import ARCH_CHECKPOINTS, ClassificationSetup, ClassificationTask, SegmentationSetup, SegmentationTask

SEGMENTER_OUT = "models/tumorlens-unet-mobilenetv2-brisc2025"
CLASSIFIER_OUT = "models/tumorlens-efficientnet-lite0-brisc2025"


def segmenter_parser(description: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, defaults={"run_dir": "runs/segmenter", "out": SEGMENTER_OUT,
                                 "epochs": 40, "batch_size": 16, "lr": 1e-3})
    p.add_argument("--encoder", default="mobilenet_v2")
    p.add_argument("--input-size", type=int, default=256, help="letterbox size; whole slices are predicted at this size")
    p.add_argument("--crop", type=int, default=192, help="random training crop (<= input size)")
    p.add_argument("--fg-fraction", type=float, default=0.33, help="share of crops centred on tumor pixels")
    return p


def classifier_parser(description: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, defaults={"run_dir": "runs/classifier", "out": CLASSIFIER_OUT,
                                 "epochs": 30, "batch_size": 32, "lr": 2e-3})
    p.add_argument("--arch", default="tf_efficientnet_lite0", choices=sorted(ARCH_CHECKPOINTS))
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--tumor-roi", action="store_true",
                   help="mask-guided: classify the region around the segmenter's mask, not the whole slice")
    p.add_argument("--roi-segmenter", default=None,
                   help="segmenter whose masks give the tumor regions (default: the shipped BRISC segmenter)")
    return p


def train_segmenter(argv=None, description: str | None = None) -> Path | None:
    args = segmenter_parser(description).parse_args(argv)
    setup = SegmentationSetup(encoder=args.encoder, imagenet_init=not args.random_init and not args.init_from,
                              input_size=args.input_size, crop=args.crop, fg_fraction=args.fg_fraction)
    resolve_out(args, SEGMENTER_OUT)
    train, val, _ = train_val_packs("segmentation", args.input_size, args)
    return run(SegmentationTask(train, val, setup, AugmentConfig()), args, "segmenter")


def train_classifier(argv=None, description: str | None = None) -> Path | None:
    args = classifier_parser(description).parse_args(argv)
    setup = ClassificationSetup(arch=args.arch, imagenet_init=not args.random_init and not args.init_from,
                                input_size=args.input_size, label_smoothing=args.label_smoothing,
                                crop_to_tumor=args.tumor_roi)
    resolve_out(args, CLASSIFIER_OUT.replace("brisc2025", "roi-brisc2025") if args.tumor_roi else CLASSIFIER_OUT)
    if args.tumor_roi:
        train, val, label_names = tumor_roi_packs(setup, args)
    else:
        train, val, label_names = train_val_packs("classification", args.input_size, args)
    return run(ClassificationTask(train, val, label_names, setup), args, "classifier")
