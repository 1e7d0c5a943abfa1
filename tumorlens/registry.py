"""Which models to load: the models TumorLens ships (under models/, and on the Hub under
HUB_OWNER with the same names), the default per kind, and what a name, folder or Hub repo id
given by a user resolves to."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import TumorLensError
from .paths import MODELS_DIR

HUB_OWNER = "tumorlens"  # where the shipped folders are published, under their own names
# The shipped models: each name is its folder under models/ and its repo name on the Hub.
BRISC_SEGMENTER = "tumorlens-unet-mobilenetv2-brisc2025"
LGG_SEGMENTER = "tumorlens-unet-mobilenetv2-lgg"
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


@dataclass(frozen=True)
class SegmenterEntry:
    """A segmenter TumorLens ships, known by a short name in the app and the predict CLI."""

    folder: str         # under models/, and the model's name on the Hub
    label: str          # what the app's model menu shows
    short: str          # how example labels and notes name it
    tumor_types: bool   # True where the BRISC tumor-type classifier means something on its inputs

    @property
    def hub_repo(self) -> str:
        return hub_repo(self.folder)


SEGMENTERS = {
    "brisc2025": SegmenterEntry(BRISC_SEGMENTER, "BRISC 2025 - T1 contrast-enhanced, 1 channel", "BRISC 2025", True),
    # kaggle_3m slices carry three sequences as RGB; its masks mark FLAIR abnormality, and it has
    # no tumor types, so the BRISC classifier (trained on T1c slices) does not apply
    "lgg": SegmenterEntry(LGG_SEGMENTER,
                          "LGG - FLAIR abnormality, 3-channel pre-contrast/FLAIR/post-contrast", "LGG", False),
}
DEFAULT_SEGMENTER = "brisc2025"


class UnknownModelError(TumorLensError, ValueError):
    """A model named by a name that is neither shipped, a folder nor a Hub repo id."""


def shipped_folder(name: str) -> Path:
    return MODELS_DIR / SEGMENTERS[name].folder


def available_segmenters() -> dict[str, str]:
    """Name -> folder of each registry segmenter shipped under models/ here, the default first."""
    return {name: str(shipped_folder(name)) for name in SEGMENTERS
            if (shipped_folder(name) / "config.json").is_file()}


def segmenter_name(location: str | Path | None) -> str | None:
    """The registry name of `location` when it is a registry name or a shipped folder, else None."""
    if location is None:
        return None
    if str(location) in SEGMENTERS:
        return str(location)
    path = Path(location).expanduser()
    if path.is_dir():
        for name in SEGMENTERS:
            if shipped_folder(name).is_dir() and path.resolve() == shipped_folder(name).resolve():
                return name
    return None


def resolve_model(value: str | Path, kind: str = "segmenter") -> str:
    """A registry name (segmenters only: brisc2025, lgg), a model folder, or a Hub repo id
    (owner/name) -> what `from_pretrained` loads. Names win over folders of the same name."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = str(value).strip()
    names = ", ".join(SEGMENTERS)
    if kind == "segmenter" and text in SEGMENTERS:
        folder = shipped_folder(text)
        if not (folder / "config.json").is_file():
            shipped = ", ".join(available_segmenters()) or "none"
            raise UnknownModelError(f"segmenter {text!r} is not shipped here: {folder} has no config.json "
                                    f"(shipped: {shipped}; or pass a model folder or a Hub repo id)")
        return str(folder)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path)
    what = f"unknown {kind} {text!r}: pass " + (f"one of {names}, " if kind == "segmenter" else "")
    if text.startswith((".", "/", "~")) or "/" not in text:  # a path that is not there, or a bare word
        raise UnknownModelError(what + "a model folder or a Hub repo id (owner/name)")
    try:
        validate_repo_id(text)
    except HFValidationError as exc:
        raise UnknownModelError(what + f"a model folder or a Hub repo id (owner/name); {exc}") from exc
    return text


__all__ = ["HUB_OWNER", "BRISC_SEGMENTER", "LGG_SEGMENTER", "BRISC_CLASSIFIER", "DEFAULT_MODELS", "MODELS_DIR",
           "hub_repo", "default_model", "SegmenterEntry", "SEGMENTERS", "DEFAULT_SEGMENTER", "UnknownModelError",
           "shipped_folder", "available_segmenters", "segmenter_name", "resolve_model"]
