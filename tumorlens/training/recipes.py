"""The two training recipes, typed: what data, what model setup, what schedule, what release in; the
model folder and its provenance out. The command line (tumorlens.training.cli), the Figshare
cross-validation and the ablation all call these same functions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

from ..data import TUMOR_CLASSES
from ..errors import ConfigError
from ..models import fetch_file, is_local
from ..release import check_out_folder, release
from .augment import AugmentConfig
from .loop import TrainConfig, Trainer
from .specs import DataSpec, ReleaseSpec, TrainResult
from .splits import train_val_packs, tumor_roi_packs
from .tasks import ClassificationSetup, ClassificationTask, SegmentationSetup, SegmentationTask


def parent_record(name_or_path: str) -> dict:
    """Which model a fine-tune starts from, pinned: the folder or repo id, the weights' sha256 and,
    for a Hub repo, the snapshot revision it was read at."""
    weights = fetch_file(name_or_path, "model.safetensors")
    record = {"source": str(name_or_path), "kind": "folder" if is_local(name_or_path) else "hub",
              "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    parts = weights.resolve().parts if not is_local(name_or_path) else ()
    if "snapshots" in parts:
        record["revision"] = parts[parts.index("snapshots") + 1]
    return record


def init_state_from(name_or_path: str | None, kind: str, label_names: list[str] | None = None) -> dict | None:
    """Weights of a published model to start from. A classifier whose classes differ (BRISC's 4 ->
    Figshare's 3) keeps the head rows of the classes the new task has, in the new order."""
    if not name_or_path:
        return None
    from ..models import load_classifier, load_segmenter
    if kind == "segmenter":
        return {k: v.float() for k, v in load_segmenter(name_or_path)[0].state_dict().items()}
    model, _, labels = load_classifier(name_or_path)
    state = {k: v.float() for k, v in model.state_dict().items()}
    if label_names is not None and list(labels) != list(label_names):
        missing = [n for n in label_names if n not in labels]
        if missing:
            raise ConfigError(f"--init-from {name_or_path}: it has no head for {missing} (its classes: {labels})")
        rows = [list(labels).index(n) for n in label_names]
        head = model.pretrained_cfg["classifier"]
        for key in (f"{head}.weight", f"{head}.bias"):
            state[key] = state[key][rows]
    return state


def _fit(task, kind: str, data: DataSpec, schedule: TrainConfig, spec: ReleaseSpec, run_dir: Path,
         init_from: str | None, provenance: dict, roi_segmenter: str | None = None) -> TrainResult:
    out = Path(spec.out) if spec.out else run_dir / "model"
    if spec.finalize:
        check_out_folder(out, spec.replace or spec.out is None)  # the run's own model/ folder is its to rewrite
    record = {**asdict(data), "root": str(data.root) if data.root else None, "n_train": task.num_train(),
              "n_val": len(next(iter(task.val.values()))),
              "init_from": parent_record(init_from) if init_from else None, **provenance}
    trainer = Trainer(task, schedule, run_dir, init_state=init_state_from(init_from, kind, getattr(task, "label_names", None)),
                      data_info=record)
    main_process = trainer.accelerator.is_main_process  # under a multi-process launch, one writer
    if main_process:
        (run_dir / "spec.json").write_text(json.dumps({"kind": kind, "data": asdict(data), "setup": asdict(task.setup),
                                                       "schedule": asdict(schedule), "release": asdict(spec),
                                                       "init_from": init_from}, indent=1, default=str) + "\n")
    state = trainer.fit()
    if not spec.finalize or not state.get("done") or not main_process:
        return TrainResult(run_dir, None, record)
    folder = release(run_dir / "best", kind, data, spec, out, val_pack=task.val, roi_segmenter=roi_segmenter,
                     history=state.get("history"))
    return TrainResult(run_dir, folder, record)


def train_segmenter(data: DataSpec, setup: SegmentationSetup, schedule: TrainConfig, spec: ReleaseSpec,
                    run_dir: Path, *, init_from: str | None = None) -> TrainResult:
    """Train (or resume, from the same `run_dir`) a segmenter, then release it as `spec` says."""
    packs = train_val_packs("segmentation", setup.input_size, data)
    task = SegmentationTask(packs.train, packs.val, setup, AugmentConfig())
    return _fit(task, "segmenter", data, schedule, spec, Path(run_dir), init_from, packs.provenance)


def train_classifier(data: DataSpec, setup: ClassificationSetup, schedule: TrainConfig, spec: ReleaseSpec,
                     run_dir: Path, *, init_from: str | None = None) -> TrainResult:
    """Train (or resume) a tumor-type classifier; a mask-guided one (`setup.crop_to_tumor`) learns from the
    tumor regions of `setup.roi_segmenter` (default: the shipped BRISC segmenter)."""
    if setup.crop_to_tumor:
        import torch
        from ..hardware import default_threads
        from ..inference import Segmenter
        from ..preprocess import PreprocessConfig, Preprocessor
        from ..registry import default_model, resolve_model, segmenter_name
        from ..runtime import model_key
        from .tasks import arch_normalization
        location = resolve_model(setup.roi_segmenter) if setup.roi_segmenter else default_model("segmenter")
        if location is None:
            raise ConfigError("--tumor-roi needs a segmenter: none is shipped here, pass --roi-segmenter")
        setup = replace(setup, roi_segmenter=segmenter_name(location) or str(location))  # recorded in its config
        torch.set_num_threads(schedule.num_threads or default_threads())  # as training will: no oversubscribed cores
        mean, std = arch_normalization(setup.arch)
        pre = Preprocessor(PreprocessConfig(input_size=setup.input_size, mean=mean, std=std, crop_to_tumor=True))
        train, val = tumor_roi_packs(data, pre, Segmenter.from_pretrained(location), model_key(location, "segmenter"))
        task = ClassificationTask(train, val, list(TUMOR_CLASSES), setup)
        return _fit(task, "classifier", data, schedule, spec, Path(run_dir), init_from, {}, roi_segmenter=setup.roi_segmenter)
    packs = train_val_packs("classification", setup.input_size, data)
    task = ClassificationTask(packs.train, packs.val, packs.class_names, setup)
    return _fit(task, "classifier", data, schedule, spec, Path(run_dir), init_from, packs.provenance)
