"""Example files for the app: a few CC BY 4.0 slices committed in space/examples/, else real test
slices found at start-up.

- `committed_examples()`: the slices committed in space/examples/ (BRISC 2025 test, Figshare), each with
  its class and dataset, as that folder's README.md lists them (it also gives their sources and licence).
- `other_committed_examples()`: the committed slices that are not BRISC 2025 (the Figshare ones), which
  the Space shows beside `example_paths()`'s.
- `example_paths(data_root, dataset)`: one BRISC 2025 test slice per class (no_tumor is the healthy
  one), from a Hub dataset (`dataset`, else $TUMORLENS_EXAMPLES_DATASET unless `data_root` is given),
  else the committed ones, else the dataset location (`examples_from_hub`, `examples_from_root`).
- `lgg_example_paths(data_root)`: LGG test slices (3 channels), for the LGG model; never committed
  (CC BY-NC-SA 4.0), always read from the dataset location.
- `example_label(path, model)`: the label the page shows for an example.

When a source is unreachable there are no examples, and the log says why."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets
from huggingface_hub import HfApi, hf_hub_download

from .data import TUMOR_CLASSES, brisc2025, lgg
from .data.registry import get_dataset
from .errors import TumorLensError
from .paths import PROJECT_ROOT
from .registry import segmenter_records
from .preprocess import IMAGE_SUFFIXES, decode_mask

log = logging.getLogger("tumorlens.examples")

EXAMPLES_DATASET_ENV = "TUMORLENS_EXAMPLES_DATASET"  # a Hub dataset id; the Space bundle reads it too
EXAMPLE_LABELS = {"glioma": "glioma", "meningioma": "meningioma", "no_tumor": "healthy (no tumor)",
                  "pituitary": "pituitary"}
LGG_EXAMPLE_PATIENTS = 3   # LGG examples: the largest FLAIR abnormality of this many test patients
# the committed examples: space/examples in a clone; examples/ beside the package in a Space folder
# (tumorlens.space_bundle copies them there)
EXAMPLES_FOLDERS = (PROJECT_ROOT / "space" / "examples", PROJECT_ROOT / "examples")
EXAMPLES_README = "README.md"
# a README table row: | `file` | class | dataset title (`registry name`) | ...
_ROW_RE = re.compile(r"^\|\s*`(?P<file>[^`/]+)`\s*\|\s*(?P<label>\w+)\s*\|[^|]*\(`(?P<dataset>\w+)`\)")


@dataclass(frozen=True)
class CommittedExample:
    """One committed example slice: where it is, the class it shows, the dataset it comes from."""

    path: str
    label: str      # one of TUMOR_CLASSES
    dataset: str    # a tumorlens.data.registry name: brisc2025, figshare


def examples_folder() -> Path | None:
    """The folder of the committed examples (one with its README.md), or None."""
    return next((f for f in EXAMPLES_FOLDERS if (f / EXAMPLES_README).is_file()), None)


def committed_examples(folder: str | Path | None = None) -> list[CommittedExample]:
    """The committed example slices in README order, as `folder`'s README.md (default: `examples_folder()`)
    lists them. A listed file that is missing, or a file that is not listed (its licence unstated), is
    left out with a log line."""
    folder = Path(folder) if folder is not None else examples_folder()
    if folder is None or not (folder / EXAMPLES_README).is_file():
        return []
    out = []
    for line in (folder / EXAMPLES_README).read_text(encoding="utf-8").splitlines():
        m = _ROW_RE.match(line.strip())
        if not m:
            continue
        path = folder / m["file"]
        problem = ("missing" if not path.is_file() else
                   f"its class {m['label']!r} is unknown" if m["label"] not in TUMOR_CLASSES else None)
        if problem:
            log.warning("examples: %s is listed in %s but %s; left out", m["file"], EXAMPLES_README, problem)
            continue
        out.append(CommittedExample(str(path), m["label"], m["dataset"]))
    listed = {Path(e.path).name for e in out}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.name not in listed:
            log.warning("examples: %s is not listed in %s (no stated source or licence); left out", path.name,
                        EXAMPLES_README)
    return out


def committed_brisc_examples(folder: str | Path | None = None) -> list[str]:
    """The first committed BRISC 2025 slice of each class, in TUMOR_CLASSES order."""
    picked: dict[str, str] = {}
    for example in committed_examples(folder):
        if example.dataset == brisc2025.NAME:
            picked.setdefault(example.label, example.path)
    return [picked[c] for c in TUMOR_CLASSES if c in picked]


def other_committed_examples(folder: str | Path | None = None) -> list[str]:
    """The committed slices of datasets other than BRISC 2025 (Figshare), in README order."""
    return [e.path for e in committed_examples(folder) if e.dataset != brisc2025.NAME]


def example_paths(data_root=None, dataset: str | None = None) -> list[str]:
    """One real BRISC 2025 test slice per class (no_tumor is the healthy one), read at start-up.

    From the Hub dataset `dataset` (else $TUMORLENS_EXAMPLES_DATASET, unless `data_root` is given);
    else, without `data_root`, the committed slices (`committed_examples`); else from the dataset
    location (`data_root`, else the usual root: ../shared/data here). When the source is unreachable
    the app has no examples and says so in the log."""
    if dataset is None and data_root is None:
        dataset = os.environ.get(EXAMPLES_DATASET_ENV) or None
    if dataset:
        return examples_from_hub(dataset)
    if data_root is None:
        committed = committed_brisc_examples()
        if committed:
            return committed
    return examples_from_root(data_root)


def examples_from_root(data_root=None) -> list[str]:
    try:
        test = brisc2025.load_classification(data_root, check="none")["test"]
    except TumorLensError as exc:
        log.warning("examples: BRISC 2025 not found (%s); the app starts without examples", exc)
        return []
    raw = test.cast_column("image", datasets.Image(decode=False))
    picked = {}
    for image, label in zip(raw["image"], test["label"]):
        picked.setdefault(TUMOR_CLASSES[label], image["path"])
    return [picked[c] for c in TUMOR_CLASSES if c in picked]


def pick_example_files(files) -> list[str]:
    """From a dataset repo's file list in the BRISC layout (.../<split>/<class>/<image>), the first
    image of each class, test split first."""
    best: dict[str, tuple] = {}
    for f in files:
        parts = f.split("/")
        if len(parts) < 2 or parts[-2] not in TUMOR_CLASSES or not f.lower().endswith(IMAGE_SUFFIXES):
            continue
        key = (0 if "test" in parts[:-2] else 1, f)
        if parts[-2] not in best or key < best[parts[-2]]:
            best[parts[-2]] = key
    return [best[c][1] for c in TUMOR_CLASSES if c in best]


def examples_from_hub(repo_id: str, *, max_rows: int = 5000) -> list[str]:
    """Examples from a Hub dataset: the BRISC folder layout (files downloaded to the Hub cache) or
    a packaged dataset with `image` and `label` columns (a few rows streamed, saved to the temp dir)."""
    try:
        picked = pick_example_files(HfApi().list_repo_files(repo_id, repo_type="dataset"))
        if picked:
            paths = [hf_hub_download(repo_id, f, repo_type="dataset") for f in picked]
        else:
            paths = _examples_from_packaged(repo_id, max_rows)
    except Exception as exc:  # noqa: BLE001 - offline, missing repo, odd layout: the app runs on
        log.warning("examples: cannot read the Hub dataset %s (%s: %s); the app starts without examples",
                    repo_id, exc.__class__.__name__, exc)
        return []
    if not paths:
        log.warning("examples: no class folders or labelled images found in %s; no examples", repo_id)
    return paths


def _examples_from_packaged(repo_id: str, max_rows: int) -> list[str]:
    rows = datasets.load_dataset(repo_id, split="test", streaming=True)
    names = rows.features["label"].names
    out = Path(tempfile.gettempdir()) / "tumorlens-examples" / repo_id.replace("/", "--")
    out.mkdir(parents=True, exist_ok=True)
    found: dict[str, str] = {}
    for i, row in enumerate(rows):
        name = names[row["label"]]
        if name in TUMOR_CLASSES and name not in found:
            path = out / f"{name}.png"
            row["image"].save(path)
            found[name] = str(path)
        if len(found) == len(TUMOR_CLASSES) or i >= max_rows:
            break
    return [found[c] for c in TUMOR_CLASSES if c in found]


def lgg_example_paths(data_root=None, patients: int = LGG_EXAMPLE_PATIENTS) -> list[str]:
    """LGG examples (3-channel slices, for the LGG model): the slice with the largest FLAIR
    abnormality of each of the first `patients` test patients, from the dataset location
    (`data_root`, else $TUMORLENS_LGG_ROOT, else ../shared/data/lgg). None come from the Hub."""
    try:
        test = lgg.load(data_root, check="none")["test"]
        raw = test.cast_column("image", datasets.Image(decode=False)).cast_column("mask", datasets.Image(decode=False))
        best: dict[str, tuple[int, str]] = {}
        for pid, image, mask in zip(raw["patient_id"], raw["image"], raw["mask"]):
            if pid not in best and len(best) == patients:
                break  # rows come patient by patient
            area = int(decode_mask(mask["path"]).sum())
            if area > best.get(pid, (0, ""))[0]:
                best[pid] = (area, image["path"])
    except (TumorLensError, OSError) as exc:
        log.warning("examples: LGG kaggle_3m not found (%s); the LGG model has no examples", exc)
        return []
    return [path for _, path in best.values()]


def example_label(path: str, model: str | None = None, *, short: str | None = None) -> str:
    """A committed example or a BRISC class folder names its class (a committed slice of another dataset
    says which); another model's example says which model and slice: `short`, else the short name in
    the record of the available segmenter `model`."""
    p = Path(path)
    committed = next((e for e in committed_examples() if Path(e.path).resolve() == p.resolve()), None)
    if committed is not None:
        label = EXAMPLE_LABELS[committed.label]
        return label if committed.dataset == brisc2025.NAME else f"{label} ({get_dataset(committed.dataset).short})"
    for name in (p.parent.name, p.stem):
        if name in EXAMPLE_LABELS:
            return EXAMPLE_LABELS[name]
    if short is None and model is not None:
        records = segmenter_records()
        short = records[model].short if model in records else None
    if short:
        case, _, number = p.stem.rpartition("_")  # kaggle_3m: <case>_<slice>
        where = f"{case}, slice {number}" if case and number.isdigit() else p.stem
        return f"{short}: {where}"
    return p.name
