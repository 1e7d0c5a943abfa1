"""`tumorlens publish`: push the shipped model folders, the packaged datasets and the Space to the Hub.

    tumorlens publish --dry-run                      # the plan: what goes where; nothing is sent
    tumorlens publish                                # everything, under the default owner
    tumorlens publish --owner me --models --private  # only the model folders, under another owner

The plan:
- each shipped model folder models/<name> -> OWNER/<name> (model repo). Its card is re-rendered in a
  temporary copy with that repo id, so its snippets load that repo; models/<name> itself is not changed;
- each registered dataset (tumorlens.data.registry) -> OWNER/<dataset> (dataset repo), built from its
  original layout (`tumorlens data build`; BRISC 2025 both views, as two configs) into a temporary folder and pushed with its card;
- the Space (tumorlens.space_bundle.build_space into a temporary folder, loading the models from OWNER's
  repos and its examples from OWNER/brisc2025) -> OWNER/tumorlens (space repo).

Before any push the token and the endpoint are checked once (tumorlens.hub.check_push_access); a failure
there is one line and exit code 2, nothing sent. Then one line per item; an item that fails is reported
in one line and the others go on; exit code 1 if any failed."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, TumorLensError
from .paths import MODELS_DIR
from .registry import BRISC_CLASSIFIER, BRISC_SEGMENTER, DEFAULT_MODELS, HUB_OWNER, LGG_SEGMENTER

SHIPPED_MODELS = (BRISC_SEGMENTER, LGG_SEGMENTER, BRISC_CLASSIFIER)  # folder names under models/ = repo names
SPACE_NAME = "tumorlens"            # the Space repo: OWNER/tumorlens
SPACE_SDK = "gradio"
EXAMPLES_DATASET = "brisc2025"      # the Space's examples come from OWNER/<this> (its packaged test split)
KINDS = ("models", "datasets", "space")


@dataclass(frozen=True)
class PublishItem:
    """One push: `source` (a folder, a dataset root, or what the Space is built from) -> `repo_id`."""

    kind: str           # of KINDS, singular: "model", "dataset", "space"
    name: str           # the folder, dataset or Space name
    repo_id: str
    repo_type: str      # the Hub repo type: "model", "dataset" or "space"
    source: str
    detail: str = ""    # file count and size, the dataset view, the Space's references
    problem: str = ""   # why it cannot be pushed from here (reported as a failure; not fatal to the rest)
    view: str | None = None    # a dataset's view (its Hub config name); None: the dataset's only one
    default_view: bool = False

    def line(self) -> str:
        note = f" ({self.detail})" if self.detail else ""
        bad = f"  [cannot: {self.problem}]" if self.problem else ""
        return f"{self.kind:<7} {self.source} -> {self.repo_id} ({self.repo_type} repo){note}{bad}"


def check_owner(owner: str) -> str:
    """`owner` if it can start a Hub repo id (a user or organisation name), else ConfigError."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if not owner or "/" in owner:
            raise HFValidationError("an owner is one name, without '/'")
        validate_repo_id(f"{owner}/{SPACE_NAME}")
    except HFValidationError as exc:
        raise ConfigError(f"--owner {owner!r} is not a Hub user or organisation name ({exc})") from None
    return owner


def model_kind(folder: Path) -> str:
    """"segmenter" when config.json names an smp model class, else "classifier"."""
    config = json.loads((folder / "config.json").read_text())
    return "segmenter" if "_model_class" in config else "classifier"


def _size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def plan_models(owner: str, models_dir: Path = MODELS_DIR) -> list[PublishItem]:
    items = []
    for name in SHIPPED_MODELS:
        folder = models_dir / name
        if not (folder / "config.json").is_file():
            items.append(PublishItem("model", name, f"{owner}/{name}", "model", str(folder),
                                     problem="no model folder (config.json) here"))
            continue
        count, size = _size(folder)
        items.append(PublishItem("model", name, f"{owner}/{name}", "model", str(folder),
                                 f"{model_kind(folder)}, {count} files, {_human(size)}"))
    return items


