"""PaDiM (Defard et al., 2020): one multivariate Gaussian per patch position.

* Embedding: the backbone's selected feature maps, each restricted to a fixed,
  seeded random subset of channels (``n_features`` over all layers; selecting
  before upsampling is equivalent and cheaper), upsampled (nearest, as in the
  reference implementation) to the first layer's resolution and concatenated.
* Fit: streaming, in the memory of the fitted model. Per position we accumulate the
  sum of ``x - K`` (float64) and of ``(x - K)(x - K)^T`` as packed upper triangles in
  float32 (``K`` = a per-position shift taken from the first batch: the shifted-data
  algorithm, so the float32 sums hold small centred values and nothing cancels when
  the mean is taken out; a test holds them to float64 results). Embeddings are never
  all held in memory. Covariance = unbiased estimate + 0.01 I, inverted in float64 with
  batched Cholesky (``torch.linalg.cholesky`` + ``torch.cholesky_inverse``), a small
  chunk of positions at a time, and written back as float32 packed upper triangles
  into the same buffer: a fitted model is that one (P, d(d+1)/2) tensor plus the means
  (83 MB for MVTec's 4096 positions x 100 features, a quarter of a dense float64
  (P, d, d) tensor); the statistics need only a few MB beyond it.
* Score: Mahalanobis distance per position (batched matmul), bilinearly upsampled
  to the image size, Gaussian blur sigma = 4; image score = max of the map.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .backbones import Backbone, backbone_settings, check_backbone
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

    ``sum_outer`` is ONE float32 tensor of packed upper triangles (P, d(d+1)/2);
    :meth:`invert_in_place` later turns it into the packed inverse covariances, so the
    statistics never take more memory than the fitted model. Positions are processed
    in chunks of ``chunk`` so that every temporary stays a few MB.
    """

    def __init__(self, n_positions: int, dim: int, device: torch.device | str = "cpu", chunk: int = 64):
        self.n = 0
        self.dim = dim
        self.n_positions = n_positions
        self.chunk = chunk
        self.flat_idx = triu_flat_index(dim, device=device)
        self.gather_idx = symmetric_gather_index(dim, device=device)
        self.shift: torch.Tensor | None = None
        self.sum = torch.zeros(n_positions, dim, dtype=torch.float64, device=device)
        self.sum_outer: torch.Tensor | None = torch.zeros(
            n_positions, len(self.flat_idx), dtype=torch.float32, device=device)

    def _chunks(self):
        for s in range(0, self.n_positions, self.chunk):
            yield s, min(self.n_positions, s + self.chunk)

    def update(self, x: torch.Tensor) -> None:
        if self.sum_outer is None:
            raise RuntimeError("the statistics were already turned into inverse covariances")
        x = x.to(self.sum.device, torch.float32)
        if self.shift is None:
            self.shift = x.double().mean(dim=0).float()
        for s, e in self._chunks():
            xc = (x[:, s:e] - self.shift[s:e]).transpose(0, 1)  # (c, B, d)
            self.sum[s:e] += xc.sum(dim=1, dtype=torch.float64)
            outer = torch.bmm(xc.transpose(1, 2), xc)  # (c, d, d)
            self.sum_outer[s:e] += outer.view(e - s, -1).index_select(1, self.flat_idx)
        self.n += x.shape[0]

    def mean(self) -> torch.Tensor:
        return self.shift.double() + self.sum / self.n

    def covariance_chunk(self, s: int, e: int) -> torch.Tensor:
        """Unbiased covariance (float64, full matrices) of positions ``s:e``."""
        if self.n < 2:
            raise ValueError("PaDiM needs at least 2 training images")
        if self.sum_outer is None:
            raise RuntimeError("the statistics were already turned into inverse covariances")
        m = self.sum[s:e] / self.n
        cov = unpack_symmetric(self.sum_outer[s:e].double(), self.dim, self.gather_idx)
        cov.baddbmm_(m.unsqueeze(2), m.unsqueeze(1), alpha=-self.n)  # in place: no chunk-sized temporaries
        return cov.div_(self.n - 1)

    def covariance(self) -> torch.Tensor:
        return torch.cat([self.covariance_chunk(s, e) for s, e in self._chunks()])

    def invert_in_place(self, regularisation: float) -> torch.Tensor:
        """Packed float32 inverses of (covariance + ``regularisation`` I), written over the sums.

        Returns the buffer; the accumulator cannot be updated afterwards.
        """
        for s, e in self._chunks():
            cov = self.covariance_chunk(s, e)
            cov.diagonal(dim1=1, dim2=2).add_(regularisation)
            inv = torch.cholesky_inverse(torch.linalg.cholesky(cov))
            del cov
            self.sum_outer[s:e] = inv.reshape(e - s, -1).index_select(1, self.flat_idx)
        packed, self.sum_outer = self.sum_outer, None
        return packed


