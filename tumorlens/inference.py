"""Inference: the segmenter and the classifier behind one pipeline, shared by the evaluation,
the predict CLI and the Gradio app. Models load from a local folder or a Hub repo id.

Runtimes: 'torch' (precision per machine, as in training; channels_last on CPU) or 'onnx'
(ONNX Runtime, exported once and cached). 'auto' takes ONNX Runtime on CPUs without native
bf16, where it measured faster, and torch elsewhere."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from .errors import DataError
from .models import fetch_file, load_classifier, load_segmenter
from .metrics import HEALTHY_MASK_MIN_PX, dice
from .preprocess import ImageSource, Letterbox, Preprocessor, decode_image, letterbox_image, restore_map
from .training.precision import pick_precision

DEFAULT_THRESHOLD = 0.5
# Connected components smaller than this share of the image are dropped (speckle, not tumor).
DEFAULT_MIN_COMPONENT_FRACTION = 0.0002
INFERENCE_CONFIG_NAME = "inference_config.json"  # threshold and clean-up, chosen on validation data


def onnx_cache_dir() -> Path:
    return Path(os.environ.get("TUMORLENS_CACHE", Path.home() / ".cache" / "tumorlens")) / "onnx"


def pick_runtime(requested: str = "auto", device: str = "cpu", kind: str = "segmenter") -> str:
    """Measured with `python -m tumorlens.latency` (AVX-512 bf16 EPYC, 2 threads, p50): classifier
    ONNX Runtime 3.9 ms vs torch bf16 8.1 ms; segmenter ONNX 18.8 ms vs torch bf16 18.6 ms. On
    CPUs without bf16, ONNX Runtime beats torch fp32 for both. So: the classifier runs in ONNX
    Runtime on any CPU, the segmenter in torch where bf16 is native, ONNX elsewhere."""
    if requested not in ("auto", "torch", "onnx"):
        raise ValueError(f"runtime must be auto, torch or onnx, not {requested!r}")
    if requested != "auto":
        return requested
    if device != "cpu":
        return "torch"
    if kind == "classifier":
        return "onnx"
    return "torch" if pick_precision("auto", "cpu") == "bf16" else "onnx"


class _Runner:
    """Runs a float32 eval-mode model on N x 3 x S x S batches with torch or ONNX Runtime."""

    def __init__(self, model: torch.nn.Module, size: int, *, key: str, runtime: str = "auto",
                 device: str = "cpu", precision: str = "auto"):
        self.model, self.size, self.device = model.eval(), size, torch.device(device)
        self.runtime = pick_runtime(runtime, self.device.type, key.split("-")[0])
        self.precision = pick_precision(precision, self.device) if self.runtime == "torch" else "fp32"
        self.session = None
        if self.runtime == "onnx":
            self.session = self._onnx_session(key)
        else:
            self.model.to(self.device)
            if self.device.type == "cpu":
                self.model.to(memory_format=torch.channels_last)

    def _onnx_session(self, key: str):
        import onnxruntime as ort
        path = onnx_cache_dir() / f"{key}.onnx"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.onnx")
            dummy = torch.zeros(1, 3, self.size, self.size)
            torch.onnx.export(self.model.float().cpu(), dummy, str(tmp), input_names=["pixel_values"],
                              output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=17, dynamo=False)
            tmp.replace(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.session is not None:
            return torch.from_numpy(self.session.run(None, {"pixel_values": x.numpy().astype(np.float32)})[0])
        x = x.to(self.device)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.model(x).float().cpu()


def _model_key(name_or_path: str | Path, kind: str) -> str:
    weights = fetch_file(name_or_path, "model.safetensors")
    st = weights.stat()
    raw = f"{kind}:{weights.resolve()}:{st.st_size}:{st.st_mtime_ns}:{torch.__version__}"
    return f"{kind}-{hashlib.sha256(raw.encode()).hexdigest()[:16]}"


def clean_mask(mask: np.ndarray, min_px: int) -> np.ndarray:
    """Drop connected components smaller than `min_px` pixels."""
    if min_px <= 1 or not mask.any():
        return mask
    labels, n = ndimage.label(mask)
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = sizes >= min_px
    return keep[labels]


@dataclass
class Segmentation:
    probability: np.ndarray   # H x W float32 in [0, 1], the input's own grid
    mask: np.ndarray          # H x W bool after threshold and clean-up
    threshold: float

    @property
    def area_px(self) -> int:
        return int(self.mask.sum())

    @property
    def area_fraction(self) -> float:
        return float(self.mask.mean())


class Segmenter:
    def __init__(self, model: torch.nn.Module, preprocess, *, runtime: str = "auto", device: str = "cpu",
                 precision: str = "auto", tta: bool = True, key: str = "segmenter",
                 threshold: float = DEFAULT_THRESHOLD,
                 min_component_fraction: float = DEFAULT_MIN_COMPONENT_FRACTION):
        self.pre = Preprocessor(preprocess)
        self.runner = _Runner(model, self.pre.size, key=key, runtime=runtime, device=device, precision=precision)
        self.tta = tta
        self.threshold = threshold
        self.min_component_fraction = min_component_fraction

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs) -> "Segmenter":
        model, pre = load_segmenter(name_or_path)
        path = fetch_file(name_or_path, INFERENCE_CONFIG_NAME, required=False)
        if path is not None:
            tuned = json.loads(path.read_text())
            for key in ("threshold", "min_component_fraction"):
                kwargs.setdefault(key, tuned[key])
        return cls(model, pre, key=_model_key(name_or_path, "segmenter"), **kwargs)

    def probabilities(self, images: Sequence[np.ndarray], batch_size: int = 16) -> list[np.ndarray]:
        """RGB uint8 images of any size -> tumor probability maps on each image's own grid."""
        out = []
        for i in range(0, len(images), batch_size):
            boxed = [letterbox_image(img, self.pre.size) for img in images[i:i + batch_size]]
            x = self.pre.normalize(torch.from_numpy(np.stack([b[0] for b in boxed])))
            logits = self.runner(x)
            if self.tta:  # average with the mirrored view: cheap, and steadier at tumor edges
                logits = (logits + self.runner(x.flip(3)).flip(3)) / 2
            probs = torch.sigmoid(logits[:, 0])
            out.extend(restore_map(p, box) for p, (_, box) in zip(probs, boxed))
        return out

    def segment(self, image: ImageSource | np.ndarray, threshold: float | None = None) -> Segmentation:
        rgb = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 else decode_image(image)
        return self.from_probability(self.probabilities([rgb])[0], threshold)

    def classifier_mask(self, seg: Segmentation) -> np.ndarray:
        """The mask a mask-guided classifier crops to: at this model's own threshold, as in its
        training, whatever threshold the user chose for display."""
        return seg.mask if seg.threshold == self.threshold else self.from_probability(seg.probability).mask

    def from_probability(self, prob: np.ndarray, threshold: float | None = None) -> Segmentation:
        threshold = self.threshold if threshold is None else threshold
        mask = clean_mask(prob >= threshold, int(self.min_component_fraction * prob.size))
        return Segmentation(prob.astype(np.float32), mask, threshold)