def plan_datasets(owner: str, data_home: str | Path | None = None) -> list[PublishItem]:
    """One item per dataset view: BRISC 2025's classification and segmentation views go to one repo as
    two configs (`load_dataset(repo, "segmentation")`), the first the default."""
    from .data.cards import PUBLISHED_VIEWS
    from .data.registry import dataset_names, get_dataset

    items = []
    for name in dataset_names():
        record = get_dataset(name)
        problem = ""
        try:
            source = str(record.find_root(record.root_in(data_home)))
        except TumorLensError as exc:
            source, problem = str(record.root_in(data_home) or f"${record.root_env} / data home"), str(exc)
        views = PUBLISHED_VIEWS.get(name, (None,))
        for i, view in enumerate(views):
            config = f"config {view!r}{' (the default)' if i == 0 else ''}" if view else "default config"
            items.append(PublishItem("dataset", name, f"{owner}/{name}", "dataset", source,
                                     f"{record.title}, licence {record.licence}; {config}, built in a temp folder",
                                     problem, view=view, default_view=i == 0 and view is not None))
    return items


def space_references(owner: str) -> dict:
    """What the Space built for `owner` loads: its models by OWNER's repo ids, its examples dataset."""
    from .registry import DEFAULT_SEGMENTER, available_segmenters

    others = {name: f"{owner}/{Path(folder).name}" for name, folder in available_segmenters().items()
              if name != DEFAULT_SEGMENTER}
    return {"seg_model": f"{owner}/{DEFAULT_MODELS['segmenter'][1]}",
            "cls_model": f"{owner}/{DEFAULT_MODELS['classifier'][1]}",
            "segmenters": others, "examples_dataset": f"{owner}/{EXAMPLES_DATASET}"}


def plan_space(owner: str) -> list[PublishItem]:
    refs = space_references(owner)
    models = ", ".join([refs["seg_model"], refs["cls_model"], *refs["segmenters"].values()])
    return [PublishItem("space", SPACE_NAME, f"{owner}/{SPACE_NAME}", "space", "space/ + tumorlens/ (built)",
                        f"loads {models}; examples from {refs['examples_dataset']}")]


def plan(owner: str = HUB_OWNER, *, models: bool = True, datasets: bool = True, space: bool = True,
         data_home: str | Path | None = None) -> list[PublishItem]:
    """What `publish` would push, in order: models, datasets, Space. Reads nothing remote."""
    check_owner(owner)
    items: list[PublishItem] = []
    if models:
        items += plan_models(owner)
    if datasets:
        items += plan_datasets(owner, data_home)
    if space:
        items += plan_space(owner)
    return items


# -- the pushes ------------------------------------------------------------------------------
def push_model(item: PublishItem, owner: str, *, private: bool = False, token: str | None = None) -> str:
    """Copy the folder to a temporary one, render its card for item.repo_id there, push the copy."""
    from .hub import push_folder, write_card

    folder = Path(item.source)
    with tempfile.TemporaryDirectory(prefix="tumorlens-publish-") as tmp:
        copy = Path(tmp) / folder.name
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns(".*", "__pycache__"))
        write_card(copy, model_kind(copy), repo_id=item.repo_id, owner=owner)
        return push_folder(copy, item.repo_id, private=private, token=token, source=folder,
                           commit_message="Publish TumorLens model")


def push_dataset(item: PublishItem, *, private: bool = False, check: str = "full") -> str:
    """Build the dataset (its view) into a temporary folder and push it, as that view's config, with its card."""
    from .data.__main__ import build
    from .hub import hub_error, is_hub_failure

    with tempfile.TemporaryDirectory(prefix="tumorlens-publish-") as tmp:
        try:
            dsd = build(item.name, item.source, Path(tmp) / item.name, task=item.view, fmt="parquet", check=check,
                        push_to_hub=item.repo_id, private=private, config_name=item.view or "default",
                        set_default=True if item.default_view else None)
        except Exception as exc:  # noqa: BLE001 - a Hub failure becomes one line; the rest is re-raised
            if not is_hub_failure(exc):
                raise
            raise hub_error(f"could not push dataset {item.name}", exc, repo_id=item.repo_id) from exc
    return ", ".join(f"{split} {len(rows)}" for split, rows in dsd.items())


