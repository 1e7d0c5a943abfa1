"""The old name of `python -m tumorlens.bench.train_speed` (time one training step per precision),
kept so that `python -m tumorlens.training.speed ...` still works. Nothing imports this module."""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    from ..bench.train_speed import main as _main  # an entry point only: bench sits above training
    return _main(argv, prog="python -m tumorlens.training.speed")


if __name__ == "__main__":
    sys.exit(main())
