"""Assemble a deployable Space folder (no data; models referenced by Hub repo id unless asked).

    python space/build_space.py --out space_build [--seg-model OWNER/SEG] [--cls-model OWNER/CLS]
        [--lgg-model OWNER/LGG|none] [--examples-dataset OWNER/DATASET] [--include-weights] [--overwrite]
    hf upload OWNER/SPACE space_build . --repo-type=space

See tumorlens/space_bundle.py for what goes in."""

import argparse
import sys

from tumorlens.data.lgg import NAME as LGG  # the LGG segmenter's name: its release names it after its dataset
from tumorlens.registry import LGG_SEGMENTER, hub_repo
from tumorlens.space_bundle import build_space, extra_segmenters_shipped


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="space_build", help="folder to write (default: space_build, git-ignored)")
    p.add_argument("--seg-model", default=None, help="segmenter Hub repo id (default: the published one)")
    p.add_argument("--cls-model", default=None, help="classifier Hub repo id (default: the published one)")
    p.add_argument("--lgg-model", default=None,
                   help=f"LGG segmenter Hub repo id (a folder with --include-weights), or 'none' to leave it out "
                        f"(default: {hub_repo(LGG_SEGMENTER)} when models/{LGG_SEGMENTER} is shipped)")
    p.add_argument("--examples-dataset", default=None, help="Hub dataset id the Space reads its examples from")
    p.add_argument("--include-weights", action="store_true",
                   help="copy the model folders (--seg-model/--cls-model folders, else models/) into the Space")
    p.add_argument("--overwrite", action="store_true", help="replace a Space folder built before")
    args = p.parse_args(argv)
    segmenters = extra_segmenters_shipped()
    if args.lgg_model and args.lgg_model.lower() == "none":
        segmenters.pop(LGG, None)
    elif args.lgg_model:
        segmenters[LGG] = args.lgg_model
    try:
        out = build_space(args.out, seg_model=args.seg_model, cls_model=args.cls_model, segmenters=segmenters,
                          examples_dataset=args.examples_dataset, include_weights=args.include_weights,
                          overwrite=args.overwrite)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Space folder ready: {out}\nupload: hf upload OWNER/SPACE {out} . --repo-type=space")
    return 0


if __name__ == "__main__":
    sys.exit(main())
