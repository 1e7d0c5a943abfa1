"""Which models to load: the models TumorLens ships (under models/, and on the Hub under
HUB_OWNER with the same names), the default per kind, and what a name, folder or Hub repo id
given by a user resolves to. What each model is comes from its own folder (tumorlens.model_record):
every segmenter folder under models/ is available by the name its metadata.json gives it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import TumorLensError
from .model_record import ModelRecord, read_record, renamed
from .paths import MODELS_DIR

log = logging.getLogger("tumorlens.registry")

HUB_OWNER = "tumorlens"  # where the shipped folders are published, under their own names
# The shipped models: each name is its folder under models/ and its repo name on the Hub.
BRISC_SEGMENTER = "tumorlens-unet-mobilenetv2-brisc2025"
LGG_SEGMENTER = "tumorlens-unet-efficientnet-lite2-lgg"
BRISC_CLASSIFIER = "tumorlens-efficientnet-lite0-brisc2025"

DEFAULT_MODELS = {  # kind -> (the variable naming another model, the shipped folder); either may be a Hub repo id
    "segmenter": ("TUMORLENS_SEG_MODEL", BRISC_SEGMENTER),
    "classifier": ("TUMORLENS_CLS_MODEL", BRISC_CLASSIFIER),
}


def hub_repo(folder: str) -> str:
    """The Hub repo id a shipped folder is published under."""
    return f"{HUB_OWNER}/{folder}"


def default_model(kind: str) -> str | None:
    """$TUMORLENS_SEG_MODEL / $TUMORLENS_CLS_MODEL, else the shipped folder under models/ if present."""
    env, folder = DEFAULT_MODELS[kind]
    if os.environ.get(env):
        return os.environ[env]
    path = MODELS_DIR / folder
    return str(path) if (path / "config.json").is_file() else None


DEFAULT_SEGMENTER = "brisc2025"  # the name the BRISC folder's metadata.json gives it


class UnknownModelError(TumorLensError, ValueError):
    """A model named by a name that is neither available here, a folder nor a Hub repo id."""


def _scan_segmenters() -> dict[str, tuple[Path, ModelRecord]]:
    """Name -> (folder, record) of every segmenter folder under MODELS_DIR, the default one first. A
    name its metadata.json repeats (a copied folder) goes by the later folder's own name."""
    if not MODELS_DIR.is_dir():
        return {}
    folders = sorted(p for p in MODELS_DIR.iterdir() if (p / "config.json").is_file())
    folders.sort(key=lambda p: p.name != DEFAULT_MODELS["segmenter"][1])  # stable: the default first
    found: dict[str, tuple[Path, ModelRecord]] = {}
    for folder in folders:
        try:
            record = read_record(folder)
        except (TumorLensError, ValueError, OSError) as exc:  # one bad folder must not hide the others
            log.warning("models: %s is left out: %s", folder, exc)
            continue
        if record.task != "segmentation":
            continue
        name = record.name if record.name not in found else folder.name
        if name in found:
            log.warning("models: %s is left out: the name %r is taken by %s", folder, name, found[name][0])
            continue
        found[name] = (folder, renamed(record, name))
    return found


def available_segmenters() -> dict[str, str]:
    """Name -> folder of each segmenter under models/ here (its record's name), the default first."""
    return {name: str(folder) for name, (folder, _) in _scan_segmenters().items()}


def segmenter_records() -> dict[str, ModelRecord]:
    """Name -> record of each segmenter under models/ here, as `available_segmenters` names them."""
    return {name: record for name, (_, record) in _scan_segmenters().items()}


def shipped_folder(name: str) -> Path:
    """The folder under models/ of the available segmenter `name`."""
    available = available_segmenters()
    if name not in available:
        raise UnknownModelError(f"no segmenter {name!r} under {MODELS_DIR} (there: {', '.join(available) or 'none'})")
    return Path(available[name])


def segmenter_name(location: str | Path | None) -> str | None:
    """The name of `location` when it is an available segmenter's name or folder, else None."""
    if location is None:
        return None
    available = available_segmenters()
    if str(location) in available:
        return str(location)
    path = Path(location).expanduser()
    if path.is_dir():
        for name, folder in available.items():
            if path.resolve() == Path(folder).resolve():
                return name
    return None


def resolve_model(value: str | Path, kind: str = "segmenter") -> str:
    """An available segmenter's name (segmenters only: `available_segmenters()`), a model folder, or
    a Hub repo id (owner/name) -> what `from_pretrained` loads. Names win over folders of the same name."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = str(value).strip()
    available = available_segmenters() if kind == "segmenter" else {}
    names = ", ".join(available)
    if text in available:
        return available[text]
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path)
    what = f"unknown {kind} {text!r}: pass " + (f"one of {names}, " if names else "")
    if text.startswith((".", "/", "~")) or "/" not in text:  # a path that is not there, or a bare word
        raise UnknownModelError(what + "a model folder or a Hub repo id (owner/name)")
    try:
        validate_repo_id(text)
    except HFValidationError as exc:
        raise UnknownModelError(what + f"a model folder or a Hub repo id (owner/name); {exc}") from exc
    return text


__all__ = ["HUB_OWNER", "BRISC_SEGMENTER", "LGG_SEGMENTER", "BRISC_CLASSIFIER", "DEFAULT_MODELS", "MODELS_DIR",
           "hub_repo", "default_model", "DEFAULT_SEGMENTER", "UnknownModelError", "shipped_folder",
           "available_segmenters", "segmenter_records", "segmenter_name", "resolve_model"]
