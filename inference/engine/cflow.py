"""CFLOW-AD (Gudovskiy et al., WACV 2022): conditional normalizing flows on CNN features.

* One decoder per backbone layer: a FrEIA ``SequenceINN`` of ``coupling_blocks``
  ``AllInOneBlock`` couplings (affine clamp ``clamp_alpha``, softplus global
  affine, fixed random permutation), each conditioned on a 2-D sinusoidal
  positional encoding of the feature position (``condition_vector`` channels).
  The subnet is Linear(in, 2 in) - ReLU - Linear(2 in, out) as in the paper.
* Training (defect-free images only): the frozen backbone's features are
  extracted ONCE and cached (they do not change between epochs); every epoch
  visits every feature vector ("fiber") of every layer once, in seeded random
  fiber batches of ``fiber_batch_size``, one Adam step per fiber batch. Loss = the
  official CFLOW loss ``-logsigmoid(log p(x|c) / C)`` with
  ``log p = -C/2 log(2 pi) - |z|^2 / 2 + log|det J|`` (Gaussian prior, per fiber).
* Features are standardised per channel with the training fibers' mean and
  standard deviation (an affine map: it only shifts every log-likelihood of a
  layer by the same constant, which the per-layer reference below cancels) -
  the flows converge in far fewer steps on standardised inputs.
* Early stopping: after every epoch the same loss is averaged over all fibers of
  the defect-free VALIDATION images (never the test part); the best epoch's
  weights are kept and training stops after ``early_stopping_patience`` epochs
  without improvement. Without defect-free validation images every epoch runs and
  the last weights are kept.
* Test-time score, per image independently: per layer the per-dimension
  log-likelihood ``l = log p / C``; the paper's map is
  ``sum_layers upsample(1 - exp(l - M_layer))`` (bilinear to the image size),
  ``M_layer`` being a per-layer constant fixed after training (the highest ``l`` of
  that layer on the validation pass of the kept epoch, or on the last training epoch
  without validation images). anomalib instead subtracts each layer's max over the
  current *batch* (their issue #169), which makes an image's map depend on its batch
  mates; fixed constants do not. In float32 ``1 - exp(d)`` is exactly 1.0 for every
  ``d < -17``, so most anomalous scores collapse into one value; the map here is
  ``-log(sum_layers upsample(exp(l - M_layer)))``, computed in float64 with a
  per-image shift (a log-sum-exp), a strictly decreasing function of
  ``sum_layers upsample(exp(...))`` and so ranking every pixel exactly as the paper's
  score does, without the saturation. Image score = max of the map.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone, backbone_settings, check_backbone
from .types import BenchmarkConfig

LOG_2PI_HALF = 0.5 * math.log(2 * math.pi)


def positional_encoding_2d(channels: int, height: int, width: int) -> torch.Tensor:
    """Sinusoidal 2-D positional encoding (channels, height, width); channels % 4 == 0.

    The first half of the channels encodes the column (sin/cos interleaved), the
    second half the row, with frequencies 1 / 10000^(2k / (channels/2)).
    """
    if channels % 4:
        raise ValueError(f"condition_vector must be a multiple of 4, got {channels}")
    half = channels // 2
    div = torch.exp(torch.arange(0.0, half, 2) * -(math.log(1e4) / half))  # (half/2,)
    pw = torch.arange(0.0, width).unsqueeze(1) * div  # (W, half/2)
    ph = torch.arange(0.0, height).unsqueeze(1) * div  # (H, half/2)
    pe = torch.zeros(channels, height, width)
    pe[0:half:2] = torch.sin(pw).t().unsqueeze(1).expand(-1, height, -1)
    pe[1:half:2] = torch.cos(pw).t().unsqueeze(1).expand(-1, height, -1)
    pe[half::2] = torch.sin(ph).t().unsqueeze(2).expand(-1, -1, width)
    pe[half + 1 :: 2] = torch.cos(ph).t().unsqueeze(2).expand(-1, -1, width)
    return pe


def _subnet_fc(dims_in: int, dims_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dims_in, 2 * dims_in), nn.ReLU(), nn.Linear(2 * dims_in, dims_out))


def make_decoder(n_features: int, condition_vector: int, coupling_blocks: int, clamp_alpha: float) -> nn.Module:
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    inn = Ff.SequenceINN(n_features)
    for _ in range(coupling_blocks):
        inn.append(
            Fm.AllInOneBlock, cond=0, cond_shape=(condition_vector,), subnet_constructor=_subnet_fc,
            affine_clamping=clamp_alpha, global_affine_type="SOFTPLUS", permute_soft=False,
        )
    return inn


def log_sum_exp_score(shifted: list[torch.Tensor], size: int) -> torch.Tensor:
    """``-log(sum_k upsample(exp(d_k)))`` (S, S) float64 for per-layer maps ``d_k`` (1, 1, h, w).

    Bilinear upsampling is linear, so it commutes with a common factor: every layer is
    shifted by the image's highest ``d`` before ``exp`` (no underflow for any pixel within
    ~700 nats of it) and the shift added back after the log. Pixels further below than
    that saturate at the largest finite score instead of +inf.
    """
    top = max(float(d.max()) for d in shifted)
    total = None
    for d in shifted:
        up = F.interpolate(torch.exp(d - top), size=(size, size), mode="bilinear", align_corners=False)
        total = up if total is None else total + up
    tiny = torch.finfo(torch.float64).tiny
    return -(top + torch.log(total.clamp_min(tiny)))[0, 0]


def log_likelihood_per_dim(decoder: nn.Module, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """log p(x | cond) / C for fibers x (n, C) under the flow with a standard-normal prior."""
    z, log_jac = decoder(x, c=[cond])
    c = x.shape[1]
    logp = -c * LOG_2PI_HALF - 0.5 * (z**2).sum(1) + log_jac
    return logp / c


class Cflow:
    """CFLOW model on top of a frozen :class:`Backbone`."""

    IMAGE_SCORE = ("the maximum of the anomaly map (the negative log-sum-exp over layers of the positions' "
                   "log-likelihoods relative to each layer's reference, computed in float64)")

    def __init__(self, backbone: Backbone, config: BenchmarkConfig):
        self.backbone = backbone
        self.config = config
        self.device = backbone.device
        torch.manual_seed(config.seed)
        np.random.seed(config.seed % 2**32)  # FrEIA draws its fixed permutations with numpy
        self.decoders = nn.ModuleList(
            make_decoder(c, config.condition_vector, config.coupling_blocks, config.clamp_alpha)
            for c in backbone.channels
        ).to(self.device)
        self.pos_cache: dict[tuple[int, int], torch.Tensor] = {}
        self.reference_logp: list[float] = [0.0] * len(backbone.channels)
        self.history: list[dict] = []
        self.best_epoch: int | None = None
        self.feat_mean: list[torch.Tensor] = []
        self.feat_std: list[torch.Tensor] = []

    @classmethod
    def from_config(cls, backbone: Backbone, config: BenchmarkConfig) -> "Cflow":
        return cls(backbone, config)

    # -- features ---------------------------------------------------------------------------
    def _positions(self, h: int, w: int) -> torch.Tensor:
        """Positional encodings as (h*w, condition_vector), row-major like the fibers."""
        if (h, w) not in self.pos_cache:
            pe = positional_encoding_2d(self.config.condition_vector, h, w)
            self.pos_cache[(h, w)] = pe.flatten(1).t().contiguous().to(self.device)
        return self.pos_cache[(h, w)]

    def _extract(self, loader, check: Callable[[], None] | None = None) -> list[torch.Tensor]:
        """Fibers per layer: list of (N*h*w, C) float32 (image-major, then row-major)."""
        per_layer: list[list[torch.Tensor]] = [[] for _ in self.backbone.channels]
        self.grids = []
        for images, _ in loader:
            feats = self.backbone(images)
            self.grids = [tuple(f.shape[-2:]) for f in feats]
            for k, f in enumerate(feats):
                per_layer[k].append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).clone())
            del feats
            if check:
                check()
        return [torch.cat(p) for p in per_layer]

    def _standardise(self, k: int, fibers: torch.Tensor) -> torch.Tensor:
        return (fibers - self.feat_mean[k]) / self.feat_std[k]

    # -- training ---------------------------------------------------------------------------
    def _epoch_loss(self, fibers: list[torch.Tensor]) -> tuple[float, list[float]]:
        """Mean loss over all fibers (no grad) and each layer's max per-dim log-likelihood."""
        total, count, top = 0.0, 0, [-math.inf] * len(fibers)
        bs = max(self.config.fiber_batch_size, 4096)
        with torch.no_grad():
            for k, fib in enumerate(fibers):
                pos = self._positions(*self.grids[k])
                hw = pos.shape[0]
                for s in range(0, fib.shape[0], bs):
                    e = min(fib.shape[0], s + bs)
                    idx = torch.arange(s, e, device=fib.device) % hw
                    lp = log_likelihood_per_dim(self.decoders[k], fib[s:e], pos[idx])
                    total += float(-F.logsigmoid(lp).sum())
                    count += e - s
                    top[k] = max(top[k], float(lp.max()))
        return total / max(count, 1), top

    def fit(self, train_loader, val_loader=None, step: Callable[[float], None] | None = None,
            detail: Callable[[dict], None] | None = None) -> None:
        """``step(fraction)`` as training goes; ``detail(dict)`` (optional) with the epoch, the
        optimiser steps done and the loss history so far (for a live loss curve)."""
        cfg = self.config
        train_fibers = self._extract(train_loader)
        self.feat_mean = [f.double().mean(0).float() for f in train_fibers]
        self.feat_std = [f.double().std(0).clamp_min(1e-6).float() for f in train_fibers]
        train_fibers = [self._standardise(k, f) for k, f in enumerate(train_fibers)]
        if step:
            step(0.05)
        val_fibers = None
        if val_loader is not None:
            val_fibers = [self._standardise(k, f) for k, f in enumerate(self._extract(val_loader))]
        if step:
            step(0.08)
        params = [p for d in self.decoders for p in d.parameters()]
        opt = torch.optim.Adam(params, lr=cfg.learning_rate)
        gen = torch.Generator().manual_seed(cfg.seed)
        best, best_state, bad_epochs = math.inf, None, 0
        steps_per_epoch = sum(math.ceil(f.shape[0] / cfg.fiber_batch_size) for f in train_fibers)
        total_steps = steps_per_epoch * cfg.epochs
        done = 0
        self.decoders.train()
        for epoch in range(cfg.epochs):
            t_epoch = time.perf_counter()
            train_top = [-math.inf] * len(train_fibers)
            run_loss, run_n = 0.0, 0
            for k, fib in enumerate(train_fibers):
                pos = self._positions(*self.grids[k])
                hw = pos.shape[0]
                perm = torch.randperm(fib.shape[0], generator=gen).to(fib.device)
                for s in range(0, fib.shape[0], cfg.fiber_batch_size):
                    idx = perm[s : s + cfg.fiber_batch_size]
                    lp = log_likelihood_per_dim(self.decoders[k], fib[idx], pos[idx % hw])
                    loss = -F.logsigmoid(lp).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    run_loss += loss.item() * len(idx)
                    run_n += len(idx)
                    train_top[k] = max(train_top[k], float(lp.detach().max()))
                    done += 1
                    if step and done % 20 == 0:
                        step(0.08 + 0.92 * done / total_steps)
                    if detail and done % 20 == 0:
                        detail(self._detail(epoch, done, total_steps, run_loss / max(run_n, 1)))
            rec = {"epoch": epoch + 1, "train_loss": run_loss / max(run_n, 1),
                   "train_seconds": time.perf_counter() - t_epoch}
            if val_fibers is not None:
                self.decoders.eval()
                val_loss, val_top = self._epoch_loss(val_fibers)
                self.decoders.train()
                rec["val_loss"] = val_loss
                if val_loss < best:
                    best, bad_epochs = val_loss, 0
                    best_state = copy.deepcopy(self.decoders.state_dict())
                    self.best_epoch, self.reference_logp = epoch + 1, val_top
                else:
                    bad_epochs += 1
            self.history.append(rec)
            if detail:
                detail(self._detail(epoch, done, total_steps, rec["train_loss"]))
            if step:
                step(0.08 + 0.92 * done / total_steps)
            if val_fibers is not None and bad_epochs >= cfg.early_stopping_patience:
                break
        if best_state is not None:
            self.decoders.load_state_dict(best_state)
        else:
            self.best_epoch, self.reference_logp = len(self.history), train_top
        self.decoders.eval()
        if step:
            step(1.0)

    def _detail(self, epoch: int, done: int, total: int, running_loss: float) -> dict:
        last = self.history[-1] if self.history else {}
        return {"epoch": epoch + 1, "epochs": self.config.epochs, "steps_done": done, "steps_total": total,
                "running_train_loss": running_loss, "train_loss": last.get("train_loss"),
                "val_loss": last.get("val_loss"), "history": [dict(h) for h in self.history]}

    # -- inference --------------------------------------------------------------------------
    def predict(self, images: torch.Tensor) -> np.ndarray:
        """Anomaly maps (B, S, S) float32; each image is scored on its own."""
        size = self.config.image_size
        out = np.empty((images.shape[0], size, size), dtype=np.float32)
        with torch.inference_mode():
            feats = self.backbone(images)
            for b in range(images.shape[0]):
                shifted = []  # per layer: l - M_layer, float64, (1, 1, h, w)
                for k, f in enumerate(feats):
                    c, h, w = f.shape[1:]
                    fib = self._standardise(k, f[b].permute(1, 2, 0).reshape(-1, c))
                    lp = log_likelihood_per_dim(self.decoders[k], fib, self._positions(h, w))
                    shifted.append((lp.double() - self.reference_logp[k]).reshape(1, 1, h, w))
                out[b] = log_sum_exp_score(shifted, size).cpu().numpy()
        return out

    def anomaly_maps(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Maps (B, S, S) and image scores (max of each map), each image on its own."""
        maps = self.predict(images)
        return maps, maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)

    # Settings a saved CFLOW needs to rebuild its decoders and score as it did.
    _STATE_SETTINGS = ("image_size", "seed", "coupling_blocks", "condition_vector", "clamp_alpha")

    def state(self) -> dict:
        """Tensors + JSON-able settings of the fitted model (:meth:`load` rebuilds it)."""
        if not self.feat_mean:
            raise RuntimeError("CFLOW is not fitted")
        tensors = {f"decoders.{k}": v.detach().cpu() for k, v in self.decoders.state_dict().items()}
        for k, (m, sd) in enumerate(zip(self.feat_mean, self.feat_std)):
            tensors[f"feat_mean.{k}"], tensors[f"feat_std.{k}"] = m.cpu(), sd.cpu()
        settings = {key: getattr(self.config, key) for key in self._STATE_SETTINGS}
        settings.update(model="cflow", reference_logp=[float(v) for v in self.reference_logp],
                        best_epoch=self.best_epoch, **backbone_settings(self.backbone))
        return {"tensors": tensors, "settings": settings}

    @classmethod
    def load(cls, state: dict, backbone: Backbone) -> "Cflow":
        s = state["settings"]
        check_backbone(s, backbone)
        config = BenchmarkConfig(model="cflow", **{key: s[key] for key in cls._STATE_SETTINGS})
        model = cls(backbone, config)
        t = state["tensors"]
        model.decoders.load_state_dict({k[len("decoders."):]: v for k, v in t.items() if k.startswith("decoders.")})
        model.decoders.eval()
        n = len(backbone.channels)
        model.feat_mean = [t[f"feat_mean.{k}"].to(model.device) for k in range(n)]
        model.feat_std = [t[f"feat_std.{k}"].to(model.device) for k in range(n)]
        model.reference_logp, model.best_epoch = list(s["reference_logp"]), s["best_epoch"]
        return model

    def memory_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.decoders.parameters())

    def describe(self) -> dict:
        return {"model": "cflow", "layers": self.backbone.layer_names, "strides": self.backbone.strides,
                "weights": self.backbone.weights_source, "coupling_blocks": self.config.coupling_blocks,
                "condition_vector": self.config.condition_vector, "fiber_batch_size": self.config.fiber_batch_size,
                "epochs_run": len(self.history), "best_epoch": self.best_epoch,
                "early_stopping": "mean CFLOW loss over the defect-free validation images",
                "reference_log_likelihood": self.reference_logp, "history": self.history}

    # -- model packages (inference.engine.package) --------------------------------------------
    def package_state(self) -> dict[str, torch.Tensor]:
        """Decoder weights, per-layer feature standardisation and reference log-likelihoods."""
        if not self.feat_mean:
            raise RuntimeError("CFLOW is not fitted")
        out = {f"decoders.{k}": v.detach().contiguous() for k, v in self.decoders.state_dict().items()}
        for k, (m, s) in enumerate(zip(self.feat_mean, self.feat_std)):
            out[f"feat_mean.{k}"], out[f"feat_std.{k}"] = m.contiguous(), s.contiguous()
        out["reference_logp"] = torch.tensor(self.reference_logp, dtype=torch.float64)
        return out

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], config: BenchmarkConfig, backbone: Backbone) -> "Cflow":
        """A fitted CFLOW from :meth:`package_state` (strict: every decoder tensor must fit these settings)."""
        model = cls(backbone, config)
        decoders = {k[len("decoders."):]: v for k, v in state.items() if k.startswith("decoders.")}
        try:
            model.decoders.load_state_dict(decoders, strict=True)
        except RuntimeError as error:
            raise ValueError(f"the stored decoders do not fit these CFLOW settings: {str(error)[:300]}") from error
        n = len(backbone.channels)
        model.feat_mean = [state[f"feat_mean.{k}"].to(model.device) for k in range(n)]
        model.feat_std = [state[f"feat_std.{k}"].to(model.device) for k in range(n)]
        model.reference_logp = [float(v) for v in state["reference_logp"]]
        model.decoders.eval()
        return model
