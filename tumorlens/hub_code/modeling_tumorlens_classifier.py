"""A TumorLens tumor-type classifier for transformers. This file ships inside each whole-slice
classifier repo; with `trust_remote_code=True`

    pipeline("image-classification", model="tumorlens/efficientnet-lite0-brisc2025", trust_remote_code=True)

gives TumorLens's probabilities: the letterbox (TumorLensImageProcessor), the average with the mirrored
view where validation chose it, and the temperature fitted on validation data (inference_config.json),
so the logits it returns are already divided by that temperature. Without `trust_remote_code` the same
repo loads as a plain timm model (`TimmWrapperForImageClassification`, resize preprocessing, no flip
average, raw logits)."""

from __future__ import annotations

import json

import torch
from transformers import TimmWrapperForImageClassification
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import cached_file


class TumorLensClassifier(TimmWrapperForImageClassification):
    tta_hflip = False
    temperature = 1.0

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        path = cached_file(str(pretrained_model_name_or_path), "inference_config.json",
                           _raise_exceptions_for_missing_entries=False)
        tuned = json.loads(open(path).read()) if path else {}
        model.tta_hflip = bool(tuned.get("tta_hflip", False))
        model.temperature = float(tuned.get("temperature", 1.0))
        return model

    def forward(self, pixel_values: torch.Tensor, labels=None, **kwargs) -> ImageClassifierOutput:
        logits = super().forward(pixel_values, **kwargs).logits
        if self.tta_hflip:
            logits = (logits + super().forward(pixel_values.flip(3), **kwargs).logits) / 2
        logits = logits / self.temperature
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)