class Classifier:
    def __init__(self, model: torch.nn.Module, preprocess, label_names: Sequence[str], *, runtime: str = "auto",
                 device: str = "cpu", precision: str = "auto", key: str = "classifier", tta: bool = False):
        self.pre = Preprocessor(preprocess)
        self.label_names = list(label_names)
        self.runner = _Runner(model, self.pre.size, key=key, runtime=runtime, device=device, precision=precision)
        self.tta = tta

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs) -> "Classifier":
        model, pre, labels = load_classifier(name_or_path)
        path = fetch_file(name_or_path, INFERENCE_CONFIG_NAME, required=False)
        if path is not None:  # hflip TTA where it was chosen on validation data
            kwargs.setdefault("tta", bool(json.loads(path.read_text()).get("tta_hflip", False)))
        return cls(model, pre, labels, key=_model_key(name_or_path, "classifier"), **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised N x 3 x S x S -> logits; with TTA the mean over the slice and its mirror."""
        logits = self.runner(x)
        return (logits + self.runner(x.flip(3))) / 2 if self.tta else logits

    @property
    def needs_masks(self) -> bool:
        """True for a mask-guided classifier: it classifies the segmenter's tumor region."""
        return self.pre.config.crop_to_tumor

    def logits(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None = None, *,
               batch_size: int = 32) -> np.ndarray:
        """RGB uint8 images -> logits. A mask-guided classifier needs each image's tumor mask
        (same grid; an empty mask means the whole image)."""
        if self.needs_masks and masks is None:
            raise DataError(None, "this classifier classifies the tumor region: pass the segmenter's masks")
        masks = masks if self.needs_masks else [None] * len(images)
        if len(masks) != len(images):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        out = []
        for i in range(0, len(images), batch_size):
            regions = [self.pre.crop(img, m) for img, m in zip(images[i:i + batch_size], masks[i:i + batch_size])]
            x = self.pre.normalize(torch.from_numpy(np.stack([self.pre.prepare(r)[0] for r in regions])))
            out.append(self.forward(x).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.label_names)), np.float32)

    def probabilities(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None = None) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.logits(images, masks)), dim=1).numpy()


