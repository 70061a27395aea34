"""The one registry of models and their settings: the CLI, the launch form, the API schema, the
results labels and the recommendation all read it (a test holds every other module to it).

Torch-free: the web process imports it; a model's module is imported only by :func:`model_class`.

Every model class implements the same protocol:

* ``from_config(backbone, config)``: a new, unfitted model with the run's settings;
* ``fit(train_loader, val_loader=None, step=None)``: learn from defect-free images (``val_loader``:
  the validation part's defect-free images, used only by models with ``uses_validation``);
  ``step(fraction)`` reports progress;
* ``anomaly_maps(images) -> (maps (B, S, S) float32, scores (B,) float64)``: each image on its own
  (batch-independent);
* ``state() -> {"tensors": {name: Tensor}, "settings": JSON-able dict}`` and the classmethod
  ``load(state, backbone)``, which rebuilds a model that gives identical maps;
* ``memory_bytes()`` (fitted parameters) and ``describe()`` (the report's ``model_info``);
* for model packages (:class:`package.PackableModel`): ``IMAGE_SCORE``, one sentence saying how
  ``anomaly_maps`` scores an image; ``package_state()`` (tensors only) and the classmethod
  ``from_state(state, config, backbone)``, which rebuilds the model from them and the run's
  settings, re-deriving its feature grid from the backbone and refusing tensors that do not fit
  with a ValueError. Every registered model can therefore be packaged and deployed.

Whether a model exports to ONNX is the spec's ``onnx_refusal`` (empty: ``onnx_export`` has its graph).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, fields

from . import backbone_weights
from .geometry import RESIZE_MODES
from .types import MAX_REPEATS, BenchmarkConfig

# The four families of anomaly-localization models, by how they make the anomaly map.
FAMILIES = {
    "reconstruction": "Reconstruction (error of a model trained to rebuild normal data)",
    "attribution": "Attribution map (where a model of normal data attends when explaining an image)",
    "patch_similarity": "Patch similarity (distance to normal patch features)",
    "normalizing_flow": "Normalizing flow (likelihood of features under a flow)",
}

# Backbones the engine can load: their specs live in ``backbone_weights`` (no torch import).
BACKBONE_NAMES = backbone_weights.BACKBONE_NAMES
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Setting:
    """One engine setting: its type, bounds or choices and a one-line help. The default is the
    :class:`BenchmarkConfig` field's default (one source)."""

    name: str
    kind: type  # int | float | bool | str
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    label: str = ""

    @property
    def default(self):
        return _CONFIG_DEFAULTS[self.name]

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    def clean(self, value):
        """The value converted to ``kind`` and checked; raises ValueError with a readable message."""
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"Setting {self.name} must be true or false, not {value!r}.")
        try:
            value = whole_number(value) if self.kind is int else self.kind(value)
        except (TypeError, ValueError, OverflowError):
            kind = "whole number" if self.kind is int else self.kind.__name__
            raise ValueError(f"Setting {self.name} must be a {kind}, not {value!r}.") from None
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.title} must be one of {', '.join(self.choices)}, not {value!r}.")
        if self.low is not None and not (self.low <= value <= self.high):
            raise ValueError(f"Setting {self.name} must lie between {self.low} and {self.high}, not {value}.")
        return value


