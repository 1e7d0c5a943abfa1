"""Train the TumorLens tumor-type classifier (glioma, meningioma, no_tumor, pituitary) on BRISC 2025 train.

    python train/train_classifier.py                      # CPU or CUDA, precision picked per machine
    accelerate launch train/train_classifier.py --epochs 30
Re-running with the same --run-dir resumes from the last checkpoint."""

import argparse

from tumorlens.data import TUMOR_CLASSES
from tumorlens.training.cli import add_common_args, brisc_train_val, run
from tumorlens.training.tasks import ARCH_CHECKPOINTS, ClassificationSetup, ClassificationTask


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, defaults={"run_dir": "runs/classifier", "out": "models/tumorlens-efficientnet-lite0-brisc2025",
                                 "epochs": 30, "batch_size": 32, "lr": 2e-3})
    p.add_argument("--arch", default="tf_efficientnet_lite0", choices=sorted(ARCH_CHECKPOINTS))
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    args = p.parse_args(argv)
    setup = ClassificationSetup(arch=args.arch, imagenet_init=not args.random_init and not args.init_from,
                                input_size=args.input_size, label_smoothing=args.label_smoothing)
    train, val = brisc_train_val("classification", args.input_size, args)
    task = ClassificationTask(train, val, list(TUMOR_CLASSES), setup)
    out = run(task, args, "classifier")
    if out:
        print(f"model written to {out}")


if __name__ == "__main__":
    main()
