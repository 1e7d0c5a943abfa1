"""The release step after training: best checkpoint -> exported Hub-layout folder -> inference settings
tuned on validation -> scored on test -> card -> pushed. It sits above both training and evaluation,
and the re-tune command (`python -m tumorlens.postprocess`) reuses its tuning functions."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .model_record import ModelRecord, write_record
from .models import TRAINING_INFO_NAME
from .packs import patient_ids
from .postprocess import INFERENCE_CONFIG_NAME, choose_calibration, choose_tta, tune_postprocess
from .training.specs import DataSpec, ReleaseSpec
from .data.registry import get_dataset
from .training.splits import train_val_packs, tumor_roi_packs, validation_source


def check_out_folder(out: Path, replace_existing: bool) -> None:
    """Refuse, before any training, to write over a folder that holds something, unless asked to: a
    fine-tune must never destroy the model it started from (or any shipped one)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not replace_existing:
        raise ConfigError(f"--out {out} already holds a model; pass --replace to write over it, "
                          f"or name another folder")


def tune_segmenter(folder: Path, data: DataSpec) -> dict:
    """Threshold and clean-up chosen on the validation split carved from train (never on test)."""
    from .inference import Segmenter
    seg = Segmenter.from_pretrained(folder, runtime="torch")
    val = train_val_packs("segmentation", seg.pre.size, replace(data, extra_train=None)).val
    probs = seg.probabilities(list(val["images"]))
    tuned = tune_postprocess(probs, val["masks"], patients=patient_ids(val))  # LGG: per patient, as Buda et al. 2019
    tuned["tta_hflip"] = seg.tta  # the maps above were averaged with the mirrored view: it is part of the setting
    tuned["chosen_on"] = f"{validation_source(data)} ({len(probs)} slices, seed {data.seed})"
    (folder / INFERENCE_CONFIG_NAME).write_text(json.dumps(tuned, indent=1) + "\n")
    return tuned


def tune_classifier(folder: Path, val_pack: dict, data: DataSpec) -> dict:
    """hflip TTA on or off, chosen on the validation pack (images as the model sees them: letterboxed,
    tumor regions for a mask-guided model), never on test."""
    import torch
    from .inference import Classifier
    clf = Classifier.from_pretrained(folder, tta=False)
    x = clf.pre.normalize(torch.from_numpy(val_pack["images"]))
    plain = np.concatenate([clf.runner(x[i:i + 64]).numpy() for i in range(0, len(x), 64)])
    flipped = np.concatenate([clf.runner(x[i:i + 64].flip(3)).numpy() for i in range(0, len(x), 64)])
    tuned = choose_tta(plain, flipped, val_pack["labels"])
    tuned.update(choose_calibration((plain + flipped) / 2 if tuned["tta_hflip"] else plain, val_pack["labels"]))
    tuned["chosen_on"] = (f"{validation_source(data)} ({len(plain)} images, seed {data.seed}, "
                          f"runtime {clf.runner.runtime})")
    (folder / INFERENCE_CONFIG_NAME).write_text(json.dumps(tuned, indent=1) + "\n")
    return tuned


def classifier_val_pack(folder: Path, data: DataSpec) -> dict:
    """The validation images as this classifier sees them (tumor regions for a mask-guided one)."""
    from .inference import Segmenter
    from .models import load_classifier
    from .preprocess import Preprocessor
    from .registry import resolve_model
    from .runtime import model_key
    _, pre, _ = load_classifier(folder)
    if pre.crop_to_tumor:
        location = resolve_model(pre.roi_segmenter)
        seg = Segmenter.from_pretrained(location)
        return tumor_roi_packs(data, Preprocessor(pre), seg, model_key(location, "segmenter"))[1]
    return train_val_packs("classification", pre.input_size, data).val


def model_record_for(kind: str, dataset: str) -> ModelRecord:
    """What a model trained on `dataset` states about itself in its metadata.json."""
    record = get_dataset(dataset)
    task = "segmentation" if kind == "segmenter" else "classification"
    short = record.model_short or record.short
    title = (record.segmenter_title or record.title) if task == "segmentation" else f"{short} - tumor type"
    return ModelRecord(name=record.name, task=task, title=title, short=short, channels=record.channels,
                       tumor_types=record.tumor_types, trained_on=record.name)


def release(best: Path, kind: str, data: DataSpec, spec: ReleaseSpec, out: Path, *,
            val_pack: dict | None = None, roi_segmenter: str | None = None, history: list[dict] | None = None) -> Path:
    """Best checkpoint -> `out` (fp16 if asked), tuned on validation, scored on test, card rendered, pushed.
    `history`: the run's whole learning curve (every epoch, also those after the best one, which the
    checkpoint's own training_info.json stops at), so the card shows whether validation had flattened."""
    from .evaluate import evaluate_model
    from .hub import push_folder, write_card
    from .models import load_classifier, load_segmenter, save_classifier, save_segmenter
    info = json.loads((best / TRAINING_INFO_NAME).read_text())
    if history:
        info["history"] = [dict(r) for r in history]
    if out.exists():
        shutil.rmtree(out)
    if kind == "segmenter":
        model, pre = load_segmenter(best)
        save_segmenter(model, out, pre, fp16=spec.fp16, training_info=info)
        tune_segmenter(out, data)
    else:
        model, pre, labels = load_classifier(best)
        save_classifier(model, out, labels, pre, fp16=spec.fp16, training_info=info)
        if val_pack is not None:
            tune_classifier(out, val_pack, data)
    write_record(out, model_record_for(kind, data.dataset))  # what the app and predict ask the folder
    if spec.evaluate:
        evaluate_model(out, kind, root=data.root, dataset=data.dataset, fold=data.fold, seg_model=roi_segmenter)
    if not get_dataset(data.dataset).releases:  # a cross-validation fold: a measurement, not a release
        return out
    write_card(out, kind, repo_id=spec.push_to_hub)  # the card's load lines name the repo it is pushed to
    if spec.push_to_hub:
        push_folder(out, spec.push_to_hub, private=spec.private)
    return out
