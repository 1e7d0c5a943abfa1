"""LGG MRI Segmentation (Buda et al., 2019; TCGA-LGG via TCIA), the kaggle_3m layout.

    kaggle_3m/TCGA_<inst>_<patient>_<date>/TCGA_<inst>_<patient>_<date>_<slice>.tif|.jpg
                                          .../..._<slice>_mask.tif|.png

Image channels: pre-contrast, FLAIR, post-contrast; masks mark the FLAIR abnormality.
The split is patient-wise, seeded, and recorded in splits/lgg_kaggle_3m.json so that every
machine trains and scores on the same patients. Never split by slice: neighbouring slices
of one patient are near copies.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import numpy as np

from ..errors import DataError
from ._common import check_images, resolve_root

NAME = "lgg"
ROOT_ENV = "TUMORLENS_LGG_ROOT"
SPLIT_FILE = Path(__file__).with_name("splits") / "lgg_kaggle_3m.json"
SPLIT_NAMES = ("train", "validation", "test")
SPLIT_SEED = 2019
SPLIT_FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}
IMAGE_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
MASK_SUFFIXES = (".tif", ".tiff", ".png")
_CASE_RE = re.compile(r"^(TCGA_[A-Z0-9]+_[A-Z0-9]+)_(\d{8})$")
_FILE_RE = re.compile(r"^(?P<case>TCGA_[A-Z0-9]+_[A-Z0-9]+_\d{8})_(?P<slice>\d+)(?P<mask>_mask)?$")

FEATURES = datasets.Features({
    "image": datasets.Image(),
    "mask": datasets.Image(),
    "patient_id": datasets.Value("string"),
    "slice": datasets.Value("int16"),
    "file_name": datasets.Value("string"),
})


def _case_root(root: Path) -> Path:
    """Accept either the kaggle_3m folder itself or the folder that holds it."""
    return root / "kaggle_3m" if (root / "kaggle_3m").is_dir() else root


def patient_id(case_folder: str) -> str:
    m = _CASE_RE.match(case_folder)
    if not m:
        raise DataError(case_folder, "not an LGG case folder name (TCGA_<inst>_<patient>_<date>)")
    return m.group(1)


def scan(root: Path) -> list[dict]:
    """Every (image, mask) pair under the case folders, in patient then slice order."""
    cases = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("TCGA_"))
    if not cases:
        raise DataError(root, "no TCGA_* case folders found")
    rows = []
    for case in cases:
        pid = patient_id(case.name)
        images, masks = {}, {}
        for f in case.iterdir():
            m = _FILE_RE.match(f.stem)
            if not m or m["case"] != case.name:
                continue
            if m["mask"] and f.suffix.lower() in MASK_SUFFIXES:
                masks[int(m["slice"])] = f
            elif not m["mask"] and f.suffix.lower() in IMAGE_SUFFIXES:
                images[int(m["slice"])] = f
        for s in sorted(set(masks) - set(images)):
            raise DataError(masks[s], "mask without its image")
        for s in sorted(images):
            if s not in masks:
                raise DataError(case / f"{case.name}_{s}_mask.png", "mask not found for image")
            rows.append({"image": str(images[s]), "mask": str(masks[s]), "patient_id": pid,
                         "slice": s, "file_name": images[s].name})
        if not images:
            raise DataError(case, "case folder holds no slices")
    return rows


def make_patient_split(patients: list[str], seed: int = SPLIT_SEED,
                       fractions: dict = SPLIT_FRACTIONS) -> dict[str, list[str]]:
    """Seeded patient-wise split; the recorded file was made by this function."""
    order = sorted(set(patients))
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    n = len(order)
    n_test = round(n * fractions["test"])
    n_val = round(n * fractions["validation"])
    return {"test": sorted(order[:n_test]), "validation": sorted(order[n_test:n_test + n_val]),
            "train": sorted(order[n_test + n_val:])}


def recorded_split(path: Path = SPLIT_FILE) -> dict[str, list[str]]:
    if not path.is_file():
        raise DataError(path, "recorded LGG split not found")
    data = json.loads(path.read_text())
    return {k: data[k] for k in SPLIT_NAMES}


def load(root: str | Path | None = None, *, check: str = "header",
         split: dict[str, list[str]] | None = None) -> datasets.DatasetDict:
    """DatasetDict {train, validation, test}, split by patient (the recorded split unless given)."""
    root = _case_root(resolve_root(NAME, root, env_var=ROOT_ENV))
    rows = scan(root)
    split = split or recorded_split()
    where = {pid: name for name in SPLIT_NAMES for pid in split.get(name, [])}
    found = {r["patient_id"] for r in rows}
    unknown = sorted(found - set(where))
    if unknown:
        folder = next(Path(r["image"]).parent for r in rows if r["patient_id"] == unknown[0])
        raise DataError(folder, f"{len(unknown)} patient(s) missing from the recorded split")
    missing = sorted(set(where) - found)
    if missing:
        raise DataError(root, f"{len(missing)} patient(s) of the split not found, e.g. {missing[0]}")
    check_images((Path(r[k]) for r in rows for k in ("image", "mask")), check, "lgg")
    out = {}
    for name in SPLIT_NAMES:
        part = [r for r in rows if where[r["patient_id"]] == name]
        cols = {k: [r[k] for r in part] for k in FEATURES}
        out[name] = datasets.Dataset.from_dict(cols, features=FEATURES)
    return datasets.DatasetDict(out)
