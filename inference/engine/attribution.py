"""Attribution map: gradient attributions of a variational autoencoder trained on defect-free images.

A re-implementation (not the authors' code) after Liu, Li, Wu, Radke, Karanam, Suen and Camps,
"Towards Visually Explaining Variational Autoencoders", CVPR 2020: a VAE learns normal data and
a test image's anomaly map is an attribution, computed by backpropagation, of that VAE.

What the map explains is the setting ``attribution_target`` (its vocabulary:
``registry.ATTRIBUTION_TARGETS``). Image AUROC on the whole test folder, 256 px, 10 epochs,
seed 0 (``bench/attribution_study.py``; bottle / KolektorSDD / BSData / a part moved and rotated
on a backdrop; the README has pixel AUROC and AUPRO too):

* ``elbo`` (default): the VAE's anomaly score, its negative ELBO with ``z = mu``
  (squared reconstruction error + KL), attributed to the features it reads by gradient x input
  (``|sum_c x_c dL/dx_c|`` per position: each activation weighted by its gradient, as Grad-CAM
  weights activations, but per position instead of pooled). 0.996 / 0.645 / 0.885 / 0.455;
  the only attribution above chance on every real set.
* ``latent`` (the paper's equations): each dimension ``z_i`` of the latent mean is explained with
  Grad-CAM on an encoder feature map ``A`` (``alpha_ik`` = spatial mean of ``d z_i / d A_k``,
  ``M_i = ReLU(sum_k alpha_ik A_k)``) and ``M = mean_i M_i``. 0.556 / 0.474 / 0.476 / 0.491.
* ``latent_sum`` (the authors' released code, expVAE ``gradcam.py``): one backward of the summed
  latent mean, the gradient scaled to unit RMS, ``M = |sum_k alpha_k A_k|`` (absolute value, not
  ReLU). 0.721 / 0.477 / 0.625 / 0.542.
* ``latent_deviation``: Grad-CAM (ReLU) of ``||mu(x) - mean_train mu||^2``, the latent code's
  departure from the training images' mean. 0.525 / 0.598 / 0.737 / 0.348.
* ``residual``: the VAE's own squared feature reconstruction error, no attribution: the baseline
  an attribution has to beat. 0.997 / 0.714 / 0.889 / 0.511: it beats every attribution on
  every set, so the attribution family is represented by FCDD (:mod:`.fcdd`), whose map is its
  output, and this model is kept for comparison.

On the Grad-CAM targets the latent code's evidence does not lie on the defects (pixel AUROC
0.29-0.72 on the real sets); a fully connected latent over the grid learns where things are, so
on parts that move no target of this model scores above chance.

Differences from the paper, for CPU speed: the VAE models the frozen backbone's features
(stride-8 grid of 3x3-averaged features from strides 4, 8 and 16, standardised; as in
:mod:`.reconstruction`) instead of raw pixels; the encoder is 1x1 conv -> 3x3 conv (the
Grad-CAM layer, full grid) -> two stride-2 3x3 convs -> linear to the latent mean and
log-variance (``latent_dim``); the decoder mirrors it. Loss: squared feature error + KL, Adam,
``epochs`` passes over the training images in seeded batches of 8. Map: the attention
upsampled bilinearly to the image size, Gaussian blur sigma 4; image score = its maximum.
Each image is explained on its own (batch-independent).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone, backbone_settings, check_backbone
from .common import gaussian_blur, load_module_tensors, require_tensors
from .reconstruction import grid_features
from .registry import ATTRIBUTION_TARGETS

BLUR_SIGMA = 4.0
WIDTH = 64
IMAGE_BATCH = 8
TARGETS = tuple(ATTRIBUTION_TARGETS)
GRADCAM_TARGETS = ("latent", "latent_sum", "latent_deviation")


class FeatureVAE(nn.Module):
    def __init__(self, channels: int, latent: int, grid: tuple[int, int]):
        super().__init__()
        self.grid = grid
        self.inner = (-(-grid[0] // 4), -(-grid[1] // 4))
        self.stem = nn.Sequential(nn.Conv2d(channels, WIDTH, 1), nn.ReLU(), nn.Conv2d(WIDTH, WIDTH, 3, padding=1),
                                  nn.ReLU())  # -> A, the Grad-CAM layer
        self.down = nn.Sequential(nn.Conv2d(WIDTH, WIDTH, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(WIDTH, 32, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten())
        flat = 32 * self.inner[0] * self.inner[1]
        self.mu = nn.Linear(flat, latent)
        self.logvar = nn.Linear(flat, latent)
        self.expand = nn.Linear(latent, flat)
        self.up = nn.Sequential(nn.ConvTranspose2d(32, WIDTH, 4, stride=2, padding=1), nn.ReLU(),
                                nn.ConvTranspose2d(WIDTH, WIDTH, 4, stride=2, padding=1), nn.ReLU(),
                                nn.Conv2d(WIDTH, channels, 1))

    def encode(self, x):
        a = self.stem(x)
        h = self.down(a)
        return a, self.mu(h), self.logvar(h).clamp(-10, 10)

    def decode(self, z):
        h = self.expand(z).view(len(z), 32, *self.inner)
        return self.up(h)[..., : self.grid[0], : self.grid[1]]


class VaeAttention:
    """VAE-attention model on top of a frozen :class:`Backbone`."""

    IMAGE_SCORE = "the maximum of the anomaly map (the blurred attribution of the VAE)"

    def __init__(self, backbone: Backbone, latent_dim: int = 32, epochs: int = 10, learning_rate: float = 2e-3,
                 seed: int = 0, image_size: int = 256, target: str = "elbo"):
        if target not in TARGETS:
            raise ValueError(f"attribution_target must be one of {', '.join(TARGETS)}, not {target!r}")
        self.target = target
        self.backbone = backbone
        self.latent_dim, self.epochs, self.learning_rate = int(latent_dim), int(epochs), float(learning_rate)
        self.seed, self.image_size = int(seed), int(image_size)
        self.grid_index = min(1, len(backbone.channels) - 1)
        self.channels = sum(backbone.channels)
        self.vae: FeatureVAE | None = None
        self.mean = self.std = None
        self.latent_mean: torch.Tensor | None = None  # mean of mu over the training images
        self.history: list[float] = []

    @classmethod
    def from_config(cls, backbone: Backbone, config) -> "VaeAttention":
        return cls(backbone, latent_dim=config.latent_dim, epochs=config.epochs,
                   learning_rate=config.learning_rate, seed=config.seed, image_size=config.image_size,
                   target=config.attribution_target)

    def _build(self, grid):
        torch.manual_seed(self.seed)
        self.vae = FeatureVAE(self.channels, self.latent_dim, tuple(grid)).to(self.backbone.device)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        f = grid_features(self.backbone(images), self.grid_index)
        return (f - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def fit(self, loader, val_loader=None, step: Callable[[float], None] | None = None) -> None:
        """Cache the training features (frozen backbone), then train the VAE; ``val_loader`` unused."""
        maps = []
        for images, _ in loader:
            for b in range(images.shape[0]):
                maps.append(grid_features(self.backbone(images[b:b + 1]), self.grid_index))
        if not maps:
            raise ValueError("the attribution model needs training images")
        feats = torch.cat(maps)
        del maps
        flat = feats.transpose(0, 1).reshape(self.channels, -1)
        self.mean = flat.double().mean(1).float()
        self.std = flat.double().std(1).clamp_min(1e-6).float()
        del flat
        feats.sub_(self.mean.view(1, -1, 1, 1)).div_(self.std.view(1, -1, 1, 1))
        self._build(feats.shape[-2:])
        if step:
            step(0.1)
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam(self.vae.parameters(), lr=self.learning_rate)
        self.vae.train()
        n = len(feats)
        for epoch in range(self.epochs):
            perm = torch.randperm(n, generator=gen)
            total = 0.0
            for s in range(0, n, IMAGE_BATCH):
                x = feats[perm[s:s + IMAGE_BATCH].to(feats.device)]
                _, mu, logvar = self.vae.encode(x)
                z = mu + torch.randn(mu.shape, generator=gen).to(mu.device) * torch.exp(0.5 * logvar)
                rec = ((self.vae.decode(z) - x) ** 2).sum((1, 2, 3))
                kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(1)
                loss = (rec + kl).mean() / x[0].numel()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(x)
            self.history.append(total / n)
            if step:
                step(0.1 + 0.9 * (epoch + 1) / self.epochs)
        self.vae.eval()
        with torch.inference_mode():
            self.latent_mean = torch.cat([self.vae.encode(feats[s:s + IMAGE_BATCH])[1]
                                          for s in range(0, n, IMAGE_BATCH)]).mean(0).clone()
        if step:
            step(1.0)

    def attention(self, f: torch.Tensor) -> torch.Tensor:
        """The attribution map (1, 1, h, w) of one image's standardised features."""
        return {"elbo": self.elbo_attribution, "latent": self.latent_gradcam, "latent_sum": self.latent_sum_gradcam,
                "latent_deviation": self.latent_deviation_gradcam, "residual": self.residual}[self.target](f)

    def residual(self, f: torch.Tensor) -> torch.Tensor:
        """``sum_c (decode(mu)_c - x_c)^2``: the VAE's own feature reconstruction error (the baseline)."""
        with torch.inference_mode():
            _, mu, _ = self.vae.encode(f)
            return ((self.vae.decode(mu) - f) ** 2).sum(1, keepdim=True)

    def _gradcam(self, f: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor]):
        """The Grad-CAM layer ``A`` and ``d score(mu) / d A`` for one image."""
        with torch.enable_grad():
            a, mu, _ = self.vae.encode(f.detach())
            (grad,) = torch.autograd.grad(score(mu), a)
        return a.detach(), grad

    def latent_sum_gradcam(self, f: torch.Tensor) -> torch.Tensor:
        """Liu et al.'s released code (expVAE ``gradcam.py``): one backward of the summed latent mean,
        the gradient scaled to unit RMS, ``alpha_k`` its spatial mean, ``M = |sum_k alpha_k A_k|``
        (absolute value, not ReLU). The code normalises over a batch; here over the one image."""
        a, grad = self._gradcam(f, lambda mu: mu.sum())
        grad = grad / (grad.pow(2).mean().sqrt() + 1e-5)
        return (grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True).abs()

    def latent_deviation_gradcam(self, f: torch.Tensor) -> torch.Tensor:
        """Grad-CAM (``ReLU(sum_k alpha_k A_k)``, gradients unscaled) of ``||mu(x) - mean_train mu||^2``:
        where the encoder's evidence for the latent code's departure from normal lies."""
        if self.latent_mean is None:
            raise RuntimeError("this model holds no training latent mean (fitted before it was kept); refit it")
        a, grad = self._gradcam(f, lambda mu: ((mu - self.latent_mean) ** 2).sum())
        return F.relu((grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))

    def elbo_attribution(self, f: torch.Tensor) -> torch.Tensor:
        """``|sum_c x_c dL/dx_c|``: the negative ELBO (z = mu) attributed to the features by gradient x input."""
        with torch.enable_grad():
            x = f.detach().clone().requires_grad_(True)
            _, mu, logvar = self.vae.encode(x)
            loss = ((self.vae.decode(mu) - x) ** 2).sum() - 0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum()
            (grad,) = torch.autograd.grad(loss, x)
        return (grad * x).sum(1, keepdim=True).abs().detach()

    def latent_gradcam(self, f: torch.Tensor) -> torch.Tensor:
        """Grad-CAM attention averaged over the latent mean's dimensions (Liu et al., eq. 1-2)."""
        with torch.enable_grad():
            f = f.detach().requires_grad_(False)
            a, mu, _ = self.vae.encode(f)
            total = torch.zeros_like(a[:, :1])
            for i in range(mu.shape[1]):
                (grad,) = torch.autograd.grad(mu[0, i], a, retain_graph=i + 1 < mu.shape[1])
                alpha = grad.mean((2, 3), keepdim=True)
                total += F.relu((alpha * a).sum(1, keepdim=True))
        return (total / mu.shape[1]).detach()

    def anomaly_maps(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if self.vae is None:
            raise RuntimeError("the attribution model is not fitted")
        size = self.image_size
        maps = np.empty((images.shape[0], size, size), dtype=np.float32)
        for b in range(images.shape[0]):
            with torch.inference_mode():
                f = self.features(images[b:b + 1])
            m = self.attention(f.clone())
            m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
            maps[b] = gaussian_blur(m, BLUR_SIGMA)[0, 0].cpu().numpy()
        return maps, maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)

    def predict(self, images: torch.Tensor) -> np.ndarray:
        return self.anomaly_maps(images)[0]

    def state(self) -> dict:
        if self.vae is None:
            raise RuntimeError("the attribution model is not fitted")
        tensors = {f"vae.{k}": v.detach().cpu() for k, v in self.vae.state_dict().items()}
        tensors.update(mean=self.mean.cpu(), std=self.std.cpu(), latent_mean=self.latent_mean.cpu())
        return {"tensors": tensors,
                "settings": {"model": "attribution", "attribution_target": self.target, "latent_dim": self.latent_dim, "epochs": self.epochs,
                             "learning_rate": self.learning_rate, "seed": self.seed, "image_size": self.image_size,
                             "grid": list(self.vae.grid), "history": self.history, **backbone_settings(self.backbone)}}

    @classmethod
    def load(cls, state: dict, backbone: Backbone) -> "VaeAttention":
        s, t = state["settings"], state["tensors"]
        check_backbone(s, backbone)
        model = cls(backbone, s["latent_dim"], s["epochs"], s["learning_rate"], s["seed"], s["image_size"],
                    s["attribution_target"])
        model._restore(t, s["grid"], s["history"])
        return model

    def _restore(self, tensors: dict, grid, history) -> None:
        """The trained VAE for a ``grid`` of features and the feature standardisation, checked
        against this backbone's channels (the VAE's linear layers fix the grid)."""
        # latent_mean: kept since the latent_deviation target; only that target needs it.
        needed = ("mean", "std", "latent_mean") if self.target == "latent_deviation" else ("mean", "std")
        require_tensors(tensors, needed, "VAE attribution model")
        if "latent_mean" in tensors and tuple(tensors["latent_mean"].shape) != (self.latent_dim,):
            raise ValueError(f"the stored latent mean has shape {tuple(tensors['latent_mean'].shape)}; "
                             f"the latent size is {self.latent_dim}")
        for name in ("mean", "std"):
            if tuple(tensors[name].shape) != (self.channels,):
                raise ValueError(f"the stored feature {name} has shape {tuple(tensors[name].shape)}; this "
                                 f"backbone's layers give {self.channels} channels")
        self._build(grid)
        load_module_tensors(self.vae, tensors, "vae.", f"VAE (for a {grid[0]}x{grid[1]} feature grid)")
        self.vae.eval()
        self.mean, self.std = (tensors[n].to(self.backbone.device, torch.float32) for n in ("mean", "std"))
        self.latent_mean = (tensors["latent_mean"].to(self.backbone.device, torch.float32)
                            if "latent_mean" in tensors else None)
        self.history = [float(v) for v in history]

    # -- model packages (inference.engine.package) --------------------------------------------
    def package_state(self) -> dict[str, torch.Tensor]:
        """VAE weights, feature standardisation and the training losses."""
        return {**self.state()["tensors"], "history": torch.tensor(self.history, dtype=torch.float64)}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], config, backbone: Backbone) -> "VaeAttention":
        """A trained model from :meth:`package_state` and the run's settings; the feature grid the
        VAE needs is re-derived from the backbone at the run's image size."""
        require_tensors(state, ("history",), "VAE attribution model")
        model = cls.from_config(backbone, config)
        blank = torch.zeros(1, 3, model.image_size, model.image_size, dtype=torch.uint8)
        grid = tuple(int(n) for n in grid_features(backbone(blank), model.grid_index).shape[-2:])
        model._restore(state, grid, state["history"].tolist())
        return model

    def memory_bytes(self) -> int:
        return 0 if self.vae is None else sum(p.numel() * p.element_size() for p in self.vae.parameters())

    def describe(self) -> dict:
        return {"model": "attribution", "attribution_target": self.target,
                "method": ATTRIBUTION_TARGETS[self.target] + " (after Liu et al., CVPR 2020); re-implementation on "
                          "backbone features", "layers": self.backbone.layer_names,
                "strides": self.backbone.strides, "weights": self.backbone.weights_source,
                "latent_dim": self.latent_dim, "epochs": self.epochs, "train_loss": self.history}
