"""TumorLens Space: python space/app.py [--seg-model X] [--cls-model Y] [--runtime auto] [--port 7860]

Models (a local folder or a Hub repo id): the flags, else $TUMORLENS_SEG_MODEL / $TUMORLENS_CLS_MODEL,
else tumorlens_space.json beside this file (written by build_space.py), else the folders shipped under
models/ (works offline). Examples: --examples-dataset or $TUMORLENS_EXAMPLES_DATASET (a Hub dataset id),
--data-root wins over both; else the dataset location (../shared/data beside the project)."""

import argparse
import logging
import os
from pathlib import Path

from tumorlens.app import build_demo, example_paths, launch_options
from tumorlens.errors import TumorLensError
from tumorlens.inference import Pipeline
from tumorlens.space_bundle import space_settings

log = logging.getLogger("tumorlens.space")


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = space_settings(Path(__file__).resolve().parent)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seg-model", default=settings["seg_model"], help="segmenter folder or Hub repo id")
    p.add_argument("--cls-model", default=settings["cls_model"], help="classifier folder or Hub repo id")
    p.add_argument("--runtime", choices=("auto", "torch", "onnx"), default=os.environ.get("TUMORLENS_RUNTIME", "auto"))
    p.add_argument("--examples-dataset", default=settings["examples_dataset"], help="Hub dataset id for the examples")
    p.add_argument("--data-root", default=None, help="BRISC 2025 root for the examples")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = p.parse_args(argv)
    pipeline = None
    if args.seg_model or args.cls_model:
        try:
            pipeline = Pipeline.from_pretrained(args.seg_model, args.cls_model, runtime=args.runtime)
        except TumorLensError as exc:
            log.error("cannot load the models (%s); the app starts without them", exc)
    examples = example_paths(args.data_root, None if args.data_root else args.examples_dataset)
    build_demo(pipeline, examples).launch(server_name=args.host, server_port=args.port, **launch_options())


if __name__ == "__main__":
    main()
