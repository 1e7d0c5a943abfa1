"""The transformers code that travels inside each model folder, so a repo reproduces TumorLens's
outputs through the standard loaders with `trust_remote_code=True`: the letterbox as an image
processor, the segmenter as an `image-segmentation` pipeline, the classifier with its flip average
and temperature. The files here are standalone (they import nothing from tumorlens; tumorlens.preprocess
imports its letterbox and tumorlens.postprocess its mask clean-up from here) and are copied as they are; `add_transformers_code` also points the folder's configs at them (`auto_map`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

HERE = Path(__file__).parent
LETTERBOX = "letterbox"  # shared with tumorlens.preprocess
MASK_CLEANUP = "mask_cleanup"  # shared with tumorlens.postprocess
IMAGE_PROCESSOR = "image_processing_tumorlens"
SEGMENTER = "modeling_tumorlens_segmenter"
CLASSIFIER = "modeling_tumorlens_classifier"
CODE_FILES = {"segmenter": (LETTERBOX, MASK_CLEANUP, IMAGE_PROCESSOR, SEGMENTER), "classifier": (LETTERBOX, IMAGE_PROCESSOR, CLASSIFIER)}


def _update_json(path: Path, changes: dict) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2) + "\n")


def takes_transformers_keys(folder: str | Path) -> bool:
    """Whether smp still loads this segmenter with transformers' keys in its config.json: smp hands every
    config.json key on to the encoder, which a timm universal encoder (`tu-...`) passes to
    timm.create_model, where `model_type` or `auto_map` is an error. Such a segmenter ships without the
    transformers code (its card then shows no transformers snippet)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    return not str(config.get("encoder_name", "")).startswith("tu-")


def add_transformers_code(folder: str | Path, kind: str) -> list[Path]:
    """Copy the code for `kind` ("segmenter" or "classifier") into a saved model folder and register
    it in config.json; the files the plain loaders read keep their meaning
    (smp and timm ignore the added keys). Returns the files written (none for a segmenter with a timm
    universal encoder: see `takes_transformers_keys`)."""
    if kind not in CODE_FILES:
        raise ValueError(f"kind must be one of {sorted(CODE_FILES)}, not {kind!r}")
    folder = Path(folder)
    if kind == "segmenter" and not takes_transformers_keys(folder):
        return []
    written = []
    for module in CODE_FILES[kind]:
        written.append(Path(shutil.copyfile(HERE / f"{module}.py", folder / f"{module}.py")))
    # AutoImageProcessor is mapped in config.json, never in preprocessor_config.json: transformers
    # reads an auto_map there as a video processor too and then asks on stdin even without
    # trust_remote_code, which would break the plain loaders
    processor = {"AutoImageProcessor": f"{IMAGE_PROCESSOR}.TumorLensImageProcessor"}
    if kind == "segmenter":
        _update_json(folder / "config.json", {
            "model_type": "tumorlens_segmenter",
            "architectures": ["TumorLensSegmenter"],
            "dtype": "float32",  # weights may be stored in fp16; the masks were measured in fp32 or bf16
            "auto_map": {**processor, "AutoConfig": f"{SEGMENTER}.TumorLensSegmenterConfig",
                         "AutoModel": f"{SEGMENTER}.TumorLensSegmenter"},
            "custom_pipelines": {"image-segmentation": {"impl": f"{SEGMENTER}.TumorLensSegmentationPipeline",
                                                        "pt": ["AutoModel"], "type": "image"}},
        })
    else:
        _update_json(folder / "config.json", {
            "auto_map": {**processor, "AutoModelForImageClassification": f"{CLASSIFIER}.TumorLensClassifier"}})
    return written + [folder / "config.json"]
