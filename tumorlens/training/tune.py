"""The old name of `python -m tumorlens.postprocess` (re-tune a finished model's inference settings
on its validation split), kept so that `python -m tumorlens.training.tune ...` still works. Nothing
in the package imports this module."""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    from ..postprocess.__main__ import main as _main  # an entry point only: the CLI sits above training
    return _main(argv, prog="python -m tumorlens.training.tune")


if __name__ == "__main__":
    sys.exit(main())
