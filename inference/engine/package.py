"""Model packages: a fitted model kept after its run, and inspection of new images with it.

A package is a folder::

    manifest.json          what the model is and how it must be fed (below)
    model.safetensors      the fitted state, the model's ``package_state()`` (PaDiM: means + packed
                           inverse covariances; PatchCore: the memory bank; reconstruction and
                           attribution: network weights + feature standardisation; CFLOW: decoder
                           weights, feature standardisation, reference log-likelihoods)
    backbone.safetensors   only for a randomly initialised backbone (tests), which exists nowhere else

The manifest holds the model name and settings, the backbone (name, layers, where its weights
came from and the SHA-256 of the weights actually used), the preprocessing (image size, resize,
normalisation), every fitted threshold (pixel thresholds per technique, the run's chosen one,
the image threshold) with the rule that produced it and how the model computes the image score
it is compared with (the model class's ``IMAGE_SCORE``), the run it came from, the engine version
and the SHA-256 of ``model.safetensors``. :func:`load_package` checks all of it and refuses a
mismatch with a :class:`PackageError` that says what differs; it never falls back silently.

:class:`Inspector` (what :func:`load_package` returns) turns new images (uint8 RGB arrays of any
size, or files) into verdicts: the model's own image score (the one the run fitted its image
threshold on: ``anomaly_maps``' scores, e.g. PatchCore's reweighted score, not the map maximum)
against the image threshold, defect area and connected components at the pixel threshold, and the
anomaly map itself. No Django.

Every registry model implements :class:`PackableModel` (the registry's protocol), so every run's
model can be packaged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import numpy as np

from . import registry
from .backbone_weights import sha256_file
from .geometry import Preprocessing

if TYPE_CHECKING:
    import torch

    from .backbones import Backbone
    from .types import BenchmarkConfig

FORMAT = "defectbench-model-package"
FORMAT_VERSION = 1
# Bump when a change to the engine alters the maps or image scores a fitted model gives for the
# same state: a package made by another engine version is refused rather than silently scored
# differently. (Inspection now takes the model's own image score instead of the map maximum; for
# PaDiM and CFLOW, the only models packaged before, that score is the map maximum, so their
# packages score exactly as before and keep version 1.)
ENGINE_VERSION = "1"
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
BACKBONE_WEIGHTS = "backbone.safetensors"


@runtime_checkable
class PackableModel(Protocol):
    """What a package needs of a model; every registry model implements it (a test holds them to it)."""

    IMAGE_SCORE: ClassVar[str]  # one sentence: how ``anomaly_maps`` scores an image (kept in the manifest)
    backbone: "Backbone"

    def anomaly_maps(self, images: "torch.Tensor") -> tuple[np.ndarray, np.ndarray]:
        """Maps (B, S, S) float32 and the model's image scores (B,), each image on its own."""

    def package_state(self) -> "dict[str, torch.Tensor]":
        """The fitted tensors (written to ``model.safetensors``)."""

    @classmethod
    def from_state(cls, state: "dict[str, torch.Tensor]", config: "BenchmarkConfig",
                   backbone: "Backbone") -> "PackableModel":
        """The fitted model from :meth:`package_state` and the run's settings; ValueError when they do not fit."""


def packable_models() -> tuple[str, ...]:
    """The models a package can hold: every model of the registry (each is a :class:`PackableModel`)."""
    return tuple(registry.MODELS)


# Settings that change nothing a fitted model computes (how the run was executed, or evaluated).
RUNTIME_SETTINGS = ("device", "num_threads", "num_workers", "batch_size", "repeats", "techniques",
                    "val_fraction", "normal_fpr_target", "weights_path")


class PackageError(ValueError):
    """A package is missing, damaged, or does not match what it is loaded with; the message says why."""