def push_space(item: PublishItem, owner: str, *, private: bool = False, token: str | None = None) -> str:
    """Build the Space folder (models referenced by OWNER's repo ids) in a temporary folder, push it."""
    from .hub import push_folder
    from .space_bundle import build_space

    refs = space_references(owner)
    with tempfile.TemporaryDirectory(prefix="tumorlens-publish-") as tmp:
        out = build_space(Path(tmp) / "space", seg_model=refs["seg_model"], cls_model=refs["cls_model"],
                          segmenters=refs["segmenters"], examples_dataset=refs["examples_dataset"])
        return push_folder(out, item.repo_id, private=private, token=token, repo_type="space",
                           space_sdk=SPACE_SDK, commit_message="Publish the TumorLens Space",
                           source="the Space's sources (space/, tumorlens/)")


def push_item(item: PublishItem, owner: str, *, private: bool = False, token: str | None = None,
              check: str = "full") -> str:
    if item.problem:
        raise ConfigError(item.problem)
    if item.kind == "model":
        return push_model(item, owner, private=private, token=token)
    if item.kind == "dataset":
        return push_dataset(item, private=private, check=check)
    return push_space(item, owner, private=private, token=token)


def _failure(exc: Exception) -> str:
    if isinstance(exc, TumorLensError):
        return " ".join(str(exc).split())
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:400]


def publish(items: list[PublishItem], owner: str, *, private: bool = False, token: str | None = None,
            check: str = "full", out=None) -> list[PublishItem]:
    """Check access once (HubError when it fails: nothing is sent), then push each item, one line each
    (to `out`, default stdout); returns the items that failed."""
    from .hub import check_push_access

    out = out or sys.stdout
    user = check_push_access(items[0].repo_id if items else None, token=token)
    print(f"pushing {len(items)} item(s) as {user}", file=out)
    failed = []
    for item in items:
        try:
            result = push_item(item, owner, private=private, token=token, check=check)
        except Exception as exc:  # noqa: BLE001 - one item failing must not stop the others
            failed.append(item)
            print(f"failed  {item.kind} {item.name} -> {item.repo_id}: {_failure(exc)}", file=out)
            continue
        print(f"pushed  {item.kind} {item.name} -> {item.repo_id}" + (f" ({result})" if result else ""), file=out)
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tumorlens publish", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--owner", default=HUB_OWNER,
                   help=f"Hub user or organisation to publish under (default {HUB_OWNER})")
    p.add_argument("--models", action="store_true", help="the shipped model folders under models/")
    p.add_argument("--datasets", action="store_true", help="the registered datasets, built from their original layout")
    p.add_argument("--space", action="store_true", help="the Space (built from space/ and tumorlens/)")
    p.add_argument("--dry-run", action="store_true", help="print what would go where and exit; nothing is sent")
    p.add_argument("--private", action="store_true", help="create the repos private (repos already there keep theirs)")
    p.add_argument("--data-home", type=Path, default=None,
                   help="the folder holding the datasets (default: $TUMORLENS_<NAME>_ROOT per dataset, else "
                        "$TUMORLENS_DATA, else ../shared/data)")
    p.add_argument("--check", choices=("none", "header", "full"), default="full",
                   help="how hard to check each dataset image before pushing (default: decode every pixel)")
    args = p.parse_args(argv)
    chosen = [k for k in KINDS if getattr(args, k)] or list(KINDS)  # none named: everything
    try:
        items = plan(args.owner, models="models" in chosen, datasets="datasets" in chosen, space="space" in chosen,
                     data_home=args.data_home)
    except TumorLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'dry run: ' if args.dry_run else ''}publish {len(items)} item(s) under {args.owner}:")
    for item in items:
        print(f"  {item.line()}")
    if args.dry_run:
        print("dry run: nothing was sent")
        return 0
    try:
        failed = publish(items, args.owner, private=args.private, check=args.check)
    except TumorLensError as exc:  # the access check: nothing was sent
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if failed:
        print(f"{len(failed)} of {len(items)} failed: {', '.join(i.repo_id for i in failed)}", file=sys.stderr)
        return 1
    print(f"published {len(items)} item(s) under {args.owner}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
