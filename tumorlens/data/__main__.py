"""python -m tumorlens.data build DATASET --root PATH --out DIR [--push-to-hub REPO]  (DATASET: a registered name)"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import datasets

from ..errors import ConfigError, DataError
from .cards import PUBLISHED_VIEWS, dataset_card, push_dataset_card  # noqa: F401 - PUBLISHED_VIEWS re-exported
from .export import write_parquet
from .registry import dataset_names, get_dataset

BRISC_TASKS = ("classification", "segmentation", "segmentation+no_tumor")
FORMATS = ("disk", "parquet")


def load_named(name: str, root: str | None, task: str | None, check: str) -> datasets.DatasetDict:
    """`name`'s original layout; `task` picks a BRISC 2025 view (a loader that takes no task is given none)."""
    record = get_dataset(name)
    takes_task = "task" in inspect.signature(record.loader).parameters
    return record.load(root, check=check, **({"task": task or "classification"} if takes_task else {}))


def build(name: str, root: str | None, out: Path, *, task: str | None = None, fmt: str = "disk",
          check: str = "full", push_to_hub: str | None = None, private: bool = False,
          config_name: str = "default", set_default: bool | None = None) -> datasets.DatasetDict:
    """Write dataset `name` (BRISC: the `task` view) to `out`; with `push_to_hub`, push it as the Hub
    dataset config `config_name` (several views live side by side in one repo) with its card."""
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    datasets.enable_progress_bars()
    dsd = load_named(name, root, task, check)
    out.mkdir(parents=True, exist_ok=True)
    # both formats carry the image bytes, so the output stands alone once the source folder moves
    if fmt == "disk":
        dsd.save_to_disk(str(out))  # embeds local files itself
    else:
        for split, ds in dsd.items():
            write_parquet(ds, out / f"{split}.parquet")
    card = dataset_card(name, dsd, task)
    card.save(str(out / "README.md"))
    if push_to_hub:
        # writes README.md's configs:/dataset_info: for this config, keeping the others'
        dsd.push_to_hub(push_to_hub, private=private, config_name=config_name, set_default=set_default)
        push_dataset_card(card, push_to_hub)  # merged into that README, not over it
    return dsd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tumorlens.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="read a dataset's original layout and write it as a Hugging Face dataset")
    b.add_argument("dataset", choices=dataset_names())
    b.add_argument("--root", help="the dataset's own folder (default: $TUMORLENS_<NAME>_ROOT, else $TUMORLENS_DATA/<name>, "
                                     "else ../shared/data/<name>)")
    b.add_argument("--out", required=True, type=Path, help="output folder")
    b.add_argument("--task", choices=BRISC_TASKS, help="BRISC 2025 only (default classification)")
    b.add_argument("--format", choices=FORMATS, default="disk",
                   help="save_to_disk (default) or one Parquet file per split; both embed the image bytes")
    b.add_argument("--check", choices=("none", "header", "full"), default="full",
                   help="how hard to check each image before writing (default: decode every pixel)")
    b.add_argument("--push-to-hub", metavar="REPO", help="also push the dataset and its card to this Hub repo")
    b.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    try:
        dsd = build(args.dataset, args.root, args.out, task=args.task, fmt=args.format, check=args.check,
                    push_to_hub=args.push_to_hub, private=args.private)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.dataset} to {args.out}: " + ", ".join(f"{k} {len(v)}" for k, v in dsd.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
