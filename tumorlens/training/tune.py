"""Choose a finished model's inference settings on its validation split (never on test) and write
them to inference_config.json beside the weights; training runs this itself when it finalises.

    python -m tumorlens.training.tune classifier models/tumorlens-efficientnet-lite0-brisc2025
    python -m tumorlens.training.tune segmenter models/tumorlens-unet-mobilenetv2-lgg --dataset lgg

Classifier: hflip TTA on or off. Segmenter: threshold and smallest kept component."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli import DATASETS, train_val_packs, tune_classifier, tune_segmenter, tumor_roi_packs


def classifier_val_pack(folder: Path, args) -> dict:
    """The validation images as this classifier sees them (tumor regions for a mask-guided one)."""
    from ..models import load_classifier
    from .tasks import ClassificationSetup
    model, pre, _ = load_classifier(folder)
    if pre.crop_to_tumor:
        setup = ClassificationSetup(arch=model.default_cfg.get("architecture", "tf_efficientnet_lite0"),
                                    input_size=pre.input_size, crop_to_tumor=True)
        args.roi_segmenter = pre.roi_segmenter
        return tumor_roi_packs(setup, args)[1]
    return train_val_packs("classification", pre.input_size, args)[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tumorlens.training.tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=("segmenter", "classifier"))
    p.add_argument("folder", type=Path)
    p.add_argument("--dataset", choices=DATASETS, default="brisc2025")
    p.add_argument("--fold", type=int, help="Figshare fold held out for testing")
    p.add_argument("--data-root")
    p.add_argument("--seed", type=int, default=42, help="as in training: the same validation split")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--limit", type=int, help="a seeded handful of images (smoke runs)")
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    if args.kind == "segmenter":
        tuned = tune_segmenter(args.folder, args)
    else:
        tuned = tune_classifier(args.folder, classifier_val_pack(args.folder, args), args)
    print(json.dumps({k: v for k, v in tuned.items() if k != "grid"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
