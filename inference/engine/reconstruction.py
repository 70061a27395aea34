"""Feature reconstruction (after DFR: Shi, Yang and Qi, "Unsupervised anomaly segmentation via deep
feature regression", Neurocomputing 2021): an autoencoder trained on defect-free images rebuilds the
backbone's patch features through a narrow bottleneck; where it cannot, the image is anomalous.

* Features: the backbone's three layers (strides 4, 8, 16), each averaged over its 3x3
  neighbourhood, brought to the stride-8 grid (area pooling down, bilinear up) and concatenated
  (Lite0: 24 + 40 + 112 = 176 channels, 32 x 32 at 256 px), standardised per channel with the
  training features' mean and standard deviation.
* Autoencoder: 1x1 convolutions (an MLP on each feature vector) 176 -> 128 -> ``latent_dim`` ->
  128 -> 176 with ReLU, trained with Adam on the mean squared error over seeded random batches
  of 4096 training feature vectors (cached once: the backbone is frozen), ``epochs`` passes.
* Map: the squared reconstruction error summed over channels at each position, bilinearly
  upsampled to the image size, Gaussian blur sigma 4; image score = its maximum.

Why features and not pixels: measured against an image autoencoder with an SSIM error map
(``bench/reconstruction_choice.py``; numbers in the engine README). Each image is scored on its
own (batch-independent).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone, backbone_settings, check_backbone
from .common import gaussian_blur, load_module_tensors, require_tensors

BLUR_SIGMA = 4.0
FIBER_BATCH = 4096
HIDDEN = 128


def grid_features(feats: list[torch.Tensor], grid_index: int = 1) -> torch.Tensor:
    """3x3-averaged feature maps on the grid of ``feats[grid_index]``, concatenated."""
    size = tuple(int(n) for n in feats[grid_index].shape[-2:])
    parts = []
    for f in feats:
        f = F.avg_pool2d(f.float(), 3, stride=1, padding=1, count_include_pad=False)
        if f.shape[-2] > size[0]:
            factor = int(f.shape[-2]) // size[0]
            if tuple(f.shape[-2:]) == (factor * size[0], factor * size[1]):
                # A whole factor (any image size a multiple of the strides): the same block means as
                # adaptive pooling, in a form an ONNX export (onnx_export.ReconstructionGraph) can hold.
                f = F.avg_pool2d(f, factor)
            else:
                f = F.adaptive_avg_pool2d(f, size)
        elif f.shape[-2] < size[0]:
            f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
        parts.append(f)
    return torch.cat(parts, 1)


def make_autoencoder(channels: int, latent: int) -> nn.Module:
    hidden = max(latent, min(HIDDEN, channels))
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, latent, 1), nn.ReLU(),
        nn.Conv2d(latent, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1),
    )


class FeatureReconstruction:
    """Feature-reconstruction autoencoder on top of a frozen :class:`Backbone`."""

    IMAGE_SCORE = "the maximum of the anomaly map (the blurred squared feature-reconstruction error)"

    def __init__(self, backbone: Backbone, latent_dim: int = 32, epochs: int = 10, learning_rate: float = 2e-3,
                 seed: int = 0, image_size: int = 256):
        self.backbone = backbone
        self.latent_dim, self.epochs, self.learning_rate = int(latent_dim), int(epochs), float(learning_rate)
        self.seed, self.image_size = int(seed), int(image_size)
        self.grid_index = min(1, len(backbone.channels) - 1)
        channels = sum(backbone.channels)
        torch.manual_seed(self.seed)
        self.net = make_autoencoder(channels, self.latent_dim).to(backbone.device).eval()
        self.mean = torch.zeros(channels, device=backbone.device)
        self.std = torch.ones(channels, device=backbone.device)
        self.history: list[float] = []
        self.grid: tuple[int, int] | None = None

    @classmethod
    def from_config(cls, backbone: Backbone, config) -> "FeatureReconstruction":
        return cls(backbone, latent_dim=config.latent_dim, epochs=config.epochs,
                   learning_rate=config.learning_rate, seed=config.seed, image_size=config.image_size)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> standardised features (B, C, h, w)."""
        f = grid_features(self.backbone(images), self.grid_index)
        self.grid = (int(f.shape[-2]), int(f.shape[-1]))
        return (f - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def fit(self, loader, val_loader=None, step: Callable[[float], None] | None = None) -> None:
        """Cache the training features (one image per forward), then train; ``val_loader`` unused."""
        chunks = []
        for images, _ in loader:
            for b in range(images.shape[0]):
                f = grid_features(self.backbone(images[b:b + 1]), self.grid_index)
                chunks.append(f[0].flatten(1).t().contiguous())  # (h*w, C)
        if not chunks:
            raise ValueError("the reconstruction model needs training images")
        fibers = torch.cat(chunks)
        del chunks
        self.mean = fibers.double().mean(0).float()
        self.std = fibers.double().std(0).clamp_min(1e-6).float()
        fibers.sub_(self.mean).div_(self.std)
        if step:
            step(0.1)
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.learning_rate)
        steps = math.ceil(fibers.shape[0] / FIBER_BATCH)
        self.net.train()
        for epoch in range(self.epochs):
            perm = torch.randperm(fibers.shape[0], generator=gen).to(fibers.device)
            total = 0.0
            for s in range(steps):
                x = fibers[perm[s * FIBER_BATCH:(s + 1) * FIBER_BATCH]][:, :, None, None]
                loss = F.mse_loss(self.net(x), x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(x)
            self.history.append(total / fibers.shape[0])
            if step:
                step(0.1 + 0.9 * (epoch + 1) / self.epochs)
        self.net.eval()
        if step:
            step(1.0)

    def anomaly_maps(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Maps (B, S, S) float32 and image scores (max of each map), image by image."""
        size = self.image_size
        maps = np.empty((images.shape[0], size, size), dtype=np.float32)
        with torch.inference_mode():
            for b in range(images.shape[0]):
                f = self.features(images[b:b + 1])
                err = ((self.net(f) - f) ** 2).sum(1, keepdim=True)
                m = F.interpolate(err, size=(size, size), mode="bilinear", align_corners=False)
                maps[b] = gaussian_blur(m, BLUR_SIGMA)[0, 0].cpu().numpy()
        return maps, maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)

    def predict(self, images: torch.Tensor) -> np.ndarray:
        return self.anomaly_maps(images)[0]

    def state(self) -> dict:
        if not self.history:
            raise RuntimeError("the reconstruction model is not fitted")
        tensors = {f"net.{k}": v.detach().cpu() for k, v in self.net.state_dict().items()}
        tensors.update(mean=self.mean.cpu(), std=self.std.cpu())
        return {"tensors": tensors,
                "settings": {"model": "reconstruction", "latent_dim": self.latent_dim, "epochs": self.epochs,
                             "learning_rate": self.learning_rate, "seed": self.seed, "image_size": self.image_size,
                             "history": self.history, **backbone_settings(self.backbone)}}

    @classmethod
    def load(cls, state: dict, backbone: Backbone) -> "FeatureReconstruction":
        s, t = state["settings"], state["tensors"]
        check_backbone(s, backbone)
        model = cls(backbone, s["latent_dim"], s["epochs"], s["learning_rate"], s["seed"], s["image_size"])
        model._restore(t, s["history"])
        return model

    def _restore(self, tensors: dict, history) -> None:
        """The trained autoencoder and feature standardisation, checked against this backbone's channels."""
        require_tensors(tensors, ("mean", "std"), "feature-reconstruction model")
        load_module_tensors(self.net, tensors, "net.", "autoencoder")
        self.net.eval()
        channels = int(sum(self.backbone.channels))
        for name in ("mean", "std"):
            if tuple(tensors[name].shape) != (channels,):
                raise ValueError(f"the stored feature {name} has shape {tuple(tensors[name].shape)}; this "
                                 f"backbone's layers give {channels} channels")
        self.mean, self.std = (tensors[n].to(self.backbone.device, torch.float32) for n in ("mean", "std"))
        self.history = [float(v) for v in history]

    # -- model packages (inference.engine.package) --------------------------------------------
    def package_state(self) -> dict[str, torch.Tensor]:
        """Autoencoder weights, feature standardisation and the training losses."""
        return {**self.state()["tensors"], "history": torch.tensor(self.history, dtype=torch.float64)}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], config, backbone: Backbone) -> "FeatureReconstruction":
        """A trained model from :meth:`package_state` and the run's settings; the feature grid is
        re-derived from the backbone at the run's image size."""
        require_tensors(state, ("history",), "feature-reconstruction model")
        model = cls.from_config(backbone, config)
        model._restore(state, state["history"].tolist())
        with torch.inference_mode():
            model.features(torch.zeros(1, 3, model.image_size, model.image_size, dtype=torch.uint8))
        return model

    def memory_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.net.parameters())

    def describe(self) -> dict:
        return {"model": "reconstruction", "variant": "feature reconstruction (1x1 autoencoder)",
                "layers": self.backbone.layer_names, "strides": self.backbone.strides,
                "weights": self.backbone.weights_source, "feature_dim": int(sum(self.backbone.channels)),
                "latent_dim": self.latent_dim, "feature_grid": list(self.grid) if self.grid else None,
                "epochs": self.epochs, "train_loss": self.history}
