"""Choose a finished model's inference settings on its validation split (never on test) and write
them to inference_config.json beside the weights; training runs this itself when it finalises.

    python -m tumorlens.postprocess classifier models/tumorlens-efficientnet-lite0-brisc2025
    python -m tumorlens.postprocess segmenter models/tumorlens-unet-efficientnet-lite2-lgg --dataset lgg

Classifier: hflip TTA on or off. Segmenter: threshold and smallest kept component."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# An entry point, above what it uses (the validation packs and the tuning runs of tumorlens.release);
# the rules themselves live in tumorlens.postprocess, which imports nothing from here or from training.
from ..errors import TumorLensError
from ..release import classifier_val_pack, tune_classifier, tune_segmenter
from ..training.specs import DataSpec
from ..data.registry import dataset_names

PROG = "python -m tumorlens.postprocess"


def main(argv=None, prog: str = PROG) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=("segmenter", "classifier"))
    p.add_argument("folder", type=Path)
    p.add_argument("--dataset", choices=dataset_names(), default="brisc2025")
    p.add_argument("--fold", type=int, help="Figshare fold held out for testing")
    p.add_argument("--data-root", help="the dataset's own folder, its root (default: its usual place)")
    p.add_argument("--seed", type=int, default=42, help="as in training: the same validation split")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--limit", type=int, help="a seeded handful of images (smoke runs)")
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    data = DataSpec(dataset=args.dataset, root=Path(args.data_root) if args.data_root else None, fold=args.fold,
                    val_fraction=args.val_fraction, seed=args.seed, limit=args.limit)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        if args.kind == "segmenter":
            tuned = tune_segmenter(args.folder, data)
        else:
            tuned = tune_classifier(args.folder, classifier_val_pack(args.folder, data), data)
    except TumorLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in tuned.items() if k != "grid"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
