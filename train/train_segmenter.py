"""Train the TumorLens U-Net on BRISC 2025 train (+ its no_tumor slices with empty masks),
on the LGG patient-wise train split (--dataset lgg), or on Figshare folds (--dataset figshare --fold K).

    python train/train_segmenter.py                       # CPU or CUDA, precision picked per machine
    python train/train_segmenter.py --dataset lgg --out models/tumorlens-unet-mobilenetv2-lgg
    accelerate launch train/train_segmenter.py --epochs 40
Re-running with the same --run-dir resumes from the last checkpoint."""

from tumorlens.training.recipes import train_segmenter


def main(argv=None):
    out = train_segmenter(argv, __doc__)
    if out:
        print(f"model written to {out}")


if __name__ == "__main__":
    main()