@dataclass
class Analysis:
    """Everything the app and the CLI report for one image."""

    image: np.ndarray
    segmentation: Segmentation | None
    class_probabilities: dict[str, float] = field(default_factory=dict)
    pixel_spacing_mm: tuple[float, float] | None = None

    @property
    def predicted_class(self) -> str | None:
        return max(self.class_probabilities, key=self.class_probabilities.get) if self.class_probabilities else None

    @property
    def tumor_found(self) -> bool:
        return self.segmentation is not None and self.segmentation.area_px > 0

    @property
    def area_mm2(self) -> float | None:
        if self.segmentation is None or self.pixel_spacing_mm is None:
            return None
        return self.segmentation.area_px * float(self.pixel_spacing_mm[0]) * float(self.pixel_spacing_mm[1])


class Pipeline:
    """Segmenter and (optionally) classifier, loaded by Hub repo id or local folder."""

    def __init__(self, segmenter: Segmenter | None, classifier: Classifier | None = None):
        if segmenter is None and classifier is None:
            raise ValueError("a pipeline needs a segmenter, a classifier or both")
        if classifier is not None and classifier.needs_masks and segmenter is None:
            raise DataError(None, "this classifier is mask-guided (it classifies the tumor region): "
                                  "load a segmenter with it")
        self.segmenter, self.classifier = segmenter, classifier

    @classmethod
    def from_pretrained(cls, seg_model: str | Path | None, cls_model: str | Path | None = None, **kwargs) -> "Pipeline":
        return cls(Segmenter.from_pretrained(seg_model, **kwargs) if seg_model else None,
                   Classifier.from_pretrained(cls_model, **kwargs) if cls_model else None)

    def analyze(self, image: ImageSource | np.ndarray, *, threshold: float | None = None,
                pixel_spacing_mm: tuple[float, float] | None = None) -> Analysis:
        rgb = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 else decode_image(image)
        seg = self.segmenter.segment(rgb, threshold) if self.segmenter else None
        probs = {}
        if self.classifier:
            masks = [self.segmenter.classifier_mask(seg)] if self.classifier.needs_masks else None
            p = self.classifier.probabilities([rgb], masks)[0]
            probs = {name: float(v) for name, v in zip(self.classifier.label_names, p)}
        return Analysis(rgb, seg, probs, pixel_spacing_mm)


