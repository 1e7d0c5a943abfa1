"""Save and load the two model kinds in their Hub layouts, from a local folder or a repo id.

Segmenter: segmentation-models-pytorch's layout (config.json with `_model_class` and init args,
model.safetensors) plus preprocessor_config.json; `smp.from_pretrained` loads it as is.
Classifier: timm's layout (config.json with architecture, label_names and a pretrained_cfg
carrying mean/std/input size); loads with timm `local-dir:`/`hf-hub:` and transformers.
Both carry the transformers code (tumorlens.hub_code) that gives TumorLens's outputs through
`pipeline(..., trust_remote_code=True)`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import segmentation_models_pytorch as smp
import timm
import torch
from huggingface_hub import hf_hub_download
from timm.models import save_for_hf

from .errors import DataError
from .hub_code import add_transformers_code
from .preprocess import PREPROCESSOR_CONFIG_NAME, PreprocessConfig

TRAINING_INFO_NAME = "training_info.json"
EVAL_NAME = "eval.json"


def read_training_info(folder: str | Path) -> dict:
    """A model folder's training record; {} where it has none (a Hub id, a model from elsewhere)."""
    path = Path(folder) / TRAINING_INFO_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def is_local(name_or_path: str | Path) -> bool:
    return Path(name_or_path).expanduser().is_dir()


def fetch_file(name_or_path: str | Path, filename: str, *, required: bool = True) -> Path | None:
    """A file of a model, from a local folder or (cache first, honouring HF_HUB_OFFLINE) the Hub."""
    if is_local(name_or_path):
        path = Path(name_or_path).expanduser() / filename
        if path.is_file():
            return path
        if required:
            raise DataError(path, "model file not found")
        return None
    try:
        return Path(hf_hub_download(str(name_or_path), filename))
    except Exception as exc:  # noqa: BLE001 - offline, missing repo, missing file all mean the same here
        if required:
            raise DataError(str(name_or_path), f"cannot fetch {filename} ({exc.__class__.__name__}: {exc})") from exc
        return None


def _half_copy(model: torch.nn.Module, fp16: bool) -> torch.nn.Module:
    m = copy.deepcopy(model).to("cpu").to(memory_format=torch.contiguous_format)
    return m.half() if fp16 else m.float()


# -- segmenter -----------------------------------------------------------------------------
# decoder name -> (smp class, its extra arguments); every one saves and loads with smp's Hub mixin
DECODERS = {
    "unet": (smp.Unet, {}),
    "unet-scse": (smp.Unet, {"decoder_attention_type": "scse"}),  # spatial + channel squeeze-excitation
    "unetplusplus": (smp.UnetPlusPlus, {}),
    "fpn": (smp.FPN, {}),
}


def build_segmenter(encoder: str = "mobilenet_v2", classes: int = 1, *, decoder: str = "unet",
                    aux_classes: int | None = None) -> torch.nn.Module:
    """An smp segmenter; `aux_classes` adds a classification head on the encoder (the model then
    returns (mask logits, class logits))."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {sorted(DECODERS)}")
    cls, extra = DECODERS[decoder]
    aux = {"classes": aux_classes, "dropout": 0.2} if aux_classes else None
    # encoder_weights=None is what config.json records, so loading never reaches for the internet
    return cls(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=classes, aux_params=aux, **extra)


def without_aux_head(model: torch.nn.Module) -> torch.nn.Module:
    """The same segmenter without its classification head: what ships, since inference only segments."""
    if getattr(model, "classification_head", None) is None:
        return model
    plain = copy.deepcopy(model)
    plain.classification_head = None
    if hasattr(plain, "_hub_mixin_config"):  # so config.json records a plain segmenter
        plain._hub_mixin_config = {**plain._hub_mixin_config, "aux_params": None}
    return plain


def save_segmenter(model: torch.nn.Module, folder: str | Path, preprocess: PreprocessConfig, *,
                   fp16: bool = False, training_info: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _half_copy(model, fp16).save_pretrained(str(folder))
    preprocess.save(folder)
    add_transformers_code(folder, "segmenter")  # transformers' image-segmentation pipeline, same masks
    if training_info is not None:
        (folder / TRAINING_INFO_NAME).write_text(json.dumps(training_info, indent=2, default=str) + "\n")
    return folder


def load_segmenter(name_or_path: str | Path) -> tuple[torch.nn.Module, PreprocessConfig]:
    """(float32 eval-mode model, its PreprocessConfig) from a folder or a Hub repo id."""
    config_path = fetch_file(name_or_path, PREPROCESSOR_CONFIG_NAME)
    fetch_file(name_or_path, "config.json")
    model = smp.from_pretrained(str(Path(name_or_path).expanduser()) if is_local(name_or_path) else str(name_or_path))
    pre = PreprocessConfig.from_dict(json.loads(Path(config_path).read_text()))
    return model.float().eval(), pre


# -- classifier ----------------------------------------------------------------------------
def build_classifier(arch: str, num_classes: int, drop_rate: float = 0.2) -> torch.nn.Module:
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, drop_rate=drop_rate)


def save_classifier(model: torch.nn.Module, folder: str | Path, label_names: list[str], preprocess: PreprocessConfig,
                    *, fp16: bool = False, training_info: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    m = _half_copy(model, fp16)
    size = preprocess.input_size
    data_config = {"input_size": (3, size, size), "mean": tuple(preprocess.mean), "std": tuple(preprocess.std),
                   "crop_pct": 1.0, "interpolation": "bilinear", "crop_mode": "center"}
    # transformers' TimmWrapper rejects model_args carrying num_classes; it reads the root num_classes
    model_config = {"label_names": list(label_names)}
    if preprocess.crop_to_tumor:  # mask-guided: it classifies the segmenter's tumor region
        model_config["tumor_roi"] = preprocess.tumor_roi()
    save_for_hf(m, str(folder), model_config=model_config, model_args={},
                safe_serialization=True, data_config=data_config)
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = "float32"  # transformers would otherwise load fp16-stored weights as fp16 and drift from timm
    cfg.get("model_args", {}).pop("num_classes", None)
    if not cfg.get("model_args"):
        cfg.pop("model_args", None)
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    preprocess.save(folder)
    if not preprocess.crop_to_tumor:  # a mask-guided one needs the segmenter: no standalone pipeline
        add_transformers_code(folder, "classifier")
    if training_info is not None:
        (folder / TRAINING_INFO_NAME).write_text(json.dumps(training_info, indent=2, default=str) + "\n")
    return folder


def timm_name(name_or_path: str | Path) -> str:
    return f"local-dir:{Path(name_or_path).expanduser().resolve()}" if is_local(name_or_path) else f"hf-hub:{name_or_path}"


def load_classifier(name_or_path: str | Path) -> tuple[torch.nn.Module, PreprocessConfig, list[str]]:
    """(float32 eval-mode timm model, PreprocessConfig from its pretrained_cfg, label names)."""
    cfg = json.loads(fetch_file(name_or_path, "config.json").read_text())
    if "architecture" not in cfg:
        raise DataError(str(name_or_path), "not a timm model folder (config.json has no architecture)")
    model = timm.create_model(timm_name(name_or_path), pretrained=True)
    labels = cfg.get("label_names") or [str(i) for i in range(cfg["num_classes"])]
    pre = PreprocessConfig.from_timm(cfg["pretrained_cfg"], cfg.get("tumor_roi"))
    return model.float().eval(), pre, list(labels)
