"""Why the classifier chose a tumor type: a Grad-CAM map (captum's LayerGradCam) over the classifier's
last spatial feature map, for the class it chose (or one named), on the input's own pixel grid.

The map is computed the way the decision was made: on the letterboxed slice (or the tumor region, for a
mask-guided classifier), averaged with the mirrored view when the classifier uses that average, then
mapped back through the same letterbox. It shows where the evidence for that class lies, not a
segmentation: coarse (1/32 of the input side) and relative (scaled to its own maximum)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .inference import Classifier
from .preprocess import letterbox_image, restore_map, tumor_box


@dataclass
class ClassActivation:
    map: np.ndarray        # H x W float32 in [0, 1] on the input's grid; all zero where no evidence
    label: str             # the class explained
    probability: float     # its calibrated probability
    layer: str             # the layer whose activations were weighted


def target_layer(model: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    """The last layer with a spatial output before pooling: timm's `bn2` (conv head + norm + act) where
    the model has one, else the last feature stage timm names."""
    for name in ("bn2", "norm_pre", "conv_head"):
        if isinstance(getattr(model, name, None), torch.nn.Module) and name != "norm_pre":
            return name, getattr(model, name)
    name = model.feature_info[-1]["module"]
    return name, model.get_submodule(name)


def _grad_cam(model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    from captum.attr import LayerAttribution, LayerGradCam
    cam = LayerGradCam(model, layer)
    with torch.enable_grad():
        attr = cam.attribute(x.requires_grad_(True), target=target, relu_attributions=True)
    return LayerAttribution.interpolate(attr.detach().float(), tuple(x.shape[-2:]), interpolate_mode="bilinear")[0, 0]


def explain(classifier: Classifier, rgb: np.ndarray, mask: np.ndarray | None = None,
            label: str | None = None) -> ClassActivation:
    """Grad-CAM of `classifier` on an RGB uint8 image for `label` (default: the class it predicts).
    A mask-guided classifier needs the segmenter's mask (as for `Classifier.probabilities`)."""
    probs = classifier.probabilities([rgb], [mask] if classifier.needs_masks else None)[0]
    index = int(np.argmax(probs)) if label is None else classifier.label_names.index(label)
    region, (top, left) = rgb, (0, 0)
    if classifier.needs_masks:
        box = tumor_box(np.asarray(mask, bool), classifier.pre.config.roi_margin, classifier.pre.config.roi_min_side)
        if box is not None:
            top, left, bottom, right = box
            region = rgb[top:bottom, left:right]
    pixels, letterbox = letterbox_image(np.ascontiguousarray(region), classifier.pre.size)
    x = classifier.pre.normalize(torch.from_numpy(pixels)[None])
    model = classifier.runner.model.float().eval()
    name, layer = target_layer(model)
    heat = _grad_cam(model, layer, x.clone(), index)
    if classifier.tta:  # the decision averaged the mirrored view: so does its explanation
        heat = (heat + _grad_cam(model, layer, x.flip(3).clone(), index).flip(1)) / 2
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else torch.zeros_like(heat)
    full = np.zeros(rgb.shape[:2], np.float32)
    full[top:top + region.shape[0], left:left + region.shape[1]] = np.clip(restore_map(heat, letterbox), 0, 1)
    return ClassActivation(full, classifier.label_names[index], float(probs[index]), name)
