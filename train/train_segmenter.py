"""Train the TumorLens U-Net on BRISC 2025 train (+ its no_tumor slices with empty masks),
on the LGG patient-wise train split (--dataset lgg), or on Figshare folds (--dataset figshare --fold K).

    python train/train_segmenter.py                       # CPU or CUDA, precision picked per machine
    python train/train_segmenter.py --dataset lgg --out models/tumorlens-unet-efficientnet-lite2-lgg
    accelerate launch train/train_segmenter.py --epochs 40
Re-running with the same --run-dir resumes from the last checkpoint."""

import sys

from tumorlens.training import cli


def main(argv=None) -> int:
    return cli.main("segmenter", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
