"""Example files for the app: real test slices found at start-up, never copied into the project.

- `example_paths(data_root, dataset)`: one BRISC 2025 test slice per class (no_tumor is the healthy
  one), from a Hub dataset (`dataset`, else $TUMORLENS_EXAMPLES_DATASET unless `data_root` is given)
  or the dataset location (`examples_from_hub`, `examples_from_root`).
- `lgg_example_paths(data_root)`: LGG test slices (3 channels), for the LGG model.
- `example_label(path, model)`: the label the page shows for an example.

When a source is unreachable there are no examples, and the log says why."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import datasets
from huggingface_hub import HfApi, hf_hub_download

from .data import TUMOR_CLASSES, brisc2025, lgg
from .errors import TumorLensError
from .registry import segmenter_records
from .preprocess import IMAGE_SUFFIXES, decode_mask

log = logging.getLogger("tumorlens.examples")

EXAMPLES_DATASET_ENV = "TUMORLENS_EXAMPLES_DATASET"  # a Hub dataset id; the Space bundle reads it too
EXAMPLE_LABELS = {"glioma": "glioma", "meningioma": "meningioma", "no_tumor": "healthy (no tumor)",
                  "pituitary": "pituitary"}
LGG_EXAMPLE_PATIENTS = 3   # LGG examples: the largest FLAIR abnormality of this many test patients


def example_paths(data_root=None, dataset: str | None = None) -> list[str]:
    """One real BRISC 2025 test slice per class (no_tumor is the healthy one), read at start-up.

    From the Hub dataset `dataset` (else $TUMORLENS_EXAMPLES_DATASET, unless `data_root` is given),
    else from the dataset location (`data_root`, else the usual root: ../shared/data here).
    Nothing is copied into the project; when the source is unreachable the app has no examples
    and says so in the log."""
    if dataset is None and data_root is None:
        dataset = os.environ.get(EXAMPLES_DATASET_ENV) or None
    if dataset:
        return examples_from_hub(dataset)
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
    """A BRISC class folder names its class; another model's example says which model and slice:
    `short`, else the short name in the record of the available segmenter `model`."""
    p = Path(path)
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