class Padim:
    """PaDiM model on top of a frozen :class:`Backbone`."""

    IMAGE_SCORE = "the maximum of the anomaly map (the blurred Mahalanobis distances of the patch positions)"

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
        self.inv_cov: torch.Tensor | None = None  # (P, d(d+1)/2) float32, packed upper triangles
        self.grid: tuple[int, int] | None = None
        # How many images go through the backbone at once, and how many images' embeddings are
        # held together (one statistics update at fit, one Mahalanobis pass at inference, each
        # of which walks over every position's d x d matrix once, so a group amortises that).
        # Results do not depend on either. On the CPU one image per forward is as fast per
        # image as larger batches and keeps the activations small (Lite0 at 256 px: +47 MB at 1,
        # +81 MB at 2, +214 MB at 8); a group of 8 embeddings is 13 MB.
        on_cpu = backbone.device.type == "cpu"
        self.max_backbone_batch = 1 if on_cpu else 32
        self.embedding_batch = 8 if on_cpu else 32

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images (uint8 pixels or normalised floats) -> embeddings (B, P, d) float32."""
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

    def embed_groups(self, images: torch.Tensor):
        """Yield the embeddings (G, P, d) of ``images`` in groups of ``embedding_batch``."""
        for group in images.split(self.embedding_batch):
            out = None
            for start in range(0, len(group), self.max_backbone_batch):
                emb = self.embed(group[start : start + self.max_backbone_batch])
                if out is None:
                    out = torch.empty((len(group), *emb.shape[1:]), dtype=emb.dtype, device=emb.device)
                out[start : start + len(emb)] = emb
            yield out

    @classmethod
    def from_config(cls, backbone: Backbone, config) -> "Padim":
        return cls(backbone, n_features=config.n_features, seed=config.seed, image_size=config.image_size)

    def fit(self, loader, val_loader=None, step: Callable[[float], None] | None = None) -> None:
        """Streaming fit over a loader of (images, idx); ``step(fraction done)`` after each batch.
        ``val_loader`` is not used (PaDiM has no training loop to stop)."""
        acc: GaussianAccumulator | None = None
        done = 0
        total = max(1, len(loader.dataset))
        for images, _ in loader:
            for emb in self.embed_groups(images):
                if acc is None:
                    acc = GaussianAccumulator(emb.shape[1], emb.shape[2], device=emb.device)
                acc.update(emb)
                del emb
            done += images.shape[0]
            if step:
                step(done / total)
        if acc is None:
            raise ValueError("PaDiM needs training images")
        self.mean = acc.mean().float()
        self.gather_idx = acc.gather_idx
        self.chunk = acc.chunk  # positions per Mahalanobis step: a 2.5 MB slice of unpacked matrices
        self.dim = acc.dim
        self.inv_cov = acc.invert_in_place(REGULARISATION)  # (P, d(d+1)/2) float32

    def state(self) -> dict:
        """Tensors + JSON-able settings of the fitted model (:meth:`load` rebuilds it)."""
        if self.mean is None:
            raise RuntimeError("PaDiM is not fitted")
        return {"tensors": {"mean": self.mean.cpu(), "inv_cov": self.inv_cov.cpu()},
                "settings": {"model": "padim", "n_features": self.n_features, "image_size": self.image_size,
                             "channel_indices": self.channel_indices, "grid": list(self.grid),
                             "dim": self.dim, "chunk": self.chunk, **backbone_settings(self.backbone)}}

    @classmethod
    def load(cls, state: dict, backbone: Backbone) -> "Padim":
        s = state["settings"]
        check_backbone(s, backbone)
        model = cls(backbone, n_features=s["n_features"], image_size=s["image_size"])
        idx = torch.tensor(s["channel_indices"], dtype=torch.long)
        model.channel_indices = idx.tolist()
        model.layer_idx, offset = [], 0
        for c in backbone.channels:
            model.layer_idx.append((idx[(idx >= offset) & (idx < offset + c)] - offset).to(backbone.device))
            offset += c
        model.dim, model.chunk, model.grid = s["dim"], s["chunk"], tuple(s["grid"])
        model.gather_idx = symmetric_gather_index(model.dim, device=backbone.device)
        model.mean = state["tensors"]["mean"].to(backbone.device)
        model.inv_cov = state["tensors"]["inv_cov"].to(backbone.device)
        return model

    def anomaly_maps(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Maps (B, S, S) and image scores (max of each map), each image on its own."""
        maps = self.predict(images)
        return maps, maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)

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
        if getattr(self, "inv_full", None) is not None:  # kept unpacked (see keep_unpacked)
            return self.inv_full[start:stop]
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
        out = []
        with torch.inference_mode():
            for emb in self.embed_groups(images):
                dist = self.mahalanobis(emb).reshape(-1, 1, *self.grid)
                del emb
                maps = F.interpolate(dist, size=(self.image_size, self.image_size), mode="bilinear",
                                     align_corners=False)
                out.append(gaussian_blur(maps, BLUR_SIGMA)[:, 0].float().cpu().numpy())
        return np.concatenate(out)

    # -- model packages (inference.engine.package) --------------------------------------------
    def package_state(self) -> dict[str, torch.Tensor]:
        """The fitted statistics: means, packed inverse covariances, channel subset, feature grid."""
        if self.mean is None or self.inv_cov is None:
            raise RuntimeError("PaDiM is not fitted")
        return {"mean": self.mean, "inv_cov": self.inv_cov,
                "channel_indices": torch.tensor(self.channel_indices, dtype=torch.long),
                "grid": torch.tensor(self.grid, dtype=torch.long)}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], config, backbone: Backbone) -> "Padim":
        """A fitted PaDiM from :meth:`package_state`; refuses statistics that do not fit these settings."""
        model = cls(backbone, n_features=config.n_features, seed=config.seed, image_size=config.image_size)
        channels = state["channel_indices"].tolist()
        if channels != model.channel_indices:
            raise ValueError(f"the stored channel subset ({len(channels)} channels) is not the one seed "
                             f"{config.seed} draws from this backbone's {sum(backbone.channels)} channels")
        model.embed(torch.zeros(1, 3, config.image_size, config.image_size, dtype=torch.uint8))
        grid = tuple(state["grid"].tolist())
        if grid != model.grid:
            raise ValueError(f"the statistics are for a {grid[0]}x{grid[1]} feature grid; this backbone at "
                             f"{config.image_size} px gives {model.grid[0]}x{model.grid[1]}")
        d = model.n_features
        n_positions = grid[0] * grid[1]
        if tuple(state["mean"].shape) != (n_positions, d) or tuple(state["inv_cov"].shape) != (n_positions, d * (d + 1) // 2):
            raise ValueError("the stored statistics' shapes do not match the feature grid and channel count")
        device = backbone.device
        model.mean = state["mean"].to(device, torch.float32)
        model.inv_cov = state["inv_cov"].to(device, torch.float32)
        model.dim, model.chunk = d, 64
        model.gather_idx = symmetric_gather_index(d, device=device)
        return model

    def keep_unpacked(self) -> None:
        """Hold the inverse covariances unpacked too (twice the packed memory: 164 MB at 256 px and
        100 features) so that scoring one image reads them once instead of unpacking them again:
        a deployed inspector's single-image latency falls by about 40 ms on the CPU. Same values."""
        self.inv_full = unpack_symmetric(self.inv_cov, self.dim, self.gather_idx).contiguous()
        self.chunk = 1024  # nothing to unpack per step: fewer, larger steps (temporaries ~B x 0.4 MB)
