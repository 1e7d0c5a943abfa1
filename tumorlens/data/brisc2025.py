"""BRISC 2025 (Fateh et al., arXiv 2506.14318), read from its original release layout.

    classification_task/{train,test}/{glioma,meningioma,no_tumor,pituitary}/*.jpg
    segmentation_task/{train,test}/images/*.jpg  +  masks/*.png (same stems)

File names carry class and plane: brisc2025_train_00001_gl_ax_t1.jpg.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from ..errors import DataError
from ..preprocess import IMAGE_SUFFIXES
from ._common import TUMOR_CLASS_LABEL, TUMOR_CLASSES, check_images, resolve_root

NAME = "brisc2025"
ROOT_ENV = "TUMORLENS_BRISC2025_ROOT"
SPLITS = ("train", "test")
CLASS_CODES = {"gl": "glioma", "me": "meningioma", "no": "no_tumor", "pi": "pituitary"}
PLANES = {"ax": "axial", "co": "coronal", "sa": "sagittal"}
PLANE_LABEL = datasets.ClassLabel(names=list(PLANES.values()))
_NAME_RE = re.compile(r"^brisc2025_(?P<split>train|test)_(?P<index>\d+)_(?P<cls>[a-z]{2})_(?P<plane>[a-z]{2})_(?P<seq>\w+)$")

CLASSIFICATION_FEATURES = datasets.Features({
    "image": datasets.Image(),
    "label": TUMOR_CLASS_LABEL,
    "plane": PLANE_LABEL,
    "file_name": datasets.Value("string"),
})
SEGMENTATION_FEATURES = datasets.Features({
    "image": datasets.Image(),
    "mask": datasets.Image(),
    "label": TUMOR_CLASS_LABEL,
    "plane": PLANE_LABEL,
    "file_name": datasets.Value("string"),
})


def parse_file_name(name: str) -> dict:
    """'brisc2025_train_00001_gl_ax_t1.jpg' -> {'split', 'index', 'label', 'plane', 'sequence'}."""
    m = _NAME_RE.match(Path(name).stem)
    if not m or m["cls"] not in CLASS_CODES or m["plane"] not in PLANES:
        raise DataError(name, "not a BRISC 2025 file name (brisc2025_<split>_<n>_<class>_<plane>_<seq>)")
    return {"split": m["split"], "index": int(m["index"]), "label": CLASS_CODES[m["cls"]],
            "plane": PLANES[m["plane"]], "sequence": m["seq"]}


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(folder, "BRISC 2025 folder not found")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_classification(root: str | Path | None = None, *, check: str = "header") -> datasets.DatasetDict:
    """classification_task as a DatasetDict {train, test}: image, label, plane, file_name."""
    root = resolve_root(NAME, root, env_var=ROOT_ENV)
    out = {}
    for split in SPLITS:
        rows = {"image": [], "label": [], "plane": [], "file_name": []}
        for cls in TUMOR_CLASSES:
            for path in _images_in(root / "classification_task" / split / cls):
                meta = parse_file_name(path.name)
                if meta["label"] != cls:
                    raise DataError(path, f"file name says {meta['label']} but it sits in {cls}/")
                rows["image"].append(str(path))
                rows["label"].append(cls)
                rows["plane"].append(meta["plane"])
                rows["file_name"].append(path.name)
        check_images(map(Path, rows["image"]), check, f"brisc2025 classification {split}")
        out[split] = datasets.Dataset.from_dict(rows, features=CLASSIFICATION_FEATURES)
    return datasets.DatasetDict(out)


def _empty_mask_png(image_path: Path) -> bytes:
    try:
        with Image.open(image_path) as img:
            w, h = img.size
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(image_path, f"not a readable image ({exc.__class__.__name__})") from exc
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def load_segmentation(root: str | Path | None = None, *, include_no_tumor: bool = False,
                      check: str = "header") -> datasets.DatasetDict:
    """segmentation_task as a DatasetDict {train, test}: image, mask, label, plane, file_name.

    include_no_tumor=True adds the classification_task no_tumor images of the same split with
    all-zero masks, so a segmenter also learns to leave healthy slices empty.
    """
    root = resolve_root(NAME, root, env_var=ROOT_ENV)
    out = {}
    for split in SPLITS:
        rows = {"image": [], "mask": [], "label": [], "plane": [], "file_name": []}
        image_dir = root / "segmentation_task" / split / "images"
        mask_dir = root / "segmentation_task" / split / "masks"
        images = _images_in(image_dir)
        masks = {p.stem: p for p in _images_in(mask_dir)}
        stems = {p.stem for p in images}
        orphans = sorted(set(masks) - stems)
        if orphans:
            raise DataError(masks[orphans[0]], f"mask without its image ({len(orphans)} such masks in {mask_dir})")
        for path in images:
            if path.stem not in masks:
                raise DataError(mask_dir / f"{path.stem}.png", "mask not found for image")
            meta = parse_file_name(path.name)
            rows["image"].append(str(path))
            rows["mask"].append(str(masks[path.stem]))
            rows["label"].append(meta["label"])
            rows["plane"].append(meta["plane"])
            rows["file_name"].append(path.name)
        check_images(map(Path, rows["image"] + rows["mask"]), check, f"brisc2025 segmentation {split}")
        if include_no_tumor:
            healthy = _images_in(root / "classification_task" / split / "no_tumor")
            check_images(healthy, check, f"brisc2025 no_tumor {split}")
            for path in healthy:
                rows["image"].append(str(path))
                rows["mask"].append({"bytes": _empty_mask_png(path), "path": None})
                rows["label"].append("no_tumor")
                rows["plane"].append(parse_file_name(path.name)["plane"])
                rows["file_name"].append(path.name)
        out[split] = datasets.Dataset.from_dict(rows, features=SEGMENTATION_FEATURES)
    return datasets.DatasetDict(out)


def load(root: str | Path | None = None, *, task: str = "classification", check: str = "header",
         include_no_tumor: bool = False) -> datasets.DatasetDict:
    """task: 'classification', 'segmentation', or 'segmentation+no_tumor'."""
    if task == "classification":
        return load_classification(root, check=check)
    if task in ("segmentation", "segmentation+no_tumor"):
        return load_segmentation(root, include_no_tumor=include_no_tumor or task.endswith("no_tumor"), check=check)
    raise ValueError(f"unknown BRISC 2025 task {task!r}")
