"""TumorLens Space: python space/app.py [--seg-model X] [--cls-model Y] [--runtime auto] [--port 7860]

Models (a local folder or a Hub repo id; the segmenter also by name: brisc2025, lgg): the flags, else
$TUMORLENS_SEG_MODEL / $TUMORLENS_CLS_MODEL, else tumorlens_space.json beside this file (written by
build_space.py), else the folders shipped under models/ (works offline). The other segmenters there
(the LGG one) join the page's model menu and load when first chosen. Examples: --examples-dataset or
$TUMORLENS_EXAMPLES_DATASET (a Hub dataset id), --data-root wins over both; else the slices committed in
space/examples (BRISC 2025 and Figshare, CC BY 4.0); else the dataset location (../shared/data beside
the project); LGG examples come from the dataset location only. The page shows them as thumbnails and
has a Results tab (each model's eval.json, a pager through scored test slices read from the dataset
location). Torch threads per model call: --threads, else the cores shared out among the calls that
run at once ($TUMORLENS_CONCURRENCY, default 2). Uploads that do not look like a brain MRI slice are
refused by the scope gate fitted beside the classifier (scope_gate.safetensors; the page's "Analyze
anyway" overrides it; --no-scope-check turns it off)."""

import argparse
import logging
import os
from pathlib import Path

import torch

from tumorlens.app import build_demo, concurrency_limit, launch_options, threads_per_call
from tumorlens.data.lgg import NAME as LGG_DATASET
from tumorlens.errors import TumorLensError
from tumorlens.examples import example_paths, lgg_example_paths, other_committed_examples
from tumorlens.inference import Pipeline
from tumorlens.model_record import read_record
from tumorlens.scope_gate import load_gate
from tumorlens.registry import DEFAULT_SEGMENTER, available_segmenters, resolve_model, segmenter_name
from tumorlens.space_bundle import space_settings

log = logging.getLogger("tumorlens.space")


def lgg_trained(location: str) -> bool:
    """Whether the segmenter at `location` says (in its metadata.json) it was trained on LGG slices."""
    try:
        return read_record(resolve_model(location)).trained_on == LGG_DATASET
    except (TumorLensError, ValueError, OSError):
        return False


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = space_settings(Path(__file__).resolve().parent)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seg-model", default=settings["seg_model"],
                   help=f"the default segmenter: a name ({', '.join(available_segmenters()) or 'none here'}), "
                        "a folder or a Hub repo id")
    p.add_argument("--cls-model", default=settings["cls_model"], help="classifier folder or Hub repo id")
    p.add_argument("--runtime", choices=("auto", "torch", "onnx"), default=os.environ.get("TUMORLENS_RUNTIME", "auto"))
    p.add_argument("--examples-dataset", default=settings["examples_dataset"], help="Hub dataset id for the examples")
    p.add_argument("--data-root", default=None, help="BRISC 2025 root for the examples")
    p.add_argument("--no-scope-check", action="store_true",
                   help="analyze every upload, also those that do not look like a brain MRI slice")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per model call (default: $OMP_NUM_THREADS, else the usable cores shared "
                        "out among the $TUMORLENS_CONCURRENCY calls that run at once)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = p.parse_args(argv)
    # before the models load: more threads than cores per concurrent call oversubscribes a Space's 2 vCPUs
    torch.set_num_threads(max(1, args.threads or threads_per_call()))
    log.info("%d torch thread(s) per model call, %d call(s) at once", torch.get_num_threads(), concurrency_limit())
    # the menu's default: --seg-model, under its own name (brisc2025 unless it names another)
    default = segmenter_name(args.seg_model) or DEFAULT_SEGMENTER
    segmenters, pipeline, seg = {**settings["segmenters"], default: args.seg_model}, None, None
    if args.seg_model or args.cls_model:
        try:
            seg = resolve_model(args.seg_model) if args.seg_model else None
            pipeline = Pipeline.from_pretrained(seg, args.cls_model, runtime=args.runtime)
        except TumorLensError as exc:
            log.error("cannot load the models (%s); the app starts without them", exc)
    examples = [(path, DEFAULT_SEGMENTER) for path in example_paths(args.data_root, None if args.data_root
                                                                    else args.examples_dataset)]
    if not args.data_root and not args.examples_dataset:  # the committed Figshare slices join the BRISC ones
        examples += [(path, DEFAULT_SEGMENTER) for path in other_committed_examples()]
    lgg_models = [name for name, location in segmenters.items() if location and lgg_trained(location)]
    if lgg_models:  # LGG slices go to the first segmenter whose record says it was trained on LGG
        examples += [(path, lgg_models[0]) for path in lgg_example_paths()]
    # where the models came from: the reports give their weights' versions and test scores
    # the out-of-scope check fitted beside the classifier (none there: no check, said in the log)
    gate = None if args.no_scope_check else load_gate(args.cls_model)
    if gate is None and not args.no_scope_check:
        log.warning("no scope gate beside the classifier %s: every upload is analyzed", args.cls_model)
    build_demo(pipeline, examples, segmenters=segmenters, default_segmenter=default, runtime=args.runtime,
               model_locations=(seg, args.cls_model), scope_gate=gate).launch(server_name=args.host, server_port=args.port,
                                                              **launch_options())


if __name__ == "__main__":
    main()
