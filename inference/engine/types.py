"""Public data types of the engine (a contract with the Django side: keep stable)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from .thresholds import NORMAL_SIGMA_K, TECHNIQUES


@dataclass(frozen=True)
class Sample:
    """One image of a dataset, as the Django side hands it to the engine."""

    image_path: str  # absolute path to an RGB image file
    mask_path: str | None  # mask of any kind pixels.decode_mask reads, None for good images
    defect_type: str  # dataset's own: "good", "broken_large", ...
    category: str | None = None  # structural/surface/contamination/combined or None
    background: bool | None = None
    key: str = ""  # stable id used in the report (e.g. relative path or DB id)
    # Where the image's annotators disagreed (on its category, its background or both): the share
    # of them who chose each category and each background value ({"surface": 0.5, "structural":
    # 0.5}, {True: 1.0}); None where they agreed or one labelled it. ``category`` / ``background``
    # stay the final label (None while a disagreement is not settled by a reviewer).
    category_shares: Mapping[str, float] | None = field(default=None, hash=False)
    background_shares: Mapping[bool, float] | None = field(default=None, hash=False)

    @property
    def is_anomalous(self) -> bool:
        return self.defect_type != "good"

    @property
    def report_key(self) -> str:
        return self.key or self.image_path


def samples_from_scan(images, *, key=str, labels=None, shares=None) -> tuple[list[Sample], list[Sample]]:
    """Train (defect-free train images) and test samples from scanned dataset images.

    ``images``: objects with ``image_path``, ``mask_path``, ``split``, ``is_anomalous`` and
    ``defect_type`` (``annotator.layouts.ScannedImage``). ``key(image_path)`` names a sample in the
    report; ``labels`` maps an image path to its final ``(background, category)``; ``shares``, where
    annotators disagreed, to ``(category_shares, background_shares)`` (see :class:`Sample`).
    """
    labels = labels or {}
    shares = shares or {}
    train: list[Sample] = []
    test: list[Sample] = []
    for image in images:
        background, category = labels.get(image.image_path, (None, None))
        category_shares, background_shares = shares.get(image.image_path, (None, None))
        sample = Sample(
            image_path=str(image.image_path),
            mask_path=str(image.mask_path) if image.mask_path else None,
            defect_type=image.defect_type if image.is_anomalous else "good",
            category=category, background=background, key=key(image.image_path),
            category_shares=category_shares, background_shares=background_shares,
        )
        if image.split == "train" and not image.is_anomalous:
            train.append(sample)
        elif image.split == "test":
            test.append(sample)
    return train, test


# Most validation/test splits one run may be evaluated on (``BenchmarkConfig.repeats``).
MAX_REPEATS = 20


@dataclass
class BenchmarkConfig:
    """Settings of one benchmark run; every field ends up in the report."""

    model: str = "padim"  # a name in registry.MODELS
    backbone: str = "tf_efficientnet_lite0"
    layers: tuple | None = None  # None = backbone default
    image_size: int = 256
    # How images of any size enter the models (geometry.RESIZE_MODES): squash (the whole image to
    # image_size², published numbers' convention), keep_aspect (letterbox) or tiles.
    resize: str = "squash"
    tile_size: int = 256  # tiles: side of a tile in (scaled) image pixels
    tile_overlap: float = 0.25  # tiles: share of a tile overlapping its neighbour
    scale: float = 1.0  # tiles: the image is scaled by this before tiling (1 = native resolution)
    # Metrics are computed on the test images' median native size, scaled down to at most this
    # many pixels. 512²: masks are area-resampled, so no defect is lost at any canvas, and every
    # map is already upsampled from a feature grid of at most a quarter of its input (64² at the
    # default 256 px; native/4 in tiles), so a finer canvas only sharpens the ground truth's
    # edges while the evaluation's cost grows with its pixels (900² cost a bottle run 4.5x).
    eval_max_pixels: int = 512 * 512
    seed: int = 0
    n_features: int = 100  # PaDiM channel subset
    epochs: int = 10  # CFLOW
    # CFLOW's Adam step. With fiber batches of ~1024 positions 2e-4 (anomalib's per-64 default)
    # converges too slowly; 2e-3 reaches pixel AUROC 0.988 on bottle in 3 epochs (bench/).
    learning_rate: float = 2e-3
    batch_size: int = 16
    early_stopping_patience: int = 3
    val_fraction: float = 0.5
    techniques: tuple = tuple(TECHNIQUES)  # every threshold technique (thresholds.TECHNIQUES)
    # Evaluate on this many validation/test splits (seeds seed, seed+1, ...): mean and spread.
    repeats: int = 1
    normal_fpr_target: float = 0.01
    normal_sigma_k: float = NORMAL_SIGMA_K  # normal_sigma: mean + k standard deviations (3: control limits)
    device: str = "auto"
    pretrained: bool = True  # False = random weights (tests only)
    weights_path: str | None = None
    # CFLOW architecture (defaults follow the CFLOW paper / anomalib).
    coupling_blocks: int = 8
    condition_vector: int = 128
    clamp_alpha: float = 1.9
    fiber_batch_size: int = 1024
    # PatchCore: memory-bank share kept by the greedy coreset, the random projection its distances
    # are computed on, and the neighbours of the image-score reweighting (bottle at 256 px: 1 % of
    # 214 016 patches gives image AUROC 1.000 / pixel 0.982; see README).
    # Reconstruction: bottleneck width of the feature autoencoder (it trains ``epochs`` passes at
    # ``learning_rate``, like CFLOW).
    latent_dim: int = 32
    # Attribution: what the VAE's anomaly map attributes ("elbo": its negative ELBO, by gradient x
    # input; "latent": Grad-CAM of its latent mean, as Liu et al.; see attribution.py).
    attribution_target: str = "elbo"
    coreset_ratio: float = 0.01
    projection_dim: int = 64
    num_neighbors: int = 9
    # DataLoader workers (0 = load in the calling process).
    num_workers: int = 0
    # torch intra-op threads for the run (None = leave torch's setting alone). On a
    # shared, oversubscribed CPU one thread can be much faster than spin-waiting ones.
    num_threads: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers) if self.layers is not None else None
        d["techniques"] = list(self.techniques)
        return d


class BenchmarkCancelled(Exception):
    """Raised by run_benchmark when ``should_cancel()`` returns True."""
