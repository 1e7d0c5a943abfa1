"""Train the TumorLens U-Net on BRISC 2025 train (+ its no_tumor slices with empty masks).

    python train/train_segmenter.py                       # CPU or CUDA, precision picked per machine
    accelerate launch train/train_segmenter.py --epochs 40
Re-running with the same --run-dir resumes from the last checkpoint."""

import argparse

from tumorlens.training.augment import AugmentConfig
from tumorlens.training.cli import add_common_args, brisc_train_val, run
from tumorlens.training.tasks import SegmentationSetup, SegmentationTask


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, defaults={"run_dir": "runs/segmenter", "out": "models/tumorlens-unet-mobilenetv2-brisc2025",
                                 "epochs": 40, "batch_size": 16, "lr": 1e-3})
    p.add_argument("--encoder", default="mobilenet_v2")
    p.add_argument("--input-size", type=int, default=256, help="letterbox size; whole slices are predicted at this size")
    p.add_argument("--crop", type=int, default=192, help="random training crop (<= input size)")
    p.add_argument("--fg-fraction", type=float, default=0.33, help="share of crops centred on tumor pixels")
    args = p.parse_args(argv)
    setup = SegmentationSetup(encoder=args.encoder, imagenet_init=not args.random_init and not args.init_from,
                              input_size=args.input_size, crop=args.crop, fg_fraction=args.fg_fraction)
    train, val = brisc_train_val("segmentation", args.input_size, args)
    task = SegmentationTask(train, val, setup, AugmentConfig())
    out = run(task, args, "segmenter")
    if out:
        print(f"model written to {out}")


if __name__ == "__main__":
    main()
