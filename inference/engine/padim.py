"""PaDiM (Defard et al., 2020): one multivariate Gaussian per patch position.

* Embedding: the backbone's selected feature maps, each restricted to a fixed,
  seeded random subset of channels (``n_features`` over all layers; selecting
  before upsampling is equivalent and cheaper), upsampled (nearest, as in the
  reference implementation) to the first layer's resolution and concatenated.
* Fit: streaming. Per position we accumulate, in float64, the sum of ``x - K`` and
  of ``(x - K)(x - K)^T`` (symmetric: packed upper triangles) (``K`` = a per-position shift taken from the first
  batch, for numerical stability); embeddings are never all held in memory.
  Covariance = unbiased estimate + 0.01 I; inverted with batched Cholesky
  (``torch.linalg.cholesky`` + ``torch.cholesky_inverse``), position chunk by chunk,
  and kept as packed upper triangles in float32 (half of a dense (P, d, d) tensor).
* Score: Mahalanobis distance per position (batched matmul), bilinearly upsampled
  to the image size, Gaussian blur sigma = 4; image score = max of the map.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .backbones import Backbone
from .common import gaussian_blur

REGULARISATION = 0.01
BLUR_SIGMA = 4.0


def triu_flat_index(dim: int, device=None) -> torch.Tensor:
    """Flat indices (row*dim+col) of the upper triangle (diagonal included) of a dim x dim matrix."""
    iu = torch.triu_indices(dim, dim, device=device)
    return iu[0] * dim + iu[1]


def symmetric_gather_index(dim: int, device=None) -> torch.Tensor:
    """For every (row, col) of a dim x dim matrix, the packed upper-triangle index of (min, max)."""
    iu = torch.triu_indices(dim, dim)
    pos = torch.empty(dim, dim, dtype=torch.long)
    pos[iu[0], iu[1]] = torch.arange(iu.shape[1])
    pos[iu[1], iu[0]] = torch.arange(iu.shape[1])
    return pos.flatten().to(device)


def unpack_symmetric(packed: torch.Tensor, dim: int, gather_idx: torch.Tensor) -> torch.Tensor:
    """(n, dim*(dim+1)/2) packed upper triangles -> (n, dim, dim) symmetric matrices (one gather)."""
    return packed.index_select(1, gather_idx).view(packed.shape[0], dim, dim)


class GaussianAccumulator:
    """Streaming per-position mean / covariance of vectors ``x`` of shape (B, P, d).

    Sums are float64; the symmetric sums of outer products are stored as packed
    upper triangles in position chunks (half the memory of full matrices, and a
    chunk can be released as soon as it is consumed).
    """

    def __init__(self, n_positions: int, dim: int, device: torch.device | str = "cpu", chunk: int = 256):
        self.n = 0
        self.dim = dim
        self.n_positions = n_positions
        self.chunk = chunk
        self.flat_idx = triu_flat_index(dim, device=device)
        self.gather_idx = symmetric_gather_index(dim, device=device)
        self.shift: torch.Tensor | None = None
        self.sum = torch.zeros(n_positions, dim, dtype=torch.float64, device=device)
        self.sum_outer: list[torch.Tensor | None] = [
            torch.zeros(min(chunk, n_positions - s), len(self.flat_idx), dtype=torch.float64, device=device)
            for s in range(0, n_positions, chunk)
        ]

    def update(self, x: torch.Tensor) -> None:
        x = x.to(self.sum.device)
        if self.shift is None:
            self.shift = x.double().mean(dim=0)
        for ci, s in enumerate(range(0, self.n_positions, self.chunk)):
            e = min(self.n_positions, s + self.chunk)
            xc = (x[:, s:e].double() - self.shift[s:e]).transpose(0, 1)  # (c, B, d)
            self.sum[s:e] += xc.sum(dim=1)
            outer = torch.bmm(xc.transpose(1, 2), xc)  # (c, d, d)
            self.sum_outer[ci] += outer.reshape(e - s, -1).index_select(1, self.flat_idx)
        self.n += x.shape[0]

    def mean(self) -> torch.Tensor:
        return self.shift + self.sum / self.n

    def covariance_chunk(self, ci: int, release: bool = False) -> torch.Tensor:
        """Unbiased covariance (float64, full matrices) of position chunk ``ci``."""
        if self.n < 2:
            raise ValueError("PaDiM needs at least 2 training images")
        s = ci * self.chunk
        packed = self.sum_outer[ci]
        if release:
            self.sum_outer[ci] = None
        e = s + packed.shape[0]
        m = self.sum[s:e] / self.n
        so = unpack_symmetric(packed, self.dim, self.gather_idx)
        return (so - self.n * m.unsqueeze(2) * m.unsqueeze(1)) / (self.n - 1)

    def covariance(self) -> torch.Tensor:
        return torch.cat([self.covariance_chunk(ci) for ci in range(len(self.sum_outer))])


class Padim:
    """PaDiM model on top of a frozen :class:`Backbone`."""

    def __init__(self, backbone: Backbone, n_features: int = 100, seed: int = 0, image_size: int = 256):
        self.backbone = backbone
        self.image_size = image_size
        total = sum(backbone.channels)
        self.n_features = min(n_features, total)
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(total, generator=g)[: self.n_features].sort().values
        # split the global channel indices into per-layer local indices
        self.layer_idx: list[torch.Tensor] = []
        offset = 0
        for c in backbone.channels:
            sel = idx[(idx >= offset) & (idx < offset + c)] - offset
            self.layer_idx.append(sel.to(backbone.device))
            offset += c
        self.channel_indices = idx.tolist()
        self.mean: torch.Tensor | None = None  # (P, d) float32
        self.inv_cov: torch.Tensor | None = None  # (P, d, d) float32
        self.grid: tuple[int, int] | None = None
        # images per backbone forward: bounds activation memory, results do not depend on it
        self.max_backbone_batch = 8

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> embeddings (B, P, d) float32."""
        feats = self.backbone(images)
        size = feats[0].shape[-2:]
        parts = []
        for f, sel in zip(feats, self.layer_idx):
            if len(sel) == 0:
                continue
            f = f.index_select(1, sel)
            if f.shape[-2:] != size:
                f = F.interpolate(f, size=size, mode="nearest")
            parts.append(f)
        emb = torch.cat(parts, dim=1)  # (B, d, h, w)
        self.grid = (int(size[0]), int(size[1]))
        return emb.flatten(2).transpose(1, 2).contiguous().float()  # (B, P, d)

    def embed_batched(self, images: torch.Tensor) -> torch.Tensor:
        """:meth:`embed` with the backbone run on sub-batches of ``max_backbone_batch``."""
        return torch.cat([self.embed(sub) for sub in images.split(self.max_backbone_batch)])

    def fit(self, loader, step: Callable[[int], None] | None = None) -> None:
        """Streaming fit over a loader of (images, idx); ``step(n_done)`` after each batch."""
        acc: GaussianAccumulator | None = None
        done = 0
        for images, _ in loader:
            emb = self.embed_batched(images)
            if acc is None:
                acc = GaussianAccumulator(emb.shape[1], emb.shape[2], device=emb.device)
            acc.update(emb)  # one rank-B update per loader batch: packing cost amortised
            del emb
            done += images.shape[0]
            if step:
                step(done)
        if acc is None:
            raise ValueError("PaDiM needs training images")
        self._finalise(acc)

    def _finalise(self, acc: GaussianAccumulator) -> None:
        d = acc.dim
        self.mean = acc.mean().float()
        self.flat_idx = acc.flat_idx
        self.gather_idx = acc.gather_idx
        self.chunk = acc.chunk
        eye = torch.eye(d, dtype=torch.float64, device=acc.sum.device)
        # (P, d(d+1)/2) packed upper triangles, float32
        self.inv_cov = torch.empty(acc.n_positions, len(self.flat_idx), dtype=torch.float32, device=eye.device)
        for ci in range(len(acc.sum_outer)):
            s = ci * acc.chunk
            cov = acc.covariance_chunk(ci, release=True) + REGULARISATION * eye
            inv = torch.cholesky_inverse(torch.linalg.cholesky(cov))
            self.inv_cov[s : s + inv.shape[0]] = inv.reshape(inv.shape[0], -1).index_select(1, self.flat_idx)
        self.dim = d

    def describe(self) -> dict:
        return {"model": "padim", "n_features": self.n_features, "channel_indices": self.channel_indices,
                "feature_grid": list(self.grid) if self.grid else None, "layers": self.backbone.layer_names,
                "strides": self.backbone.strides, "weights": self.backbone.weights_source}

    def memory_bytes(self) -> int:
        """Bytes of the fitted parameters: mean (P, d) + packed inverse covariances."""
        if self.mean is None or self.inv_cov is None:
            return 0
        return self.mean.numel() * self.mean.element_size() + self.inv_cov.numel() * self.inv_cov.element_size()

    def inverse_covariance(self, start: int, stop: int) -> torch.Tensor:
        """Full (stop-start, d, d) float32 inverse covariances of a range of positions."""
        return unpack_symmetric(self.inv_cov[start:stop], self.dim, self.gather_idx)

    def mahalanobis(self, emb: torch.Tensor) -> torch.Tensor:
        """(B, P, d) -> distances (B, P); positions processed in chunks."""
        P = emb.shape[1]
        out = torch.empty(emb.shape[0], P, dtype=torch.float32, device=emb.device)
        for s in range(0, P, self.chunk):
            e = min(P, s + self.chunk)
            delta = (emb[:, s:e] - self.mean[s:e].unsqueeze(0)).transpose(0, 1)  # (c, B, d)
            m = torch.bmm(delta, self.inverse_covariance(s, e))
            out[:, s:e] = (m * delta).sum(-1).transpose(0, 1)
        return out.clamp_min(0).sqrt()

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """Anomaly maps (B, image_size, image_size) float32, each image independent."""
        if self.mean is None:
            raise RuntimeError("PaDiM is not fitted")
        with torch.inference_mode():
            # one Mahalanobis pass for the whole batch: inverse matrices unpacked once per batch
            dist = self.mahalanobis(self.embed_batched(images)).reshape(-1, 1, *self.grid)
            out = []
            for d in dist.split(self.max_backbone_batch):
                maps = F.interpolate(d, size=(self.image_size, self.image_size), mode="bilinear",
                                     align_corners=False)
                out.append(gaussian_blur(maps, BLUR_SIGMA)[:, 0].float().cpu().numpy())
        return np.concatenate(out)
