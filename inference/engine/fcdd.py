"""FCDD: a fully convolutional one-class model whose output is its own explanation map.

A re-implementation (not the authors' code) after Liznerski, Ruff, Vandermeulen, Franks, Kloft and
Müller, "Explainable Deep One-Class Classification", ICLR 2021: a fully convolutional network maps
an image to a grid ``A(x) = sqrt(phi(x)^2 + 1) - 1`` (pseudo-Huber, >= 0), pulled towards 0 on
normal data and away from it on anomalies (hypersphere classification with outlier exposure).
Being fully convolutional, it scores a patch by what it looks like, wherever it lies: it needs no
aligned parts (``position_specific`` False), unlike the VAE attribution model.

* Features: the frozen backbone's 3x3-averaged layers on the stride-8 grid, standardised
  (as :mod:`.reconstruction`; the paper trains the upper layers of an ImageNet VGG11 instead).
* ``phi``: 3x3 conv (128) -> ReLU -> 3x3 conv (64) -> ReLU -> 1x1 conv (1): each grid cell sees
  5 x 5 cells (40 px at 256 px).
* Anomalies: the engine's synthetic defects (:mod:`.synthetic`: moved patches, foreign-texture
  blobs, scratches), made afresh from every training image in every epoch (seeded), with their
  exact masks, so the paper's semi-supervised objective with ground-truth maps applies
  (its eq. 3): per image ``mean((1 - Y) A) - log(1 - exp(-mean(Y A)))``, ``Y`` the mask's area
  share of each grid cell (0 for the normal images). Adam, ``epochs`` passes over the training
  images in seeded batches of 8 normal images and their 8 synthetic copies.
* Map: ``A`` upsampled bilinearly to the image size, Gaussian blur sigma 4 (the paper upsamples
  with a Gaussian kernel of the receptive field). Image score: the maximum of the map (the
  paper's is the mean of ``A``; measured in ``bench/attribution_study.py``, the mean misses the
  small defects of KolektorSDD and BSData: see the README).

Each image is scored on its own (batch-independent). The synthetic defects are made from the
training images only, never from test images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone, backbone_settings, check_backbone
from .common import gaussian_blur, load_module_tensors, require_tensors
from .geometry import area_fraction
from .reconstruction import grid_features
from .synthetic import synthetic_defects

BLUR_SIGMA = 4.0
IMAGE_BATCH = 8


def make_head(channels: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 64, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(64, 1, 1))


def pseudo_huber(phi: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(phi ** 2 + 1) - 1


def fcdd_loss(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FCDD's semi-supervised objective (Liznerski et al., eq. 3), mean over the batch: ``a`` the
    (B, 1, h, w) output, ``y`` the anomalous share of each cell (0 everywhere for a normal image)."""
    normal = ((1 - y) * a).mean((1, 2, 3))
    anomalous = (y * a).mean((1, 2, 3))
    has = (y.flatten(1).amax(1) > 0).float()
    # -log(1 - exp(-s)) = -log(-expm1(-s)); s > 0 kept away from 0, where it diverges
    push = -torch.log(-torch.expm1(-anomalous.clamp_min(1e-6)))
    return (normal + has * push).mean()


