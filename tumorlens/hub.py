"""Model cards rendered from eval.json + training_info.json, and the Hub push/pull.

Templates live in hub_cards/ (Jinja, rendered by huggingface_hub.ModelCard.from_template)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, snapshot_download

from .data.registry import get_dataset
from .models import EVAL_NAME, TRAINING_INFO_NAME

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


def card_data(kind: str, ev: dict, model_name: str) -> ModelCardData:
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
    common = dict(license=record.model_licence, tags=["medical", "mri", "brain-tumor", "tumorlens"],
                  datasets=[dataset], model_name=model_name, eval_results=results or None)
    if kind == "segmenter":
        return ModelCardData(library_name="segmentation-models-pytorch", pipeline_tag="image-segmentation",
                             tags=common.pop("tags") + ["segmentation-models-pytorch", "semantic-segmentation"], **common)
    return ModelCardData(library_name="timm", pipeline_tag="image-classification",
                         tags=common.pop("tags") + ["timm", "image-classification"], **common)


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
    return ModelCard.from_template(
        card_data(kind, ev, folder.name), template_str=template,
        model_id=repo_id or folder.name, repo_or_path=repo_id or f"models/{folder.name}",
        timm_id=f"hf-hub:{repo_id}" if repo_id else f"local-dir:models/{folder.name}", ev=ev, info=info, pre=pre,
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
