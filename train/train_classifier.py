"""Train the TumorLens tumor-type classifier (glioma, meningioma, no_tumor, pituitary) on BRISC 2025 train,
or the 3 Figshare classes on its folds (--dataset figshare --fold K).

    python train/train_classifier.py                      # CPU or CUDA, precision picked per machine
    accelerate launch train/train_classifier.py --epochs 30
Re-running with the same --run-dir resumes from the last checkpoint."""

import sys

from tumorlens.training import cli


def main(argv=None) -> int:
    return cli.main("classifier", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
