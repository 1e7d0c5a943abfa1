"""What the per-dataset modules share: where the data lives, the class names, file checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import datasets
from PIL import Image
from tqdm.auto import tqdm

from ..errors import DataError
from ..preprocess import decode_image, open_image

# One label space for the whole project (BRISC's, alphabetical); Figshare maps into it.
TUMOR_CLASSES = ("glioma", "meningioma", "no_tumor", "pituitary")
TUMOR_CLASS_LABEL = datasets.ClassLabel(names=list(TUMOR_CLASSES))
DATA_ENV = "TUMORLENS_DATA"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def data_home() -> Path:
    """The folder holding brisc2025/, figshare/ and lgg/: $TUMORLENS_DATA, else ../shared/data
    beside the project (or beside the current directory)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    for base in (_PROJECT_ROOT, Path.cwd()):
        candidate = (base / ".." / "shared" / "data").resolve()
        if candidate.is_dir():
            return candidate
    return (_PROJECT_ROOT / ".." / "shared" / "data").resolve()


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


def follow_link(path: Path) -> Path:
    """A symbolic link, or a small text file holding a relative link target (how git checks
    symlinks out where it cannot make them), -> the file it points to."""
    path = Path(path)
    if path.is_symlink():
        return path.resolve()
    try:
        if path.is_file() and path.stat().st_size < 512:
            target = path.read_bytes().decode("utf-8").strip()
            if target and "\n" not in target and not target.startswith("\x89"):
                candidate = (path.parent / target).resolve()
                if candidate.is_file() and candidate != path.resolve():
                    return candidate
    except (UnicodeDecodeError, OSError, ValueError):
        pass
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
    "check_images", "follow_link", "open_image",
]
