"""Figshare brain tumor dataset (Cheng et al., 2017; doi 10.6084/m9.figshare.1512427).

Two layouts are read:
- the prepared one in ../shared/data/figshare: images/<id>.jpg, masks/<id>.png, label.mat
  (MATLAB v5: label 1 meningioma, 2 glioma, 3 pituitary) and cvind5fold.mat (MATLAB v7.3 /
  HDF5: the author's patient-wise fold 1..5 of each slice);
- the original release: one MATLAB v7.3 file per slice, <id>.mat, holding the struct cjdata
  (image int16, label, PID, tumorBorder, tumorMask), with cvind.mat / cvind5fold.mat beside.
Both load into the same schema; `folds()` yields the author's 5 train/test folds.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

import datasets
import h5py
import numpy as np
import scipy.io
from PIL import Image

from ..errors import DataError
from ._common import TUMOR_CLASS_LABEL, check_images, require_file, resolve_root

NAME = "figshare"
ROOT_ENV = "TUMORLENS_FIGSHARE_ROOT"
LABEL_NAMES = {1: "meningioma", 2: "glioma", 3: "pituitary"}  # label.mat's codes
FOLD_FILES = ("cvind5fold.mat", "cvind.mat")
N_FOLDS = 5

FEATURES = datasets.Features({
    "image": datasets.Image(),
    "mask": datasets.Image(),
    "label": TUMOR_CLASS_LABEL,
    "fold": datasets.Value("int8"),
    "id": datasets.Value("int32"),
    "patient_id": datasets.Value("string"),
    "file_name": datasets.Value("string"),
})


def read_labels(path: Path) -> np.ndarray:
    """label.mat (MATLAB v5) -> int array of 1/2/3, one per slice id (1-based order)."""
    require_file(path, "label file")
    try:
        labels = np.asarray(scipy.io.loadmat(str(path))["label"]).ravel().astype(int)
    except Exception as exc:  # noqa: BLE001 - scipy raises many types for a broken file
        raise DataError(path, f"cannot read label.mat ({exc.__class__.__name__}: {exc})") from exc
    bad = {int(c) for c in np.unique(labels)} - set(LABEL_NAMES)
    if bad:
        raise DataError(path, f"unexpected label codes {sorted(bad)}")
    return labels


def _read_mat_any(path: Path, key: str) -> np.ndarray:
    """One variable of a .mat file, whether v7.3 (HDF5) or older."""
    try:
        if h5py.is_hdf5(str(path)):
            with h5py.File(path, "r") as f:
                return np.asarray(f[key]).T
        return np.asarray(scipy.io.loadmat(str(path))[key])
    except Exception as exc:  # noqa: BLE001
        raise DataError(path, f"cannot read {key!r} from .mat file ({exc.__class__.__name__}: {exc})") from exc


def read_folds(path: Path) -> np.ndarray:
    """cvind5fold.mat -> int array of fold numbers 1..5, one per slice id."""
    require_file(path, "fold file")
    folds = _read_mat_any(path, "cvind").ravel().astype(int)
    if set(np.unique(folds)) - set(range(1, N_FOLDS + 1)):
        raise DataError(path, "fold numbers outside 1..5")
    return folds


def read_cheng_mat(path: str | Path) -> dict:
    """One slice of the original release (MATLAB v7.3 struct `cjdata`) -> dict with
    image (int16 HxW), label (1..3), pid (str), tumor_border (float array), tumor_mask (uint8 0/1).
    MATLAB writes arrays column-major, so each 2-D array is transposed back."""
    path = Path(path)
    require_file(path, ".mat slice")
    try:
        with h5py.File(path, "r") as f:
            cj = f["cjdata"]
            image = np.asarray(cj["image"]).T
            mask = np.asarray(cj["tumorMask"]).T
            pid_codes = np.asarray(cj["PID"]).ravel()
            out = {
                "image": image.astype(np.int16) if image.dtype != np.int16 else image,
                "label": int(np.asarray(cj["label"]).ravel()[0]),
                "pid": "".join(chr(int(c)) for c in pid_codes if int(c) != 0),
                "tumor_border": np.asarray(cj["tumorBorder"]).ravel(),
                "tumor_mask": (mask > 0).astype(np.uint8),
            }
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError/KeyError/... for broken files
        raise DataError(path, f"not a Figshare cjdata .mat v7.3 file ({exc.__class__.__name__}: {exc})") from exc
    if out["label"] not in LABEL_NAMES:
        raise DataError(path, f"unexpected label {out['label']}")
    if out["image"].shape != out["tumor_mask"].shape:
        raise DataError(path, f"image {out['image'].shape} and tumorMask {out['tumor_mask'].shape} differ")
    return out


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _slice_ids(folder: Path, pattern: str) -> set[int]:
    ids = set()
    for p in folder.glob(pattern):
        if not p.stem.isdigit():
            raise DataError(p, "not a Figshare slice file name (<id>.jpg / <id>.png)")
        ids.add(int(p.stem))
    return ids


def _find_fold_file(root: Path) -> Path | None:
    for name in FOLD_FILES:
        if (root / name).is_file():
            return root / name
    return None


def load(root: str | Path | None = None, *, check: str = "header") -> datasets.DatasetDict:
    """The prepared layout as DatasetDict {'train': all 3064 slices}, with the author's `fold`."""
    root = resolve_root(NAME, root, env_var=ROOT_ENV)
    labels = read_labels(root / "label.mat")
    fold_file = _find_fold_file(root)
    if fold_file is None:
        raise DataError(root / FOLD_FILES[0], "fold file not found")
    folds = read_folds(fold_file)
    if len(folds) != len(labels):
        raise DataError(fold_file, f"{len(folds)} folds for {len(labels)} labels")
    image_dir, mask_dir = root / "images", root / "masks"
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise DataError(folder, "Figshare folder not found")
    image_ids, mask_ids = _slice_ids(image_dir, "*.jpg"), _slice_ids(mask_dir, "*.png")
    expected = set(range(1, len(labels) + 1))
    if mask_ids - image_ids:
        raise DataError(mask_dir / f"{min(mask_ids - image_ids)}.png", "mask without its image")
    if expected - image_ids:
        raise DataError(image_dir / f"{min(expected - image_ids)}.jpg", "image file not found")
    if expected - mask_ids:
        raise DataError(mask_dir / f"{min(expected - mask_ids)}.png", "mask not found for image")
    if image_ids - expected:
        raise DataError(image_dir / f"{min(image_ids - expected)}.jpg", "image has no entry in label.mat")
    ids = sorted(expected)
    rows = {
        "image": [str(image_dir / f"{i}.jpg") for i in ids],
        "mask": [str(mask_dir / f"{i}.png") for i in ids],
        "label": [LABEL_NAMES[labels[i - 1]] for i in ids],
        "fold": [int(folds[i - 1]) for i in ids],
        "id": ids,
        "patient_id": [None] * len(ids),  # the prepared copy lost the PIDs; folds are patient-wise
        "file_name": [f"{i}.jpg" for i in ids],
    }
    check_images(map(Path, rows["image"] + rows["mask"]), check, "figshare")
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=FEATURES)})


