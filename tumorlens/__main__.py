"""tumorlens command line: `python -m tumorlens predict ...` (see `--help`)."""

from __future__ import annotations

import argparse
import logging
import sys

from . import predict


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="tumorlens", description="Brain-tumor MRI segmentation and classification")
    sub = parser.add_subparsers(dest="command", required=True)
    predict.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
