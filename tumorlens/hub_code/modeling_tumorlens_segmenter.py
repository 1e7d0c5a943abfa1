"""A TumorLens segmenter for transformers: config, model and an `image-segmentation` pipeline.
This file ships inside each segmenter repo; with `trust_remote_code=True`

    pipeline("image-segmentation", model="tumorlens/unet-mobilenetv2-brisc2025", trust_remote_code=True)

returns `[{"label": "tumor", "mask": PIL image (0/255), "score": mean tumor probability inside the mask}]`,
or `[]` where no tumor is found: the masks TumorLens gives. The weights are segmentation-models-pytorch's
(`smp.from_pretrained` loads the same repo); what the mask depends on comes from the repo's files:
the letterbox and normalisation (preprocessor_config.json), the threshold, the smallest kept component
and the flip average (inference_config.json)."""

from __future__ import annotations

import inspect
import json

import numpy as np
import segmentation_models_pytorch as smp
import torch
from PIL import Image
from transformers import Pipeline, PretrainedConfig, PreTrainedModel
from transformers.image_utils import load_image
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.utils import cached_file

from .image_processing_tumorlens import TumorLensImageProcessor
from .letterbox import restore_map
from .mask_cleanup import clean_mask

TUMOR_LABEL = "tumor"


class TumorLensSegmenterConfig(PretrainedConfig):
    """smp's config.json as it is (`_model_class` and the init arguments), read by transformers."""

    model_type = "tumorlens_segmenter"

    def smp_arguments(self) -> tuple[type, dict]:
        cls = getattr(smp, getattr(self, "_model_class", "Unet"))
        accepted = inspect.signature(cls.__init__).parameters
        values = self.to_dict()
        return cls, {name: values[name] for name in accepted if name != "self" and name in values}


class TumorLensSegmenter(PreTrainedModel):
    """The smp network with its own parameter names, so the repo's model.safetensors loads as is."""

    config_class = TumorLensSegmenterConfig
    main_input_name = "pixel_values"

    def __init__(self, config: TumorLensSegmenterConfig):
        super().__init__(config)
        cls, arguments = config.smp_arguments()
        network = cls(**arguments)
        self.encoder, self.decoder, self.segmentation_head = network.encoder, network.decoder, network.segmentation_head
        self.post_init()

    def _init_weights(self, module):
        pass  # every weight comes from the checkpoint

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> SemanticSegmenterOutput:
        return SemanticSegmenterOutput(logits=self.segmentation_head(self.decoder(self.encoder(pixel_values))))


def read_repo_json(name_or_path: str, filename: str) -> dict:
    path = cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False)
    return json.loads(open(path).read()) if path else {}


class TumorLensSegmentationPipeline(Pipeline):
    """image -> [{"label", "mask", "score"}], with the repo's own preprocessing and post-processing.
    `threshold=` overrides the tuned threshold for one call."""

    _load_image_processor = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        name = self.model.name_or_path
        if not isinstance(self.image_processor, TumorLensImageProcessor):
            self.image_processor = TumorLensImageProcessor(**read_repo_json(name, "preprocessor_config.json"))
        tuned = read_repo_json(name, "inference_config.json")
        self.threshold = float(tuned.get("threshold", 0.5))
        self.min_component_fraction = float(tuned.get("min_component_fraction", 0.0))
        self.tta_hflip = bool(tuned.get("tta_hflip", True))

    def _sanitize_parameters(self, threshold: float | None = None, timeout: float | None = None, **kwargs):
        preprocess = {"timeout": timeout} if timeout is not None else {}
        return preprocess, {}, {"threshold": threshold}

    def preprocess(self, image, timeout: float | None = None):
        image = load_image(image, timeout=timeout)
        inputs = self.image_processor(image, return_letterbox=True)
        return {"pixel_values": inputs["pixel_values"], "letterbox": inputs["letterbox"][0]}

    def _forward(self, inputs):
        x = inputs["pixel_values"].to(self.model.device, self.model.dtype)
        logits = self.model(pixel_values=x).logits
        if self.tta_hflip:  # the average with the mirrored view, as the model was tuned with
            logits = (logits + self.model(pixel_values=x.flip(3)).logits.flip(3)) / 2
        return {"probability": torch.sigmoid(logits[0, 0].float()).cpu(), "letterbox": inputs["letterbox"]}

    def postprocess(self, outputs, threshold: float | None = None):
        prob = restore_map(outputs["probability"], outputs["letterbox"])
        threshold = self.threshold if threshold is None else float(threshold)
        mask = clean_mask(prob >= threshold, int(self.min_component_fraction * prob.size))
        if not mask.any():
            return []
        return [{"label": TUMOR_LABEL, "mask": Image.fromarray(mask.astype(np.uint8) * 255),
                 "score": float(prob[mask].mean())}]