def backbone_weights_sha256(backbone) -> str:
    """SHA-256 over the backbone's tensors as used (names, dtypes, shapes, bytes; sorted by name)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.numpy().tobytes())
    return digest.hexdigest()


def _model_name(model) -> str:
    models = packable_models()
    name = next((n for n in models if registry.model_class(n) is type(model)), None)
    if name is None:
        raise PackageError(f"cannot package a {type(model).__name__}; packages hold {', '.join(models)}")
    return name


def thresholds_from_report(report: dict, image_score: str) -> dict:
    """Every fitted threshold of a report: pixel thresholds per technique, the chosen one, the image one
    (with ``image_score``, how the model scores an image: its ``IMAGE_SCORE``)."""
    pixel = {name: {"value": float(r["threshold"]), "technique": name}
             for name, r in (report.get("techniques") or {}).items() if r.get("threshold") is not None}
    chosen = (report.get("selection") or {}).get("chosen")
    decision = report.get("image_decision") or {}
    if not pixel:
        raise PackageError("the run fitted no pixel threshold: nothing to deploy")
    if decision.get("threshold") is None:
        reason = (decision.get("failure") or {}).get("message", "no image threshold was fitted")
        raise PackageError(f"the run has no image threshold ({reason}): nothing to deploy")
    return {
        "pixel": pixel,
        "pixel_technique": chosen if chosen in pixel else next(iter(pixel)),
        "pixel_rule": (report.get("selection") or {}).get("rule", ""),
        "image": {"value": float(decision["threshold"]), "rule": decision.get("rule", ""),
                  "score": image_score},
    }


def save_package(model, report: dict, out_dir: str | Path, source: dict | None = None) -> Path:
    """Write ``model`` (fitted by the run that produced ``report``) as a package folder ``out_dir``.

    The folder is written next to its final place and renamed into it, so a reader never sees
    half a package; an existing package there is replaced.
    """
    from safetensors.torch import save_file

    name = _model_name(model)
    backbone = model.backbone
    config = dict(report["config"])
    thresholds = thresholds_from_report(report, type(model).IMAGE_SCORE)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.package_state().items()}
        save_file(state, str(tmp / WEIGHTS))
        random_backbone = backbone.weights_source == "random"
        if random_backbone:
            save_file({k: v.detach().to("cpu").contiguous() for k, v in backbone.model.state_dict().items()},
                      str(tmp / BACKBONE_WEIGHTS))
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "engine_version": ENGINE_VERSION,
            "report_schema_version": report.get("schema_version"),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": {"name": name,
                      "settings": {k: v for k, v in config.items() if k not in RUNTIME_SETTINGS}},
            "backbone": {
                "name": backbone.name,
                "layers": backbone.layer_names,
                "strides": backbone.strides,
                "weights": "random (stored in the package)" if random_backbone else "pretrained",
                "weights_source": backbone.weights_source,
                "weights_sha256": backbone_weights_sha256(backbone),
            },
            "preprocessing": {
                # resize mode (and tiles' tile_size / tile_overlap / scale): geometry.Preprocessing
                **Preprocessing.from_config(config).to_manifest(),
                "input": "RGB (other modes converted), uint8",
                "resize_method": Preprocessing.from_config(config).describe(),
                "normalise": "x / 255, then (x - mean) / std per channel",
                "mean": list(backbone.mean), "std": list(backbone.std),
            },
            "thresholds": thresholds,
            "weights": {"file": WEIGHTS, "sha256": sha256_file(tmp / WEIGHTS),
                        "tensors": {k: list(v.shape) for k, v in state.items()}},
            "source": dict(source or {}),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def package_sha256(path: str | Path) -> str:
    """The package's identity: the SHA-256 of its manifest, which itself pins the weights file's
    hash, the backbone weights' hash, the settings, the preprocessing and the thresholds."""
    return sha256_file(Path(path) / MANIFEST)