__all__ = ["Segmenter", "Classifier", "Pipeline", "Analysis", "Segmentation", "clean_mask", "pick_runtime", "Letterbox"]


# -- which models to load ------------------------------------------------------------------
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
DEFAULT_MODELS = {  # shipped folders; env vars or flags may name a Hub repo id instead
    "segmenter": ("TUMORLENS_SEG_MODEL", "tumorlens-unet-mobilenetv2-brisc2025"),
    "classifier": ("TUMORLENS_CLS_MODEL", "tumorlens-efficientnet-lite0-brisc2025"),
}


def default_model(kind: str) -> str | None:
    """$TUMORLENS_SEG_MODEL / $TUMORLENS_CLS_MODEL, else the shipped folder under models/ if present."""
    env, folder = DEFAULT_MODELS[kind]
    if os.environ.get(env):
        return os.environ[env]
    path = MODELS_DIR / folder
    return str(path) if (path / "config.json").is_file() else None


from .errors import TumorLensError  # noqa: E402 - kept with the registry it serves

HUB_OWNER = "tumorlens"  # where the shipped folders are published, under their own names


@dataclass(frozen=True)
class SegmenterEntry:
    """A segmenter TumorLens ships, known by a short name in the app and the predict CLI."""

    folder: str         # under models/, and the model's name on the Hub
    label: str          # what the app's model menu shows
    short: str          # how example labels and notes name it
    tumor_types: bool   # True where the BRISC tumor-type classifier means something on its inputs

    @property
    def hub_repo(self) -> str:
        return f"{HUB_OWNER}/{self.folder}"