def whole_number(value) -> int:
    """An int from an int, an integral float (256.0) or its text; 256.7, "256.7" and booleans are refused."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    if isinstance(value, int):
        return value
    return int(str(value).strip())


_CONFIG_DEFAULTS = {f.name: getattr(BenchmarkConfig(), f.name) for f in fields(BenchmarkConfig)}

# What the attribution model's map explains (``attribution.VaeAttention``; see its docstring for
# the measurements): the one vocabulary of the setting ``attribution_target``.
ATTRIBUTION_TARGETS = {
    "elbo": "gradient x input of the VAE's negative ELBO",
    "latent": "Grad-CAM of each latent dimension, averaged (Liu et al.'s equations)",
    "latent_sum": "Grad-CAM of the summed latent mean, absolute value (Liu et al.'s code)",
    "latent_deviation": "Grad-CAM of the latent mean's squared distance from the training mean",
    "residual": "the VAE's feature reconstruction error (a baseline, not an attribution)",
}
# Targets that are no attribution (no backpropagation): measured as baselines, never the default.
ATTRIBUTION_BASELINES = ("residual",)

SETTINGS: dict[str, Setting] = {s.name: s for s in (
    # ---- common to every model
    Setting("backbone", str, "frozen ImageNet feature extractor", choices=BACKBONE_NAMES, label="Backbone"),
    Setting("image_size", int, "images are resized to this square size (pixels)", 32, 1024, label="Image size"),
    Setting("resize", str, "squash = whole image to image_size² (distorts non-square images); keep_aspect = long "
            "side to image_size, padded; tiles = overlapping tiles at native resolution", choices=RESIZE_MODES,
            label="Resize"),
    Setting("tile_size", int, "tiles: side of a tile in image pixels (each tile is resized to image_size)", 32, 4096,
            label="Tile size"),
    Setting("tile_overlap", float, "tiles: share of a tile overlapping its neighbour", 0.0, 0.9, label="Tile overlap"),
    Setting("scale", float, "tiles: the image is scaled by this before tiling (1 = native resolution)", 0.05, 4.0,
            label="Tile scale"),
    Setting("eval_max_pixels", int, "metrics are computed at the images' median native size, scaled down to at "
            "most this many pixels", 4096, 64 * 1024 * 1024, label="Evaluation pixels"),
    Setting("batch_size", int, "images loaded per step (results do not depend on it)", 1, 256, label="Batch size"),
    Setting("device", str, "auto = CUDA when present", choices=DEVICES, label="Device"),
    Setting("repeats", int, "evaluate on this many validation/test splits (seeds seed, seed+1, ...)", 1,
            MAX_REPEATS, label="Repeated splits"),
    Setting("val_fraction", float, "share of the test images used to fit thresholds", 0.05, 0.95,
            label="Share of test images for thresholds"),
    Setting("normal_fpr_target", float, "false-positive rate on normal pixels for the normal_fpr threshold",
            0.0001, 0.5, label="False-positive rate on normal pixels"),
    Setting("normal_sigma_k", float, "normal_sigma threshold: mean of the normal validation pixels plus this many "
            "standard deviations (3: control-chart limits)", 0.0, 20.0, label="Normal threshold (standard deviations)"),
    Setting("pretrained", bool, "ImageNet weights (off: random weights, for tests)", label="ImageNet weights"),
    # ---- PaDiM
    Setting("n_features", int, "PaDiM: random channel subset per position", 1, 2048, label="Features"),
    # ---- CFLOW
    Setting("epochs", int, "training passes over the training features (CFLOW: at most, early stopping)", 1, 500,
            label="Epochs"),
    Setting("learning_rate", float, "Adam step size of the trained models", 1e-7, 1.0, label="Learning rate"),
    Setting("early_stopping_patience", int, "CFLOW: epochs without improvement before stopping", 0, 100,
            label="Early-stopping patience (epochs)"),
    Setting("coupling_blocks", int, "CFLOW: coupling blocks per flow", 1, 32, label="Coupling blocks"),
    Setting("condition_vector", int, "CFLOW: positional-encoding channels (a multiple of 4)", 4, 512,
            label="Positional-encoding channels"),
    Setting("clamp_alpha", float, "CFLOW: affine clamping of the couplings", 0.1, 10.0, label="Coupling clamp"),
    Setting("fiber_batch_size", int, "CFLOW: feature vectors per optimiser step", 16, 65536,
            label="Feature vectors per step"),
    # ---- reconstruction
    Setting("latent_dim", int, "Reconstruction / attribution: latent width of the autoencoder", 1, 1024,
            label="Latent size"),
    Setting("attribution_target", str, "Attribution: " + "; ".join(f"{name} = {what}" for name, what
                                                           in ATTRIBUTION_TARGETS.items()),
            choices=tuple(ATTRIBUTION_TARGETS), label="Attribution target"),
    # ---- PatchCore
    Setting("coreset_ratio", float, "PatchCore: share of the training patches kept in the memory bank",
            0.0001, 1.0, label="Coreset share"),
    Setting("projection_dim", int, "PatchCore: random-projection size for coreset distances (0 = none)",
            0, 4096, label="Projection size (0 = none)"),
    Setting("num_neighbors", int, "PatchCore: bank neighbours in the image-score reweighting", 1, 64,
            label="Neighbours for reweighting"),
)}

# The other BenchmarkConfig fields: chosen for each launch outside the settings form (model, seed,
# techniques) or set by the process running the engine, never by a launch (a test holds
# BenchmarkConfig's fields to SETTINGS + these).
RUN_FIELDS = ("model", "seed", "techniques")
PROCESS_FIELDS = ("layers", "weights_path", "num_workers", "num_threads")

# The settings that mean something only when ``resize`` is ``tiles`` (summaries leave them out otherwise).
TILE_SETTINGS = ("tile_size", "tile_overlap", "scale")
COMMON_SETTINGS = ("backbone", "image_size", "resize", *TILE_SETTINGS, "eval_max_pixels",
                   "batch_size", "device", "repeats", "val_fraction",
                   "normal_fpr_target", "normal_sigma_k", "pretrained")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    label: str
    family: str
    module: str  # inside inference.engine
    cls: str
    settings: tuple[str, ...]  # model-specific settings (COMMON_SETTINGS apply to all)
    summary: str
    # Backbone layers (feature_info indices) when the run does not say; None = backbone default.
    default_layers: tuple[int, ...] | None = None
    # Looks at the validation part's defect-free images while fitting (early stopping): refitted
    # for every repeated split.
    uses_validation: bool = False
    # Learns what is normal at each map position (one Gaussian per position, a fully connected
    # latent over the grid, a flow conditioned on the position): needs every image in one geometry
    # (geometry.geometry_problem); position-free models take any size and tiles.
    position_specific: bool = False
    citation: str = ""
    # Why the model's package cannot be exported to ONNX (the refusal's message); empty when
    # ``onnx_export`` holds a graph for it (a test keeps the two equal).
    onnx_refusal: str = ""
    extra: dict = field(default_factory=dict)


MODELS: dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec("padim", "PaDiM", "patch_similarity", "padim", "Padim", ("n_features",),
              "one Gaussian per patch position (needs aligned images)",
              position_specific=True, citation="Defard et al., ICPR 2020"),
    ModelSpec("patchcore", "PatchCore", "patch_similarity", "patchcore", "PatchCore",
              ("coreset_ratio", "projection_dim", "num_neighbors"),
              "nearest neighbour in a position-free memory bank of patch features",
              default_layers=(2, 3), citation="Roth et al., CVPR 2022"),
    ModelSpec("reconstruction", "Feature reconstruction", "reconstruction", "reconstruction",
              "FeatureReconstruction", ("latent_dim", "epochs", "learning_rate"),
              "autoencoder rebuilding the backbone's patch features; the error is the map",
              citation="after DFR, Shi et al., Neurocomputing 2021"),
    ModelSpec("attribution", "VAE attribution", "attribution", "attribution", "VaeAttention",
              ("attribution_target", "latent_dim", "epochs", "learning_rate"),
              "gradient attribution of a VAE trained on normal features (after Liu et al.)",
              position_specific=True, citation="Liu et al., CVPR 2020",
              onnx_refusal="its map is a gradient of the VAE's score with respect to its input features, "
                           "computed by backpropagation at inference, and an ONNX inference graph holds no "
                           "backward pass"),
    ModelSpec("fcdd", "FCDD", "attribution", "fcdd", "Fcdd", ("epochs", "learning_rate"),
              "fully convolutional one-class model whose output is its explanation map, trained against "
              "synthetic defects (position-free)",
              citation="Liznerski et al., ICLR 2021"),
    ModelSpec("cflow", "CFLOW", "normalizing_flow", "cflow", "Cflow",
              ("epochs", "learning_rate", "early_stopping_patience", "coupling_blocks", "condition_vector",
               "clamp_alpha", "fiber_batch_size"),
              "conditional normalizing flows on backbone features",
              uses_validation=True, position_specific=True, citation="Gudovskiy et al., WACV 2022",
              onnx_refusal="its map is a float64 log-sum-exp of normalizing-flow log-likelihoods with a "
                           "per-image shift, which an ONNX runtime computes in float32 and so would not "
                           "reproduce"),
)}

DEFAULT_MODEL = _CONFIG_DEFAULTS["model"]


def get(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}") from None


def choices() -> list[tuple[str, str]]:
    """(name, label) of every model, for forms and schemas."""
    return [(m.name, m.label) for m in MODELS.values()]


def label(name: str) -> str:
    return MODELS[name].label if name in MODELS else name


def settings_of(name: str) -> tuple[Setting, ...]:
    """Every setting a run of model ``name`` reads: the common ones, then its own."""
    return tuple(SETTINGS[s] for s in COMMON_SETTINGS + get(name).settings)


def model_class(name: str):
    """The model's class (imports its module, and torch)."""
    spec = get(name)
    module = importlib.import_module(f"{__package__}.{spec.module}")
    return getattr(module, spec.cls)


def backbone_layers(config: BenchmarkConfig) -> tuple | None:
    """The backbone layers a run of ``config`` uses: its own, else its model's default (None: the backbone's)."""
    return config.layers if config.layers is not None else get(config.model).default_layers


def build(config: BenchmarkConfig, backbone):
    return model_class(config.model).from_config(backbone, config)


def load(state: dict, backbone):
    """A fitted model from :meth:`state` (``state["settings"]["model"]`` names it)."""
    return model_class(state["settings"]["model"]).load(state, backbone)