def read_manifest(path: str | Path) -> dict:
    """The manifest of the package folder ``path`` (format checked), or :class:`PackageError`."""
    path = Path(path)
    file = path / MANIFEST
    if not file.is_file():
        raise PackageError(f"{path} is not a model package (no {MANIFEST})")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise PackageError(f"{file} cannot be read as JSON: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackageError(f"{file} is not a DefectBench model package manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise PackageError(f"package format version {manifest.get('format_version')}; this engine reads "
                           f"version {FORMAT_VERSION}")
    if manifest.get("engine_version") != ENGINE_VERSION:
        raise PackageError(f"the package was made by engine version {manifest.get('engine_version')}, this is "
                           f"version {ENGINE_VERSION}: its maps would not be the ones it was validated with; "
                           "rerun the benchmark to get a package for this version")
    if manifest.get("model", {}).get("name") not in packable_models():
        raise PackageError(f"unknown model {manifest.get('model', {}).get('name')!r} in the package")
    return manifest


def _engine_config(manifest: dict, device: str, weights_path: str | None):
    from dataclasses import fields

    from .types import BenchmarkConfig

    known = {f.name for f in fields(BenchmarkConfig)}
    values = {k: v for k, v in manifest["model"]["settings"].items() if k in known}
    if values.get("layers") is not None:
        values["layers"] = tuple(values["layers"])
    return BenchmarkConfig(**values, device=device, weights_path=weights_path)


def load_package(path: str | Path, *, device: str = "cpu", image_size: int | None = None,
                 weights_path: str | None = None, expect_backbone_sha256: str | None = None,
                 unpacked: bool = True) -> "Inspector":
    """Load and check a package. ``image_size`` / ``expect_backbone_sha256``: what the caller will
    feed it / expects; any disagreement with the package is refused. ``weights_path``: where this
    machine keeps the backbone weights, when not in the default places. ``unpacked`` (PaDiM): keep
    the inverse covariances unpacked for faster single images (:meth:`padim.Padim.keep_unpacked`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .backbones import Backbone, BackboneWeightsError

    path = Path(path)
    manifest = read_manifest(path)
    size = int(manifest["preprocessing"]["image_size"])
    if image_size is not None and int(image_size) != size:
        raise PackageError(f"the package was fitted on {size} px images; it cannot inspect at {image_size} px "
                           "(its statistics are per feature position of that size)")
    if int(manifest["model"]["settings"].get("image_size", size)) != size:
        raise PackageError("the manifest's model settings and preprocessing disagree on the image size")
    weights = path / WEIGHTS
    if not weights.is_file():
        raise PackageError(f"{weights} is missing")
    actual = sha256_file(weights)
    if actual != manifest["weights"]["sha256"]:
        raise PackageError(f"{weights} has SHA-256 {actual[:12]}…, the manifest says "
                           f"{manifest['weights']['sha256'][:12]}…: the file was changed or damaged")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as error:
        raise PackageError(f"{weights} cannot be read: {error}") from error

    config = _engine_config(manifest, device, weights_path)
    info = manifest["backbone"]
    random_backbone = info.get("weights", "").startswith("random")
    try:
        backbone = Backbone(config.backbone, layers=registry.backbone_layers(config),
                            weights="random" if random_backbone else "pretrained", weights_path=weights_path,
                            device=device)
    except BackboneWeightsError as error:
        raise PackageError(f"backbone {config.backbone}: {error}") from error
    if random_backbone:
        stored = path / BACKBONE_WEIGHTS
        if not stored.is_file():
            raise PackageError(f"{stored} is missing (the package's backbone has random weights, kept there)")
        backbone.model.load_state_dict(load_file(str(stored), device=str(backbone.device)), strict=True)
    if backbone.layer_names != info["layers"]:
        raise PackageError(f"backbone layers {backbone.layer_names} are not the package's {info['layers']}")
    found = backbone_weights_sha256(backbone)
    wanted = expect_backbone_sha256 or info["weights_sha256"]
    if found != info["weights_sha256"] or found != wanted:
        raise PackageError(
            f"backbone weights differ: the package was fitted with {info['name']} weights SHA-256 "
            f"{info['weights_sha256'][:12]}… (from {info['weights_source']}); the weights loaded here "
            f"(from {backbone.weights_source}) hash to {found[:12]}…. Its statistics only fit the features "
            "of the exact weights it was fitted with")
    try:
        model = registry.model_class(manifest["model"]["name"]).from_state(state, config, backbone)
        if unpacked and hasattr(model, "keep_unpacked"):
            model.keep_unpacked()
    except (KeyError, ValueError, RuntimeError) as error:
        raise PackageError(f"the stored {manifest['model']['name']} state does not fit its settings: {error}") from error
    return Inspector(model, manifest, path)


# ---- inspection ---------------------------------------------------------------------------------

@dataclass
class Component:
    """One connected region above the pixel threshold; ``bbox`` = [x0, y0, x1, y1] in the original image."""

    bbox: list[int]
    area_fraction: float
    peak: float

    def to_json(self) -> dict:
        return {"bbox": self.bbox, "area_fraction": self.area_fraction, "peak": self.peak}


@dataclass
class Inspection:
    """The verdict on one image (``anomaly_map`` float32: at the package's image size for ``squash``, at
    the image's own size for ``keep_aspect`` and ``tiles``)."""

    name: str
    width: int
    height: int
    score: float
    image_threshold: float
    defective: bool
    technique: str
    pixel_threshold: float
    defect_area_fraction: float
    components: list[Component]
    anomaly_map: np.ndarray = field(repr=False)
    inference_ms: float = 0.0

    @property
    def predicted_mask(self) -> np.ndarray:
        return self.anomaly_map >= self.pixel_threshold

    def to_json(self) -> dict:
        return {"name": self.name, "width": self.width, "height": self.height,
                "verdict": "defective" if self.defective else "good", "defective": self.defective,
                "score": self.score, "image_threshold": self.image_threshold, "technique": self.technique,
                "pixel_threshold": self.pixel_threshold, "defect_area_fraction": self.defect_area_fraction,
                "components": [c.to_json() for c in self.components], "inference_ms": self.inference_ms}


def prepare_image(image, image_size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """``(uint8 RGB image_size² x 3, (width, height) before resizing)`` from an array or an upright
    PIL image, made 8-bit RGB and resized exactly as :func:`data.load_image` does with files
    (``image_size`` None: kept at its native size, for the ``keep_aspect`` and ``tiles`` modes)."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            raise PackageError(f"images must be uint8 arrays, got {arr.dtype}")
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4)):
            image = Image.fromarray(np.ascontiguousarray(arr))
        else:
            raise PackageError(f"images must be HxW or HxWx3 arrays, got shape {arr.shape}")
    from .pixels import to_rgb

    size = image.size
    image = to_rgb(image)  # 16-bit and float pictures as the run's decoding turns them into 8 bits
    if image_size is None:  # native size: the package's Preprocessing makes its own inputs
        return np.asarray(image, dtype=np.uint8), size
    return np.asarray(image.resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8), size


def components_of(mask: np.ndarray, amap: np.ndarray, width: int, height: int) -> list[Component]:
    """Connected components (8-connectivity) of ``mask``, largest first, boxes scaled to width x height."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    if n == 0:
        return []
    size = mask.shape[0]
    sx, sy = width / mask.shape[1], height / size
    out = []
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    peaks = ndimage.maximum(amap, labels, index=np.arange(1, n + 1))
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        ys, xs = sl
        out.append(Component(
            bbox=[int(math.floor(xs.start * sx)), int(math.floor(ys.start * sy)),
                  int(math.ceil(xs.stop * sx)), int(math.ceil(ys.stop * sy))],
            area_fraction=float(areas[k] / mask.size), peak=float(peaks[k - 1])))
    out.sort(key=lambda c: -c.area_fraction)
    return out


class Inspector:
    """A loaded package: anomaly maps and verdicts for new images."""

    def __init__(self, model, manifest: dict, path: Path | None = None):
        self.model = model
        self.manifest = manifest
        self.path = path
        self.image_size = int(manifest["preprocessing"]["image_size"])
        # the run's geometry (packages from before resize modes: squash)
        self.preprocessing = Preprocessing.from_config(manifest["preprocessing"])
        self.thresholds = manifest["thresholds"]
        # What a verdict made with this package records (an in-memory package has no file).
        self.package_sha256 = package_sha256(path) if path is not None and (Path(path) / MANIFEST).is_file() else ""
        self.engine_version = str(manifest.get("engine_version", ENGINE_VERSION))

    @property
    def prepare_size(self) -> int | None:
        """What :func:`prepare_image` should resize to before :meth:`inspect_prepared`: the
        package's size for ``squash``; None (native size) for ``keep_aspect`` and ``tiles``."""
        return self.image_size if self.preprocessing.resize == "squash" else None

    @property
    def model_name(self) -> str:
        return self.manifest["model"]["name"]

    def pixel_threshold(self, technique: str | None = None) -> tuple[str, float]:
        technique = technique or self.thresholds["pixel_technique"]
        entry = self.thresholds["pixel"].get(technique)
        if entry is None:
            raise PackageError(f"the package has no {technique!r} threshold; it has "
                               f"{', '.join(sorted(self.thresholds['pixel']))}")
        return technique, float(entry["value"])

    @property
    def image_score_rule(self) -> str:
        """How the model scores an image (the manifest's words), which the image threshold applies to."""
        return self.thresholds["image"].get("score", "")

    def maps_and_scores(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, S, S, 3) uint8 at the package's size -> anomaly maps (B, S, S) float32 and the model's
        own image scores (B,) float64, the scores the run fitted its image threshold on."""
        import torch

        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise PackageError(f"expected images of shape (B, {self.image_size}, {self.image_size}, 3), "
                               f"got {images.shape}")
        batch = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        return self.model.anomaly_maps(batch)

    def maps(self, images: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 at the package's size -> anomaly maps (B, S, S) float32."""
        return self.maps_and_scores(images)[0]

    def inspect(self, images, names=None, technique: str | None = None, batch_size: int = 16) -> list[Inspection]:
        """Verdicts for ``images`` (uint8 arrays or PIL images of any size)."""
        names = list(names) if names is not None else [str(i) for i in range(len(images))]
        out: list[Inspection] = []
        if self.preprocessing.resize != "squash":
            return [self._inspect_native(im, name, technique, batch_size) for im, name in zip(images, names)]
        for start in range(0, len(images), batch_size):
            prepared = [prepare_image(im, self.image_size) for im in images[start:start + batch_size]]
            out += self.inspect_prepared(np.stack([p[0] for p in prepared]), [p[1] for p in prepared],
                                         names[start:start + batch_size], technique)
        return out

    def _inspect_native(self, image, name, technique, batch_size) -> Inspection:
        """One image through the package's ``keep_aspect`` / ``tiles`` preprocessing, exactly as
        the run mapped its test images; the map comes back at the image's own size."""
        technique, pixel_thr = self.pixel_threshold(technique)
        image_thr = float(self.thresholds["image"]["value"])
        arr, (w, h) = prepare_image(image, None)
        t0 = time.perf_counter()
        if self.preprocessing.resize == "tiles":
            amap, score = self._tiled(arr, (h, w), batch_size)
        else:
            maps, scores = self.maps_and_scores(np.stack(self.preprocessing.inputs(arr)))
            amap, score = self.preprocessing.assemble(list(maps), [float(x) for x in scores], (h, w))
        ms = 1000.0 * (time.perf_counter() - t0)
        mask = amap >= pixel_thr
        return Inspection(
            name=name, width=w, height=h, score=score, image_threshold=image_thr,
            defective=bool(score >= image_thr), technique=technique, pixel_threshold=pixel_thr,
            defect_area_fraction=float(mask.mean()), components=components_of(mask, amap, w, h),
            anomaly_map=amap, inference_ms=ms)

    def _tiled(self, image: np.ndarray, native: tuple[int, int], batch_size: int) -> tuple[np.ndarray, float]:
        """``tiles``: the map at the native size and the largest tile score (each tile's own model
        score, as the run took them), ``batch_size`` tiles at a time, each batch's maps blended in
        before the next is cut: memory is the image and its map, not every tile and its map."""
        from itertools import islice

        from .geometry import TileBlend

        blend, score = TileBlend(self.preprocessing, native), -math.inf
        tiles = self.preprocessing.tile_inputs(image)
        while batch := list(islice(tiles, batch_size)):
            maps, scores = self.maps_and_scores(np.stack(batch))
            blend.add(maps)
            score = max(score, float(np.max(scores)))
        return blend.result(), score

    def inspect_prepared(self, prepared: np.ndarray, sizes, names, technique: str | None = None) -> list[Inspection]:
        """Verdicts for images already made ready by :func:`prepare_image` at :attr:`prepare_size`
        ((B, S, S, 3) uint8, or a list of native-size images for keep_aspect / tiles, with
        each one's (width, height) before resizing): a caller that streams large images resizes
        each as it decodes it and keeps only the small copy."""
        if self.preprocessing.resize != "squash":  # prepared at native size (prepare_size is None)
            return [self._inspect_native(im, name, technique, 16) for im, name in zip(prepared, names)]
        technique, pixel_thr = self.pixel_threshold(technique)
        image_thr = float(self.thresholds["image"]["value"])
        t0 = time.perf_counter()
        maps, scores = self.maps_and_scores(prepared)
        ms = 1000.0 * (time.perf_counter() - t0) / len(prepared)
        out: list[Inspection] = []
        for name, (w, h), amap, own_score in zip(names, sizes, maps, scores):
            score = float(own_score)  # the model's own score: what the image threshold was fitted on
            mask = amap >= pixel_thr
            out.append(Inspection(
                name=name, width=w, height=h, score=score, image_threshold=image_thr,
                defective=bool(score >= image_thr), technique=technique, pixel_threshold=pixel_thr,
                defect_area_fraction=float(mask.mean()), components=components_of(mask, amap, w, h),
                anomaly_map=amap, inference_ms=ms))
        return out

    def inspect_files(self, paths, technique: str | None = None, batch_size: int = 16) -> list[Inspection]:
        """Verdicts for image files (each named by its path), decoded as the run decoded its images
        (:func:`pixels.decode_image`: EXIF orientation, 16-bit to 8-bit)."""
        from .data import ImageLoadError
        from .pixels import decode_image

        out = []
        paths = [str(p) for p in paths]
        for start in range(0, len(paths), batch_size):
            images = []
            for p in paths[start:start + batch_size]:
                try:
                    images.append(decode_image(p))
                except Exception as error:
                    raise ImageLoadError(f"cannot read image file {p!r}: {error}") from error
            out += self.inspect(images, names=paths[start:start + batch_size], technique=technique,
                                batch_size=batch_size)
        return out
