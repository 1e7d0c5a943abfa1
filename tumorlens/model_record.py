"""One record per model, stored in its folder: what the model is, what its inputs hold and what it
is for (metadata.json, the idea of a MONAI bundle's configs/metadata.json), with the input contract
and the post-processing its folder already states (preprocessor_config.json, inference_config.json).

The app and the predict CLI ask a model's record, not a table in code, so a segmenter folder or Hub
repo from elsewhere works in both. A folder without metadata.json still gets a record: named after
the folder (or repo), inputs unknown, and so never given TumorLens's tumor-type classifier, whose
training slices (BRISC 2025 T1c) say nothing about unknown inputs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .errors import DataError

METADATA_NAME = "metadata.json"
SCHEMA = "tumorlens.model/1"
TASKS = ("segmentation", "classification")
UNKNOWN_CHANNEL = "unknown"
RESEARCH_USE = ("Research use only: not a medical device; its output is not a diagnosis and must not "
                "guide clinical decisions.")
# the identity fields metadata.json holds; the rest of a record is read from the folder's other files
IDENTITY_FIELDS = ("name", "task", "title", "short", "modality", "channels", "tumor_types", "intended_use",
                   "trained_on")
# stated where neither file says: a segmenter always averages with its mirror image (Segmenter(tta=True))
DEFAULT_TTA = {"segmentation": True, "classification": False}


@dataclass(frozen=True)
class ModelRecord:
    """What a model is (from metadata.json) and how it is fed and cleaned up (from its other files)."""

    name: str                           # short handle in menus, the CLI and the API ("brisc2025", "lgg")
    task: str                           # of TASKS; "unknown" where a folder states nothing loadable
    title: str                          # the app's model menu label
    short: str                          # how notes and example labels name it ("BRISC 2025")
    modality: str = "MRI"
    channels: tuple[str, ...] = ()      # what each input channel holds
    tumor_types: bool = False           # the BRISC tumor-type classifier (T1c slices) applies to its inputs
    intended_use: str = RESEARCH_USE
    trained_on: str | None = None       # a TumorLens dataset name, if known
    # read from preprocessor_config.json and inference_config.json at load time, never stored twice
    input_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize_mode: str | None = None
    threshold: float | None = None
    min_component_fraction: float | None = None
    tta_hflip: bool | None = None
    has_metadata: bool = field(default=False, compare=False)  # False: a fallback record (no metadata.json)

    def identity(self) -> dict:
        """What metadata.json holds, with its schema key."""
        out = {"schema": SCHEMA}
        out.update({key: getattr(self, key) for key in IDENTITY_FIELDS})
        out["channels"] = list(self.channels)
        return out

    def as_dict(self) -> dict:
        out = asdict(self)
        out["channels"] = list(self.channels)
        return out

    def describe(self) -> str:
        """One line for a log or a help text."""
        same = len(set(self.channels)) == 1 and len(self.channels) > 1
        inputs = f"{self.channels[0]} x{len(self.channels)}" if same else ", ".join(self.channels) or "unknown"
        size = f"{self.input_size} px {self.resize_mode}" if self.input_size else "input size unknown"
        kinds = "tumor types apply" if self.tumor_types else "no tumor types"
        return f"{self.name}: {self.title} ({self.task}, {self.modality}; channels: {inputs}; {size}; {kinds})"


class ModelRecordError(DataError):
    """A metadata.json that cannot be read as a model record."""


def _read_json(name_or_path: str | Path, filename: str) -> dict | None:
    """One JSON file of a model folder or Hub repo; None where it has none."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            return None
    else:
        from .models import fetch_file  # Hub repo ids only: keeps torch out of a plain folder scan
        path = fetch_file(name_or_path, filename, required=False)
        if path is None:
            return None
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelRecordError(path, f"{filename} is not valid JSON ({exc})") from exc


def _basename(name_or_path: str | Path) -> str:
    return Path(str(name_or_path).rstrip("/")).expanduser().name or str(name_or_path)


