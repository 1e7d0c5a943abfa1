"""Batched augmentation in torch, image and mask together, on whatever device trains.
Doing it on whole batches in the training process keeps both CPU cores on the model instead
of on per-sample worker processes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    hflip: float = 0.5
    vflip: float = 0.0
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.06
    affine_p: float = 0.7
    brightness: float = 0.15
    contrast: float = 0.15
    gamma: tuple[float, float] = (0.8, 1.25)
    noise_std: float = 0.03
    noise_p: float = 0.3


def random_crops(images: torch.Tensor, masks: torch.Tensor | None, size: int, g: torch.Generator,
                 fg_fraction: float = 0.33):
    """Crop `size` squares; a `fg_fraction` share are centred on a random foreground pixel
    (nnU-Net's oversampling), so small tumors are not drowned by background."""
    n, h, w = images.shape[0], images.shape[1], images.shape[2]
    if size >= h and size >= w:
        return images, masks
    ys = torch.randint(0, h - size + 1, (n,), generator=g)
    xs = torch.randint(0, w - size + 1, (n,), generator=g)
    if masks is not None:
        force = torch.rand(n, generator=g) < fg_fraction
        for i in torch.nonzero(force).flatten().tolist():
            fg = torch.nonzero(masks[i])
            if len(fg):
                cy, cx = fg[torch.randint(0, len(fg), (1,), generator=g).item()].tolist()
                ys[i] = min(max(cy - size // 2, 0), h - size)
                xs[i] = min(max(cx - size // 2, 0), w - size)
    out_i = torch.stack([images[i, y:y + size, x:x + size] for i, (y, x) in enumerate(zip(ys.tolist(), xs.tolist()))])
    out_m = None
    if masks is not None:
        out_m = torch.stack([masks[i, y:y + size, x:x + size] for i, (y, x) in enumerate(zip(ys.tolist(), xs.tolist()))])
    return out_i, out_m


def augment(x: torch.Tensor, mask: torch.Tensor | None, cfg: AugmentConfig, g: torch.Generator):
    """x: N x 3 x H x W float in [0, 1]; mask: N x 1 x H x W float 0/1 or None. Same geometry for both."""
    n = x.shape[0]
    dev = x.device

    def rand(*shape):
        return torch.rand(*shape, generator=g).to(dev)

    # flips
    for dim, p in ((3, cfg.hflip), (2, cfg.vflip)):
        if p > 0:
            flip = rand(n) < p
            if flip.any():
                x = torch.where(flip.view(n, 1, 1, 1), x.flip(dim), x)
                if mask is not None:
                    mask = torch.where(flip.view(n, 1, 1, 1), mask.flip(dim), mask)
    # small rotation / scale / translation, one grid for image and mask
    if cfg.affine_p > 0:
        use = (rand(n) < cfg.affine_p).float()
        ang = (rand(n) * 2 - 1) * math.radians(cfg.rotate_deg) * use
        scale = 1 + (cfg.scale[0] + rand(n) * (cfg.scale[1] - cfg.scale[0]) - 1) * use
        tx, ty = ((rand(n) * 2 - 1) * cfg.translate * use for _ in range(2))
        cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if mask is not None:
            mask = (F.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5).float()
    # intensity: brightness, contrast, gamma, noise (image only)
    b = (rand(n, 1, 1, 1) * 2 - 1) * cfg.brightness
    c = 1 + (rand(n, 1, 1, 1) * 2 - 1) * cfg.contrast
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * c + mean + b).clamp(0, 1)
    lo, hi = cfg.gamma
    gam = torch.exp(math.log(lo) + rand(n, 1, 1, 1) * (math.log(hi) - math.log(lo)))
    x = x.clamp_min(1e-6) ** gam
    if cfg.noise_p > 0:
        noisy = (rand(n, 1, 1, 1) < cfg.noise_p).float()
        noise = torch.randn(x.shape, generator=g).to(dev) * cfg.noise_std * noisy
        x = (x + noise).clamp(0, 1)
    return x, mask
