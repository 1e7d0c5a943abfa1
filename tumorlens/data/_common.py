"""What the per-dataset modules share: where the data lives, the class names, file checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import datasets
from PIL import Image
from tqdm.auto import tqdm

from ..errors import DataError
from ..paths import DATA_ENV, data_home
from ..preprocess import decode_image, open_image

# One label space for the whole project (BRISC's, alphabetical); Figshare maps into it.
TUMOR_CLASSES = ("glioma", "meningioma", "no_tumor", "pituitary")
TUMOR_CLASS_LABEL = datasets.ClassLabel(names=list(TUMOR_CLASSES))


def resolve_root(name: str, root: str | Path | None = None, *, env_var: str | None = None) -> Path:
    """The dataset's root: the explicit `root`, else $TUMORLENS_<NAME>_ROOT, else data_home()/name."""
    if root is None and env_var and os.environ.get(env_var):
        root = os.environ[env_var]
    path = Path(root).expanduser() if root is not None else data_home() / name
    if not path.is_dir():
        raise DataError(path, f"{name} dataset root not found")
    return path


def require_file(path: Path, what: str = "file") -> Path:
    if not path.is_file():
        raise DataError(path, f"{what} not found")
    return path


def check_images(paths: Iterable[Path], level: str, desc: str) -> None:
    """level 'none': trust the files; 'header': open each (catches empty, missing and non-image
    files fast); 'full': decode every pixel (catches truncated files too)."""
    if level == "none":
        return
    if level not in ("header", "full"):
        raise ValueError(f"check must be 'none', 'header' or 'full', not {level!r}")
    paths = list(paths)
    for path in tqdm(paths, desc=f"checking {desc}", disable=level == "header" or len(paths) < 200,
                     unit="img", leave=False):
        if level == "full":
            decode_image(path)
        else:
            require_file(path, "image file")
            if path.stat().st_size == 0:
                raise DataError(path, "image file is empty (0 bytes)")
            try:
                with Image.open(path) as img:
                    img.size  # noqa: B018 - reading the header is the check
            except Exception as exc:  # noqa: BLE001 - any failure to open means a corrupt file
                raise DataError(path, f"not a readable image ({exc.__class__.__name__})") from exc


__all__ = [
    "TUMOR_CLASSES", "TUMOR_CLASS_LABEL", "DATA_ENV", "data_home", "resolve_root", "require_file",
    "check_images", "open_image",
]