def unknown_record(name: str, *, task: str = "segmentation", n_channels: int = 3) -> ModelRecord:
    """A model that states nothing about itself: inputs unknown, so no tumor types."""
    return ModelRecord(name=name, task=task, title=name, short=name, modality=UNKNOWN_CHANNEL,
                       channels=(UNKNOWN_CHANNEL,) * n_channels, tumor_types=False)


def _fallback_identity(name: str, config: dict | None) -> dict:
    """Without metadata.json: task and channel count from config.json, nothing else claimed."""
    config = config or {}
    if "_model_class" in config:  # smp's layout
        task, channels = "segmentation", config.get("in_channels", 3)
    elif "architecture" in config:  # timm's layout
        task = "classification"
        channels = config.get("model_args", {}).get("in_chans") or config.get("pretrained_cfg", {}).get(
            "input_size", [3])[0]
    else:  # neither: not a model TumorLens can load, so no menu offers it
        task, channels = UNKNOWN_CHANNEL, 3
    record = unknown_record(name, task=task, n_channels=int(channels))
    return {key: getattr(record, key) for key in IDENTITY_FIELDS}


def _identity_from(metadata: dict, where: str | Path) -> dict:
    known = {key: metadata[key] for key in IDENTITY_FIELDS if key in metadata}
    missing = [key for key in ("name", "task", "title") if not known.get(key)]
    if missing:
        raise ModelRecordError(where, f"{METADATA_NAME} lacks {', '.join(missing)}")
    if known["task"] not in TASKS:
        raise ModelRecordError(where, f"{METADATA_NAME}: unknown task {known['task']!r} (one of {', '.join(TASKS)})")
    known.setdefault("short", known["title"])
    known["channels"] = tuple(known.get("channels", ()))
    known["tumor_types"] = bool(known.get("tumor_types", False))
    return known


def read_record(name_or_path: str | Path) -> ModelRecord:
    """The record of a model folder or Hub repo id (the Hub cache first; HF_HUB_OFFLINE honoured).
    Without metadata.json: the fallback record (named after the folder or repo, tumor_types False)."""
    metadata = _read_json(name_or_path, METADATA_NAME)
    if metadata is None:
        identity = _fallback_identity(_basename(name_or_path), _read_json(name_or_path, "config.json"))
    else:
        identity = _identity_from(metadata, name_or_path)
    from .postprocess import read_inference_config
    from .preprocess import PREPROCESSOR_CONFIG_NAME
    pre = _read_json(name_or_path, PREPROCESSOR_CONFIG_NAME) or {}
    tuned = read_inference_config(name_or_path) or {}
    return ModelRecord(
        **identity,
        input_size=pre.get("input_size"),
        mean=tuple(pre["mean"]) if "mean" in pre else None,
        std=tuple(pre["std"]) if "std" in pre else None,
        resize_mode=pre.get("resize_mode"),
        threshold=tuned.get("threshold"),
        min_component_fraction=tuned.get("min_component_fraction"),
        tta_hflip=bool(tuned.get("tta_hflip", DEFAULT_TTA.get(identity["task"], False))),
        has_metadata=metadata is not None)


def write_record(folder: str | Path, record: ModelRecord) -> Path:
    """metadata.json in `folder`: the record's identity fields only (the rest stays in its own files)."""
    if record.task not in TASKS:
        raise ModelRecordError(folder, f"unknown task {record.task!r} (one of {', '.join(TASKS)})")
    path = Path(folder) / METADATA_NAME
    path.write_text(json.dumps(record.identity(), indent=2) + "\n")
    return path


def renamed(record: ModelRecord, name: str) -> ModelRecord:
    """The same record under another handle (a second folder whose metadata.json repeats a name)."""
    return replace(record, name=name)


__all__ = ["METADATA_NAME", "SCHEMA", "ModelRecord", "ModelRecordError", "read_record", "write_record", "renamed",
           "unknown_record"]
