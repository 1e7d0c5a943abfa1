"""TumorLens Space: python space/app.py [--seg-model X] [--cls-model Y] [--port 7860]

Models: flags, else $TUMORLENS_SEG_MODEL / $TUMORLENS_CLS_MODEL (folder or Hub repo id), else the
folders shipped under models/. Examples are read from the dataset location ($TUMORLENS_DATA)."""

import argparse
import os

from tumorlens.app import build_demo, example_paths
from tumorlens.inference import Pipeline, default_model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seg-model", default=default_model("segmenter"))
    p.add_argument("--cls-model", default=default_model("classifier"))
    p.add_argument("--data-root", default=None, help="BRISC 2025 root for the examples")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = p.parse_args(argv)
    pipeline = Pipeline.from_pretrained(args.seg_model, args.cls_model) if (args.seg_model or args.cls_model) else None
    build_demo(pipeline, example_paths(args.data_root)).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