def load_original(root: str | Path) -> datasets.DatasetDict:
    """The original release: <id>.mat slices (cjdata) plus an optional fold file beside them.
    Images become 16-bit PNGs (lossless), masks 0/255 PNGs."""
    root = resolve_root(NAME, root)
    mats = sorted((p for p in root.glob("*.mat") if p.stem.isdigit()), key=lambda p: int(p.stem))
    if not mats:
        raise DataError(root, "no <id>.mat slices found")
    fold_file = _find_fold_file(root)
    folds = read_folds(fold_file) if fold_file else None
    rows = {k: [] for k in FEATURES}
    for path in mats:
        sl = read_cheng_mat(path)
        i = int(path.stem)
        if folds is not None and i > len(folds):
            raise DataError(path, f"slice id {i} beyond the {len(folds)} entries of {fold_file.name}")
        rows["image"].append({"bytes": _png_bytes(sl["image"].astype(np.int32).clip(0, 65535).astype(np.uint16)),
                              "path": None})
        rows["mask"].append({"bytes": _png_bytes(sl["tumor_mask"] * 255), "path": None})
        rows["label"].append(LABEL_NAMES[sl["label"]])
        rows["fold"].append(int(folds[i - 1]) if folds is not None else 0)
        rows["id"].append(i)
        rows["patient_id"].append(sl["pid"])
        rows["file_name"].append(path.name)
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=FEATURES)})


def folds(dataset: datasets.Dataset) -> Iterator[tuple[int, datasets.Dataset, datasets.Dataset]]:
    """The author's patient-wise cross-validation: (fold k, train = other folds, test = fold k)."""
    fold_col = np.asarray(dataset["fold"])
    if not set(np.unique(fold_col)) <= set(range(1, N_FOLDS + 1)):
        raise ValueError("dataset has no fold assignment (load_original without a cvind file?)")
    for k in range(1, N_FOLDS + 1):
        test_idx = np.flatnonzero(fold_col == k)
        train_idx = np.flatnonzero(fold_col != k)
        yield k, dataset.select(train_idx), dataset.select(test_idx)