SEGMENTERS = {
    "brisc2025": SegmenterEntry("tumorlens-unet-mobilenetv2-brisc2025",
                                "BRISC 2025 - T1 contrast-enhanced, 1 channel", "BRISC 2025", True),
    # kaggle_3m slices carry three sequences as RGB; its masks mark FLAIR abnormality, and it has
    # no tumor types, so the BRISC classifier (trained on T1c slices) does not apply
    "lgg": SegmenterEntry("tumorlens-unet-mobilenetv2-lgg",
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


HEALTHY_FP_FRACTION = HEALTHY_MASK_MIN_PX / 512 ** 2  # the false-alarm size as a share of the slice
MAX_VAL_HEALTHY_FP = 0.02  # the moonshot bound; its target allows 5 %


# Down to 0.01: the LGG models' best validation threshold sat on the old 0.05 floor (their maps are
# faint at the FLAIR margins), and per-patient Dice kept rising below it.
THRESHOLD_GRID = (0.01, 0.02, 0.03, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def tune_postprocess(probs: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                     thresholds: Sequence[float] = THRESHOLD_GRID,
                     fractions: Sequence[float] = (0.0, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3),
                     max_healthy_fp: float = MAX_VAL_HEALTHY_FP, patients: Sequence[str] | None = None) -> dict:
    """Pick threshold and minimum component size on VALIDATION maps, by the targets the model is
    judged on: the best mean Dice over tumor slices among the settings that mask at most
    `max_healthy_fp` of the healthy slices (a mask of HEALTHY_FP_FRACTION of the slice or more);
    where no setting is that clean, the cleanest. Without healthy slices: the best tumor Dice.
    With `patients` (one id per slice, as for LGG): the best mean per-patient volume Dice, which
    already pays for every false pixel on a patient's healthy slices."""
    shape = (len(thresholds), len(fractions))
    tumor_dice, healthy_fp = np.zeros(shape), np.zeros(shape)
    volume = {pid: np.zeros((3, *shape)) for pid in (() if patients is None else patients)}  # intersection, predicted, true px
    n_tumor = n_healthy = 0
    for i, (prob, truth) in enumerate(zip(probs, truths)):
        truth = np.asarray(truth, bool)
        has_tumor = bool(truth.any())
        n_tumor, n_healthy = n_tumor + has_tumor, n_healthy + (not has_tumor)
        for ti, t in enumerate(thresholds):
            binary = prob >= t
            labels, n = ndimage.label(binary)
            sizes = np.asarray(ndimage.sum(binary, labels, index=np.arange(1, n + 1))) if n else np.zeros(0)
            for fi, f in enumerate(fractions):
                big = sizes >= max(1, int(f * prob.size))
                pred = np.concatenate([[False], big])[labels]
                if has_tumor:
                    tumor_dice[ti, fi] += dice(pred, truth)
                else:
                    healthy_fp[ti, fi] += sizes[big].sum() >= HEALTHY_FP_FRACTION * prob.size
                if patients is not None:
                    volume[patients[i]][:, ti, fi] += ((pred & truth).sum(), pred.sum(), truth.sum())
    tumor_dice /= max(1, n_tumor)
    healthy_fp /= max(1, n_healthy)
    default = (list(thresholds).index(0.5), list(fractions).index(2e-4)) if 0.5 in thresholds and 2e-4 in fractions else None
    if patients is not None:
        score = np.mean([np.where(v[1] + v[2] > 0, 2 * v[0] / np.maximum(v[1] + v[2], 1), 1.0) for v in volume.values()], 0)
        ti, fi = np.unravel_index(np.argmax(score), shape)
        rule = "best mean per-patient volume Dice (each patient's slices stacked)"
        extra = {"val_dice_per_patient": float(score[ti, fi]), "n_val_patients": len(volume),
                 "val_dice_per_patient_default": float(score[default]) if default else None}
    else:
        allowed = healthy_fp <= max_healthy_fp + 1e-12
        if not allowed.any():
            allowed = healthy_fp == healthy_fp.min()
        ti, fi = np.unravel_index(np.argmax(np.where(allowed, tumor_dice, -1.0)), shape)
        rule = (f"best mean tumor-slice Dice with at most {max_healthy_fp:.0%} of healthy slices given a mask "
                f"of >= {HEALTHY_FP_FRACTION:.2e} of the slice (50 px at 512 px)")
        extra = {}
    return {"threshold": float(thresholds[ti]), "min_component_fraction": float(fractions[fi]), "rule": rule, **extra,
            "val_dice_tumor": float(tumor_dice[ti, fi]), "val_healthy_fp_rate": float(healthy_fp[ti, fi]),
            "val_dice_tumor_default": float(tumor_dice[default]) if default else None,
            "n_val": len(probs), "n_val_tumor": n_tumor, "n_val_healthy": n_healthy,
            "grid": {"thresholds": list(thresholds), "fractions": list(fractions),
                     "tumor_dice": np.round(tumor_dice, 5).tolist(), "healthy_fp_rate": np.round(healthy_fp, 4).tolist(),
                     **({"dice_per_patient": np.round(score, 5).tolist()} if patients is not None else {})}}


def choose_tta(plain_logits: np.ndarray, flipped_logits: np.ndarray, labels: np.ndarray) -> dict:
    """hflip TTA for a classifier, decided on VALIDATION logits: on where it classifies more images
    right, or as many with a lower mean negative log-likelihood; off otherwise."""
    def scores(logits):
        logp = torch.log_softmax(torch.as_tensor(logits, dtype=torch.float32), 1).numpy()
        return float((logp.argmax(1) == labels).mean()), float(-logp[np.arange(len(labels)), labels].mean())
    plain = scores(plain_logits)
    tta = scores((np.asarray(plain_logits) + np.asarray(flipped_logits)) / 2)
    use = tta[0] > plain[0] or (tta[0] == plain[0] and tta[1] < plain[1])
    return {"tta_hflip": bool(use), "n_val": int(len(labels)),
            "val_accuracy": {"plain": plain[0], "hflip_tta": tta[0]}, "val_nll": {"plain": plain[1], "hflip_tta": tta[1]}}