class Fcdd:
    """FCDD head on top of a frozen :class:`Backbone`."""

    IMAGE_SCORE = "the maximum of the anomaly map (the blurred FCDD output A(x))"

    def __init__(self, backbone: Backbone, epochs: int = 10, learning_rate: float = 2e-3, seed: int = 0,
                 image_size: int = 256):
        self.backbone = backbone
        self.epochs, self.learning_rate = int(epochs), float(learning_rate)
        self.seed, self.image_size = int(seed), int(image_size)
        self.grid_index = min(1, len(backbone.channels) - 1)
        self.channels = int(sum(backbone.channels))
        torch.manual_seed(self.seed)
        self.net = make_head(self.channels).to(backbone.device).eval()
        self.mean = torch.zeros(self.channels, device=backbone.device)
        self.std = torch.ones(self.channels, device=backbone.device)
        self.history: list[float] = []

    @classmethod
    def from_config(cls, backbone: Backbone, config) -> "Fcdd":
        return cls(backbone, epochs=config.epochs, learning_rate=config.learning_rate, seed=config.seed,
                   image_size=config.image_size)

    def _grid(self, images: torch.Tensor) -> torch.Tensor:
        return grid_features(self.backbone(images), self.grid_index)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return (self._grid(images) - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def output(self, f: torch.Tensor) -> torch.Tensor:
        """``A(x)`` (B, 1, h, w) of standardised features."""
        return pseudo_huber(self.net(f))

    def fit(self, loader, val_loader=None, step: Callable[[float], None] | None = None) -> None:
        """Cache the training images' features, then train against fresh synthetic defects every
        epoch; ``val_loader`` unused."""
        pictures, maps = [], []
        with torch.inference_mode():
            for images, _ in loader:
                for b in range(images.shape[0]):
                    pictures.append(images[b].permute(1, 2, 0).cpu().numpy())
                    maps.append(self._grid(images[b:b + 1]))
        if not maps:
            raise ValueError("the FCDD model needs training images")
        feats = torch.cat(maps)
        del maps
        pictures = np.stack(pictures)
        flat = feats.transpose(0, 1).reshape(self.channels, -1)
        self.mean = flat.double().mean(1).float()
        self.std = flat.double().std(1).clamp_min(1e-6).float()
        del flat
        feats.sub_(self.mean.view(1, -1, 1, 1)).div_(self.std.view(1, -1, 1, 1))
        grid = tuple(int(n) for n in feats.shape[-2:])
        if step:
            step(0.05)
        torch.manual_seed(self.seed)
        self.net = make_head(self.channels).to(self.backbone.device)
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.learning_rate, weight_decay=1e-6)
        n = len(feats)
        self.history = []
        for epoch in range(self.epochs):
            perm = torch.randperm(n, generator=gen)
            total = 0.0
            for s in range(0, n, IMAGE_BATCH):
                idx = perm[s:s + IMAGE_BATCH].numpy()
                made, masks, _, _ = synthetic_defects(pictures[idx], seed=self.seed * 100_003 + epoch * 1009 + s)
                with torch.inference_mode():
                    bad = self.features(torch.from_numpy(np.ascontiguousarray(made.transpose(0, 3, 1, 2))))
                y_bad = torch.from_numpy(np.stack([area_fraction(m, grid) for m in masks])).float()[:, None]
                x = torch.cat([feats[torch.from_numpy(idx)], bad.clone()])
                y = torch.cat([torch.zeros_like(y_bad), y_bad]).to(x.device)
                self.net.train()
                loss = fcdd_loss(self.output(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            self.history.append(total / n)
            if step:
                step(0.05 + 0.95 * (epoch + 1) / self.epochs)
        self.net.eval()
        if step:
            step(1.0)

    def anomaly_maps(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Maps (B, S, S) float32 and image scores (max of each map), image by image."""
        if not self.history:
            raise RuntimeError("the FCDD model is not fitted")
        size = self.image_size
        maps = np.empty((images.shape[0], size, size), dtype=np.float32)
        with torch.inference_mode():
            for b in range(images.shape[0]):
                a = self.output(self.features(images[b:b + 1]))
                m = F.interpolate(a, size=(size, size), mode="bilinear", align_corners=False)
                maps[b] = gaussian_blur(m, BLUR_SIGMA)[0, 0].cpu().numpy()
        return maps, maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)

    def predict(self, images: torch.Tensor) -> np.ndarray:
        return self.anomaly_maps(images)[0]

    def state(self) -> dict:
        if not self.history:
            raise RuntimeError("the FCDD model is not fitted")
        tensors = {f"net.{k}": v.detach().cpu() for k, v in self.net.state_dict().items()}
        tensors.update(mean=self.mean.cpu(), std=self.std.cpu())
        return {"tensors": tensors,
                "settings": {"model": "fcdd", "epochs": self.epochs, "learning_rate": self.learning_rate,
                             "seed": self.seed, "image_size": self.image_size, "history": self.history,
                             **backbone_settings(self.backbone)}}

    @classmethod
    def load(cls, state: dict, backbone: Backbone) -> "Fcdd":
        s, t = state["settings"], state["tensors"]
        check_backbone(s, backbone)
        model = cls(backbone, s["epochs"], s["learning_rate"], s["seed"], s["image_size"])
        model._restore(t, s["history"])
        return model

    def _restore(self, tensors: dict, history) -> None:
        """The trained head and feature standardisation, checked against this backbone's channels."""
        require_tensors(tensors, ("mean", "std"), "FCDD model")
        for name in ("mean", "std"):
            if tuple(tensors[name].shape) != (self.channels,):
                raise ValueError(f"the stored feature {name} has shape {tuple(tensors[name].shape)}; this "
                                 f"backbone's layers give {self.channels} channels")
        load_module_tensors(self.net, tensors, "net.", "FCDD network")
        self.net.eval()
        self.mean, self.std = (tensors[n].to(self.backbone.device, torch.float32) for n in ("mean", "std"))
        self.history = [float(v) for v in history]

    # -- model packages (inference.engine.package) --------------------------------------------
    def package_state(self) -> dict[str, torch.Tensor]:
        """Head weights, feature standardisation and the training losses."""
        return {**self.state()["tensors"], "history": torch.tensor(self.history, dtype=torch.float64)}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], config, backbone: Backbone) -> "Fcdd":
        """A trained model from :meth:`package_state` and the run's settings (position-free: any grid)."""
        require_tensors(state, ("history",), "FCDD model")
        model = cls.from_config(backbone, config)
        model._restore(state, state["history"].tolist())
        return model

    def memory_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.net.parameters())

    def describe(self) -> dict:
        return {"model": "fcdd", "method": "FCDD (Liznerski et al., ICLR 2021) on backbone features, trained "
                                           "against the engine's synthetic defects; re-implementation",
                "layers": self.backbone.layer_names, "strides": self.backbone.strides,
                "weights": self.backbone.weights_source, "feature_dim": self.channels,
                "epochs": self.epochs, "train_loss": self.history}
