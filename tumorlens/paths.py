"""Every location TumorLens reads from or writes to outside its own package, in one module, each
with the environment variable that moves it (the idea of nnU-Net v2's paths.py). Functions, not
constants, where a variable is read: the environment is read at each call, so a caller (or a test)
may set it after import. The ground floor: imports nothing from TumorLens.

    variable           location                          default
    TUMORLENS_DATA     data_home(): the datasets         ../shared/data beside the project (or the cwd)
    TUMORLENS_CACHE    cache_root(): rebuildable files   ~/.cache/tumorlens
                       packs_cache_dir(): training packs  <cache_root>/packs
                       onnx_cache_dir(): ONNX exports     <cache_root>/onnx
    (none)             runs_dir(): runs, benchmark cases  runs/ under the current directory
    (none)             MODELS_DIR: the shipped models     models/ beside the package

Not here yet: the duplicate audit's fingerprint cache ($TUMORLENS_AUDIT_CACHE, else
~/.cache/tumorlens/audit; see tumorlens.audit.default_cache_dir), which does not follow
$TUMORLENS_CACHE. Which model to load ($TUMORLENS_SEG_MODEL, $TUMORLENS_CLS_MODEL) is the model
registry's business (tumorlens.registry); each dataset's own root ($TUMORLENS_<NAME>_ROOT) is its
record's (tumorlens.data.registry, which also says what `root` and `data_home` mean)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = PROJECT_ROOT / "models"  # the shipped model folders, one per registry name
DATA_ENV = "TUMORLENS_DATA"
CACHE_ENV = "TUMORLENS_CACHE"
RUNS_DIR = Path("runs")


def data_home() -> Path:
    """The folder holding brisc2025/, figshare/ and lgg/: $TUMORLENS_DATA, else ../shared/data
    beside the project (or beside the current directory)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    for base in (PROJECT_ROOT, Path.cwd()):
        candidate = (base / ".." / "shared" / "data").resolve()
        if candidate.is_dir():
            return candidate
    return (PROJECT_ROOT / ".." / "shared" / "data").resolve()


def cache_root() -> Path:
    """$TUMORLENS_CACHE, else ~/.cache/tumorlens: files TumorLens rebuilds when they are missing."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "tumorlens"))


def packs_cache_dir() -> Path:
    """Decoded training packs (.npz): $TUMORLENS_CACHE/packs."""
    return cache_root() / "packs"


def onnx_cache_dir() -> Path:
    """ONNX exports of the models, one per weights file and torch version: $TUMORLENS_CACHE/onnx."""
    return cache_root() / "onnx"


def runs_dir(*parts: str) -> Path:
    """runs/ under the current directory (no variable; the CLIs' --run-dir, --run-root and
    --cases-dir move it): training checkpoints, cross-validation runs, benchmark case grids."""
    return RUNS_DIR.joinpath(*parts)
