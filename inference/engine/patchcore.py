"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

Patch similarity without positions: one memory bank of defect-free patch features, shared by
every position, so a product need not be aligned image to image (PaDiM's per-position
Gaussians need that).

* Features: two mid-level backbone layers (strides 8 and 16 by default), each made "locally
  aware" by a 3x3 average pooling (stride 1, padding 1); the deeper map is upsampled (bilinear)
  to the shallower one's grid and the two are concatenated (Lite0: 40 + 112 = 152 dimensions on a
  32 x 32 grid at 256 px).
* Memory bank: every training patch (209 bottle images: 214 016 x 152 float32, 130 MB), reduced
  by greedy k-center coreset selection to ``coreset_ratio`` of it. The distances of the selection
  are computed on a seeded Gaussian random projection to ``projection_dim`` dimensions
  (Johnson-Lindenstrauss; the paper's speed-up), as ``|x|^2 - 2 x.c + |c|^2`` over chunks of
  rows, so beyond the bank only its projection and one chunk are held. The first centre is a
  seeded random patch.
* Map: per test patch, the Euclidean distance to its nearest bank entry (the bank searched in
  chunks of rows), bilinearly upsampled to the image size, Gaussian blur sigma 4.
* Image score: the paper's reweighting: ``s = (1 - softmax(d(m_test*, N_b(m*)))_0) * s*`` where
  ``s*`` is the largest patch distance, ``m_test*`` that patch, ``m*`` its nearest bank entry and
  ``N_b(m*)`` the ``num_neighbors`` bank entries nearest to ``m*`` (itself first). Where ``m*``
  sits in a dense part of the bank its neighbours are about as close to ``m_test*`` as ``m*``
  is, the softmax is near ``1/b`` and the score shrinks towards ``(1 - 1/b) s*``; where ``m*`` is
  isolated (a rare normal pattern) the others are much farther, the softmax's first entry is
  near 0 and the score stays near ``s*``. With ``num_neighbors = 1`` there is nothing to weigh
  against (the softmax of one distance is 1 and would zero every score): the score is ``s*``,
  as in anomalib.
* ``coreset_ratio >= 1`` keeps every training patch: the selection is skipped, not run to N.

Every image is scored on its own (batch-independent); fitting is deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .backbones import Backbone, backbone_settings, check_backbone
from .common import gaussian_blur, require_tensors

BLUR_SIGMA = 4.0
# Rows per step of the coreset distance updates and of the nearest-neighbour search: the largest
# temporary is CHUNK x bank (search) or CHUNK floats (selection).
CHUNK = 4096


def locally_aware_features(feats: list[torch.Tensor]) -> torch.Tensor:
    """(B, C_k, h_k, w_k) maps -> (B, sum C_k, h_0, w_0): 3x3 neighbourhood means, upsampled and concatenated."""
    size = feats[0].shape[-2:]
    parts = []
    for f in feats:
        f = F.avg_pool2d(f.float(), kernel_size=3, stride=1, padding=1, count_include_pad=False)
        if f.shape[-2:] != size:
            f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
        parts.append(f)
    return torch.cat(parts, dim=1)


def greedy_coreset(features: torch.Tensor, n_select: int, projection_dim: int | None, seed: int,
                   chunk: int = CHUNK, step: Callable[[float], None] | None = None) -> torch.Tensor:
    """Indices of a greedy k-center coreset of ``features`` (N, d): each new centre is the point
    farthest from all chosen ones. Distances on a seeded Gaussian random projection when
    ``projection_dim`` is smaller than d."""
    n, d = features.shape
    n_select = max(1, min(int(n_select), n))
    gen = torch.Generator().manual_seed(seed)
    if projection_dim and projection_dim < d:
        proj = torch.randn(d, projection_dim, generator=gen) / projection_dim ** 0.5
        x = torch.empty(n, projection_dim, dtype=torch.float32, device=features.device)
        proj = proj.to(features.device)
        for s in range(0, n, chunk):
            torch.mm(features[s:s + chunk], proj, out=x[s:s + chunk])
    else:
        x = features
    sq = (x * x).sum(1)
    min_dist = torch.full((n,), float("inf"), dtype=torch.float32, device=x.device)
    selected = torch.empty(n_select, dtype=torch.long)
    current = int(torch.randint(n, (1,), generator=gen))
    dots = torch.empty(n, dtype=torch.float32, device=x.device)
    for k in range(n_select):
        selected[k] = current
        c = x[current]
        torch.mv(x, c, out=dots)
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, and keep the smaller distance to any centre
        dist = dots.mul_(-2).add_(sq).add_(sq[current])
        torch.minimum(min_dist, dist, out=min_dist)
        current = int(torch.argmax(min_dist))
        if step and k % 256 == 0:
            step(k / n_select)
    return selected


def nearest(queries: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor, k: int = 1,
            chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distances (n, k) and indices (n, k) of each query's ``k`` nearest bank rows,
    the bank searched ``chunk`` rows at a time (a running top-k)."""
    q_sq = (queries * queries).sum(1, keepdim=True)
    best_d = best_i = None
    for s in range(0, bank.shape[0], chunk):
        b = bank[s:s + chunk]
        d2 = torch.addmm(q_sq + bank_sq[s:s + chunk].unsqueeze(0), queries, b.t(), alpha=-2.0)
        kk = min(k, d2.shape[1])
        val, idx = torch.topk(d2, kk, dim=1, largest=False)
        idx = idx + s
        if best_d is None:
            best_d, best_i = val, idx
        else:
            val, sel = torch.topk(torch.cat([best_d, val], 1), min(k, best_d.shape[1] + kk), dim=1, largest=False)
            best_i = torch.gather(torch.cat([best_i, idx], 1), 1, sel)
            best_d = val
    return best_d.clamp_min(0).sqrt(), best_i


class PatchCore:
    """PatchCore on top of a frozen :class:`Backbone` (use two mid-level layers)."""

    IMAGE_SCORE = ("the paper's reweighted nearest-neighbour distance of the most anomalous patch: its "
                   "distance to the nearest memory-bank entry times 1 - softmax of its distances to that "
                   "entry's num_neighbors nearest bank entries (the distance itself when num_neighbors = 1), "
                   "not the maximum of the blurred map")

    def __init__(self, backbone: Backbone, coreset_ratio: float = 0.01, projection_dim: int = 64,
                 num_neighbors: int = 9, seed: int = 0, image_size: int = 256):
        if not coreset_ratio > 0:
            raise ValueError(f"PatchCore's coreset_ratio must be above 0 (1 keeps every patch), not {coreset_ratio}")
        if int(num_neighbors) < 1:
            raise ValueError(f"PatchCore's num_neighbors must be at least 1, not {num_neighbors}")
        if int(projection_dim) < 0:
            raise ValueError(f"PatchCore's projection_dim must be 0 (none) or more, not {projection_dim}")
        self.backbone = backbone
        self.coreset_ratio = float(coreset_ratio)
        self.projection_dim = int(projection_dim)
        self.num_neighbors = int(num_neighbors)
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.bank: torch.Tensor | None = None  # (M, d) float32
        self.bank_sq: torch.Tensor | None = None
        self.grid: tuple[int, int] | None = None
        self.n_patches = 0

    @classmethod
    def from_config(cls, backbone: Backbone, config) -> "PatchCore":
        return cls(backbone, coreset_ratio=config.coreset_ratio, projection_dim=config.projection_dim,
                   num_neighbors=config.num_neighbors, seed=config.seed, image_size=config.image_size)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> patch features (B, P, d) float32."""
        f = locally_aware_features(self.backbone(images))
        self.grid = (int(f.shape[-2]), int(f.shape[-1]))
        return f.flatten(2).transpose(1, 2).contiguous()

    def fit(self, loader, val_loader=None, step: Callable[[float], None] | None = None) -> None:
        """Collect every training patch (one image per forward), then select the coreset.
        ``val_loader`` is not used."""
        n_images = len(loader.dataset)
        bank = None
        row = 0
        for images, _ in loader:
            for b in range(images.shape[0]):
                emb = self.embed(images[b:b + 1])[0]
                if bank is None:
                    bank = torch.empty(n_images * emb.shape[0], emb.shape[1], dtype=torch.float32,
                                       device=emb.device)
                bank[row:row + len(emb)] = emb
                row += len(emb)
            if step:
                step(0.3 * row / len(bank))
        if bank is None:
            raise ValueError("PatchCore needs training images")
        self.n_patches = row
        n_select = max(1, int(round(self.coreset_ratio * row)))
        if n_select >= row:  # the whole bank: greedy selection of all N patches is O(N^2) for nothing
            self._set_bank(bank[:row].clone())
        else:
            idx = greedy_coreset(bank[:row], n_select, self.projection_dim, self.seed,
                                 step=(lambda f: step(0.3 + 0.7 * f)) if step else None)
            self._set_bank(bank[idx].clone())
        del bank
        if step:
            step(1.0)

    def _set_bank(self, bank: torch.Tensor) -> None:
        self.bank = bank.contiguous()
        self.bank_sq = (self.bank * self.bank).sum(1)

    def state(self) -> dict:
        """Tensors + JSON-able settings of the fitted model (:meth:`load` rebuilds it)."""
        if self.bank is None:
            raise RuntimeError("PatchCore is not fitted")
        return {"tensors": {"bank": self.bank.cpu()},
                "settings": {"model": "patchcore", "coreset_ratio": self.coreset_ratio,
                             "projection_dim": self.projection_dim, "num_neighbors": self.num_neighbors,
                             "seed": self.seed, "image_size": self.image_size, "grid": list(self.grid),
                             "training_patches": self.n_patches, **backbone_settings(self.backbone)}}

    @classmethod
    def load(cls, state: dict, backbone: Backbone) -> "PatchCore":
        s = state["settings"]
        check_backbone(s, backbone)
        model = cls(backbone, s["coreset_ratio"], s["projection_dim"], s["num_neighbors"], s["seed"], s["image_size"])
        model._restore(state["tensors"]["bank"], tuple(s["grid"]), s["training_patches"])
        return model

    def _restore(self, bank: torch.Tensor, grid: tuple[int, int], n_patches: int) -> None:
        """The fitted memory bank, checked against this backbone's feature width."""
        d = int(sum(self.backbone.channels))
        if bank.ndim != 2 or bank.shape[0] < 1 or bank.shape[1] != d:
            raise ValueError(f"the stored memory bank has shape {tuple(bank.shape)}; this backbone's layers "
                             f"give {d}-dimensional patch features")
        self.grid, self.n_patches = tuple(grid), int(n_patches)
        self._set_bank(bank.to(self.backbone.device, torch.float32))

    # -- model packages (inference.engine.package) --------------------------------------------
    def package_state(self) -> dict[str, torch.Tensor]:
        """The memory bank (and how many training patches it was chosen from)."""
        state = self.state()
        return {**state["tensors"],
                "training_patches": torch.tensor([state["settings"]["training_patches"]], dtype=torch.long)}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], config, backbone: Backbone) -> "PatchCore":
        """A fitted PatchCore from :meth:`package_state` and the run's settings; the feature grid is
        re-derived from the backbone at the run's image size."""
        require_tensors(state, ("bank", "training_patches"), "PatchCore")
        model = cls.from_config(backbone, config)
        with torch.inference_mode():
            model.embed(torch.zeros(1, 3, model.image_size, model.image_size, dtype=torch.uint8))
        model._restore(state["bank"], model.grid, int(state["training_patches"].reshape(-1)[0]))
        return model

    def anomaly_maps(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly maps (B, S, S) float32 and the reweighted image scores (B,), image by image."""
        if self.bank is None:
            raise RuntimeError("PatchCore is not fitted")
        size = self.image_size
        maps = np.empty((images.shape[0], size, size), dtype=np.float32)
        scores = np.empty(images.shape[0], dtype=np.float64)
        with torch.inference_mode():
            for b in range(images.shape[0]):
                emb = self.embed(images[b:b + 1])[0]  # (P, d)
                dist, idx = nearest(emb, self.bank, self.bank_sq, k=1)
                dist, idx = dist[:, 0], idx[:, 0]
                scores[b] = self._image_score(emb, dist, idx)
                m = F.interpolate(dist.view(1, 1, *self.grid), size=(size, size), mode="bilinear",
                                  align_corners=False)
                maps[b] = gaussian_blur(m, BLUR_SIGMA)[0, 0].cpu().numpy()
        return maps, scores

    def _image_score(self, emb, dist, idx) -> float:
        p = int(torch.argmax(dist))
        s_star = dist[p]
        nn_bank = self.bank[idx[p]].unsqueeze(0)
        k = min(self.num_neighbors, self.bank.shape[0])
        if k == 1:  # no neighbourhood to reweight by: the nearest distance itself
            return float(s_star)
        _, support = nearest(nn_bank, self.bank, self.bank_sq, k=k)  # m*'s neighbours, itself first
        d = torch.linalg.vector_norm(self.bank[support[0]] - emb[p].unsqueeze(0), dim=1)
        weight = 1.0 - torch.softmax(d.double(), 0)[0]
        return float(weight * s_star)

    def predict(self, images: torch.Tensor) -> np.ndarray:
        return self.anomaly_maps(images)[0]

    def memory_bytes(self) -> int:
        return 0 if self.bank is None else self.bank.numel() * self.bank.element_size()

    def describe(self) -> dict:
        return {"model": "patchcore", "layers": self.backbone.layer_names, "strides": self.backbone.strides,
                "weights": self.backbone.weights_source, "feature_dim": int(sum(self.backbone.channels)),
                "feature_grid": list(self.grid) if self.grid else None, "training_patches": self.n_patches,
                "memory_bank": int(self.bank.shape[0]) if self.bank is not None else 0,
                "coreset_ratio": self.coreset_ratio, "projection_dim": self.projection_dim,
                "num_neighbors": self.num_neighbors}
