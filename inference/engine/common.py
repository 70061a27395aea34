"""Small shared helpers (blur, memory measurement, seeding)."""

from __future__ import annotations

import random
import resource
import sys

import numpy as np
import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Normalised 1-D Gaussian, size 2*int(4*sigma+0.5)+1 (as anomalib / scipy truncate=4)."""
    radius = int(4.0 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W) maps with reflect padding."""
    k = gaussian_kernel1d(sigma, maps.dtype, maps.device)
    r = (len(k) - 1) // 2
    h, w = maps.shape[-2:]
    if r >= min(h, w):  # reflect padding needs pad < size; fall back to replicate
        mode = "replicate"
    else:
        mode = "reflect"
    x = F.pad(maps, (r, r, 0, 0), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, r, r), mode=mode)
    return F.conv2d(x, k.view(1, 1, -1, 1))


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
