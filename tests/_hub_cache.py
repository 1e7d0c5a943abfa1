"""Model folders laid out the way huggingface_hub caches downloaded repos, so loaders run by repo id
under HF_HUB_OFFLINE=1 exactly as they would after a download."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def as_hub_cache(folder: Path, cache: Path, repo_id: str) -> None:
    """Copy `folder` into `cache` as the `main` snapshot of model repo `repo_id`."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / COMMIT, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)


def offline_env(cache: Path, home: Path) -> dict[str, str]:
    """The environment of a process that can reach only `cache`: no network, its own HF_HOME
    (where transformers copies a repo's code)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(home),
            "HF_HUB_DISABLE_TELEMETRY": "1"}
