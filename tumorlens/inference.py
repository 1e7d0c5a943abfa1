"""Inference: the segmenter and the classifier behind one pipeline, shared by the evaluation,
the predict CLI and the Gradio app. Models load from a local folder or a Hub repo id.

Where they run (torch or ONNX Runtime) is tumorlens.runtime; which models to load, the model
registry (tumorlens.registry); the threshold, clean-up and test-time augmentation each model was
tuned with, tumorlens.postprocess."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .errors import DataError
from .model_record import ModelRecord, read_record
from .models import load_classifier, load_segmenter
from .postprocess import DEFAULT_MIN_COMPONENT_FRACTION, DEFAULT_THRESHOLD, clean_mask, read_inference_config
from .preprocess import ImageSource, Preprocessor, decode_image, letterbox_image, restore_map
from .runtime import Runner, model_key


@dataclass
class Segmentation:
    probability: np.ndarray   # H x W float32 in [0, 1], the input's own grid
    mask: np.ndarray          # H x W bool after threshold and clean-up
    threshold: float
    # |p(slice) - p(mirrored slice)| per pixel: where the two views the mask averages disagree (None
    # without the flip average, or where not asked for)
    disagreement: np.ndarray | None = None

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
                 min_component_fraction: float = DEFAULT_MIN_COMPONENT_FRACTION, record: ModelRecord | None = None):
        self.record = record  # what the model's folder says it is (None: built in code, not loaded)
        self.pre = Preprocessor(preprocess)
        self.runner = Runner(model, self.pre.size, kind="segmenter", cache_key=key, runtime=runtime, device=device,
                             precision=precision)
        self.tta = tta
        self.threshold = threshold
        self.min_component_fraction = min_component_fraction

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs) -> "Segmenter":
        model, pre = load_segmenter(name_or_path)
        tuned = read_inference_config(name_or_path)
        if tuned is not None:
            for key in ("threshold", "min_component_fraction"):
                kwargs.setdefault(key, tuned[key])
            kwargs.setdefault("tta", bool(tuned.get("tta_hflip", True)))  # older folders: tuned with the flip
        kwargs.setdefault("record", read_record(name_or_path))
        return cls(model, pre, key=model_key(name_or_path, "segmenter"), **kwargs)

    def probabilities(self, images: Sequence[np.ndarray], batch_size: int = 16) -> list[np.ndarray]:
        """RGB uint8 images of any size -> tumor probability maps on each image's own grid."""
        return [p for p, _ in self.probability_maps(images, batch_size)]

    def probability_maps(self, images: Sequence[np.ndarray], batch_size: int = 16, *, disagreement: bool = False
                         ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(probability, flip disagreement or None) per image, both on the image's own grid."""
        out = []
        for i in range(0, len(images), batch_size):
            boxed = [letterbox_image(img, self.pre.size) for img in images[i:i + batch_size]]
            x = self.pre.normalize(torch.from_numpy(np.stack([b[0] for b in boxed])))
            logits, gaps = self.runner(x), None
            if self.tta:  # average with the mirrored view: cheap, and steadier at tumor edges
                mirrored = self.runner(x.flip(3)).flip(3)
                if disagreement:
                    gaps = (torch.sigmoid(logits[:, 0]) - torch.sigmoid(mirrored[:, 0])).abs()
                logits = (logits + mirrored) / 2
            probs = torch.sigmoid(logits[:, 0])
            for j, (_, box) in enumerate(boxed):
                out.append((restore_map(probs[j], box), None if gaps is None else restore_map(gaps[j], box)))
        return out

    def segment(self, image: ImageSource | np.ndarray, threshold: float | None = None) -> Segmentation:
        rgb = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 else decode_image(image)
        prob, gaps = self.probability_maps([rgb], disagreement=True)[0]
        seg = self.from_probability(prob, threshold)
        seg.disagreement = gaps
        return seg

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
                 device: str = "cpu", precision: str = "auto", key: str = "classifier", tta: bool = False,
                 temperature: float = 1.0):
        self.pre = Preprocessor(preprocess)
        self.label_names = list(label_names)
        self.runner = Runner(model, self.pre.size, kind="classifier", cache_key=key, runtime=runtime, device=device,
                             precision=precision)
        self.tta = tta
        self.temperature = float(temperature)  # chosen on validation: probabilities say how sure it is

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs) -> "Classifier":
        model, pre, labels = load_classifier(name_or_path)
        tuned = read_inference_config(name_or_path)
        if tuned is not None:  # hflip TTA where it was chosen on validation data
            kwargs.setdefault("tta", bool(tuned.get("tta_hflip", False)))
            kwargs.setdefault("temperature", float(tuned.get("temperature", 1.0)))
        return cls(model, pre, labels, key=model_key(name_or_path, "classifier"), **kwargs)

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
        return torch.softmax(torch.from_numpy(self.logits(images, masks)) / self.temperature, dim=1).numpy()


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


__all__ = ["Segmenter", "Classifier", "Pipeline", "Analysis", "Segmentation"]
