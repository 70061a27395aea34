"""Category suggestions: what a defect's mask and pixels say about its category (no Django).

Each anomalous image is described by a short vector of named features, computed from its mask and
from its pixels against its nearest defect-free reference. Each feature stands for one thing that
tells the four categories apart (the definitions the workspace shows annotators):

=====================  ======================================================  ====================
feature                what it measures                                         speaks for
=====================  ======================================================  ====================
``components``         separate mask regions holding >= 10 % of its area        combined
``area``               log10 of the mask's share of the image                   large breaks
``solidity``           area / convex-hull area of its largest region            blobs vs cracks
``elongation``         1 - minor/major axis of its largest region               scratches, cracks
``centre_distance``    mask centroid from the image centre (rim vs interior)    structural (rim)
``lightness_shift``    mean CIE L* inside the mask, image minus reference       glare of a break
``chroma_shift``       distance of mean a*b* inside the mask, image vs ref.     contamination
``colour_change``      mean ΔE inside the mask over mean ΔE outside (log)       how visible
``edge_change``        edges inside the mask, image over reference (log)        structure changed
``reference_edges``    reference's edges inside the mask over its mean (log)    where: on structure
``novel_colour``       mask pixels with a colour the reference shows nowhere    foreign matter
=====================  ======================================================  ====================

The defect folder's name (``Image.defect_type``) is never an input: a dataset may hide it from its
annotators, and a suggestion must not carry it in by the back door.

The classifier is a multinomial logistic regression (L2, scikit-learn) on the features
standardised over the labels it learns from; its fitted numbers are a small JSON document
(``SuggestionModel.to_json``), so predicting is a dot product in NumPy, with no pickle.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

# Bump when a feature's definition changes: cached vectors of another version are recomputed.
FEATURE_VERSION = 1
FEATURE_NAMES = (
    "components", "area", "solidity", "elongation", "centre_distance",
    "lightness_shift", "chroma_shift", "colour_change", "edge_change", "reference_edges", "novel_colour",
)
# Pixels are compared at this size (longer side): enough for shape and colour, fast on a CPU.
WORK_SIZE = 256
# A mask region smaller than this share of the mask is an outline's crumb, not a second defect.
COMPONENT_SHARE = 0.10
# Reference colours are binned in CIELAB cubes of this side (ΔE ≈ 10: a clearly different colour).
COLOUR_BIN = 10.0
# The suggestion needs this many labels in the dataset, of at least this many categories.
MIN_LABELS = 5
MIN_CATEGORIES = 2
# L2 strength of the logistic regression (scikit-learn's C; 1 is its default).
REGULARISATION_C = 1.0


def _resize_rgb(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    picture = PILImage.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB")
    return np.asarray(picture.resize(size, PILImage.Resampling.BILINEAR), dtype=np.float64) / 255.0


def _work_size(height: int, width: int) -> tuple[int, int]:
    scale = WORK_SIZE / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The mask at the working size: a pixel is defect when most of its area is; a mask too thin
    for that keeps every pixel it touches (a hairline scratch must not vanish)."""
    share = np.asarray(PILImage.fromarray(mask.astype(np.uint8) * 255, "L").resize(size, PILImage.Resampling.BOX),
                       dtype=np.float64) / 255.0
    work = share >= 0.5
    return work if work.any() else share > 0


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB values in 0..1, shape (..., 3)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ np.array([[0.4124564, 0.3575761, 0.1804375],
                             [0.2126729, 0.7151522, 0.0721750],
                             [0.0193339, 0.1191920, 0.9503041]]).T
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    delta = 6 / 29
    f = np.where(xyz > delta ** 3, np.cbrt(xyz), xyz / (3 * delta ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def _edges(lightness: np.ndarray) -> np.ndarray:
    """Gradient magnitude of L* (Sobel), after a light blur so sensor noise is not structure."""
    smooth = ndimage.gaussian_filter(lightness, 1.0)
    return np.hypot(ndimage.sobel(smooth, axis=0), ndimage.sobel(smooth, axis=1)) / 8.0


def _hull_area(region: np.ndarray) -> float:
    ys, xs = np.nonzero(region)
    # Pixel corners, so that a one-pixel-wide line still has a hull of its own width.
    corners = np.concatenate([np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)])
    try:
        return float(ConvexHull(corners).volume)
    except QhullError:  # collinear corners cannot happen with pixel squares, but stay safe
        return float(region.sum())


def shape_features(mask: np.ndarray) -> dict[str, float]:
    """The mask's own features (``components`` ... ``centre_distance``); ``mask`` boolean HxW, not empty."""
    height, width = mask.shape
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = ndimage.sum(mask, labelled, range(1, count + 1))
    total = float(sizes.sum())
    largest = labelled == (int(np.argmax(sizes)) + 1)
    ys, xs = np.nonzero(largest)
    if len(xs) > 1:
        eigen = np.sort(np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(np.float64)) + np.eye(2) / 12.0))
        elongation = 1.0 - float(np.sqrt(eigen[0] / eigen[1]))
    else:
        elongation = 0.0
    cy, cx = ndimage.center_of_mass(mask)
    return {
        "components": float((sizes >= COMPONENT_SHARE * total).sum()),
        "area": float(np.log10(total / (height * width))),
        "solidity": float(largest.sum() / max(_hull_area(largest), 1.0)),
        "elongation": elongation,
        "centre_distance": float(np.hypot((cx + 0.5) / width - 0.5, (cy + 0.5) / height - 0.5) / 0.5),
    }


def _novel_colour_share(inside: np.ndarray, reference: np.ndarray) -> float:
    """Share of ``inside`` colours (Lab, N x 3) in no bin the reference fills, nor next to one."""
    def bins(lab):
        return np.floor(lab / COLOUR_BIN).astype(np.int64)

    ref_bins = bins(reference.reshape(-1, 3))
    low = ref_bins.min(0) - 1
    shape = ref_bins.max(0) - low + 2
    seen = np.zeros(shape, dtype=bool)
    seen[tuple((ref_bins - low).T)] = True
    seen = ndimage.binary_dilation(seen, structure=np.ones((3, 3, 3)))
    mine = bins(inside) - low
    within = np.all((mine >= 0) & (mine < shape), axis=1)
    known = np.zeros(len(mine), dtype=bool)
    known[within] = seen[tuple(mine[within].T)]
    return float(1.0 - known.mean())


def appearance_features(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The pixels' features (``lightness_shift`` ... ``novel_colour``); all three at one size."""
    lab_image, lab_reference = srgb_to_lab(image), srgb_to_lab(reference)
    outside = ~mask
    delta_e = np.linalg.norm(lab_image - lab_reference, axis=-1)
    edges_image, edges_reference = _edges(lab_image[..., 0]), _edges(lab_reference[..., 0])
    eps = 1e-3
    mean_in = lab_image[mask].mean(0) - lab_reference[mask].mean(0)
    change_outside = float(delta_e[outside].mean()) if outside.any() else 0.0
    return {
        "lightness_shift": float(mean_in[0] / 100.0),
        "chroma_shift": float(np.hypot(mean_in[1], mean_in[2]) / 100.0),
        "colour_change": float(np.log((delta_e[mask].mean() + 1.0) / (change_outside + 1.0))),
        "edge_change": float(np.log((edges_image[mask].mean() + eps) / (edges_reference[mask].mean() + eps))),
        "reference_edges": float(np.log((edges_reference[mask].mean() + eps) / (edges_reference.mean() + eps))),
        "novel_colour": _novel_colour_share(lab_image[mask], lab_reference),
    }


def features(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> list[float] | None:
    """The feature vector (in ``FEATURE_NAMES`` order) of ``image`` (RGB uint8 HxWx3) with its
    ``mask`` (bool HxW, the image's size) against ``reference`` (RGB uint8, any size: it is
    resized to the image's). None for an empty mask: there is nothing to describe."""
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
    if not mask.any():
        return None
    size = _work_size(*mask.shape)
    work_mask = _resize_mask(mask, size)
    values = shape_features(work_mask)
    values.update(appearance_features(_resize_rgb(image, size), _resize_rgb(reference, size), work_mask))
    return [values[name] for name in FEATURE_NAMES]


# --- the classifier ----------------------------------------------------------------------------
def enough_labels(categories) -> bool:
    """Whether labels of these categories are enough to learn from (``MIN_LABELS``, ``MIN_CATEGORIES``)."""
    categories = list(categories)
    return len(categories) >= MIN_LABELS and len(set(categories)) >= MIN_CATEGORIES


@dataclass(frozen=True)
class SuggestionModel:
    """A fitted logistic regression on standardised features: ``scores = ((x - mean) / scale) @ coef.T + intercept``."""

    classes: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray       # (classes, features); one row when there are two classes (scikit-learn's binary form)
    intercept: np.ndarray
    n_labels: int

    def probabilities(self, vectors) -> np.ndarray:
        x = (np.atleast_2d(np.asarray(vectors, dtype=np.float64)) - self.mean) / self.scale
        scores = x @ self.coef.T + self.intercept
        if len(self.classes) == 2:  # binary: the score is the second class's log-odds
            scores = np.concatenate([np.zeros_like(scores), scores], axis=1)
        scores -= scores.max(axis=1, keepdims=True)
        odds = np.exp(scores)
        return odds / odds.sum(axis=1, keepdims=True)

    def predict(self, vector) -> tuple[str, float]:
        """(the most likely category, its probability)."""
        p = self.probabilities(vector)[0]
        best = int(np.argmax(p))
        return self.classes[best], float(p[best])

    def to_json(self) -> dict:
        return {"classes": list(self.classes), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept.tolist(), "n_labels": self.n_labels,
                "features": list(FEATURE_NAMES), "version": FEATURE_VERSION}

    @classmethod
    def from_json(cls, data: dict) -> "SuggestionModel | None":
        """None for a model of other features (an older ``FEATURE_VERSION``): it is refitted."""
        if data.get("version") != FEATURE_VERSION or data.get("features") != list(FEATURE_NAMES):
            return None
        return cls(tuple(data["classes"]), np.asarray(data["mean"]), np.asarray(data["scale"]),
                   np.asarray(data["coef"]), np.asarray(data["intercept"]), int(data["n_labels"]))


def fit(vectors, categories) -> SuggestionModel:
    """Learn from feature vectors and the categories given to them (``enough_labels`` must hold).

    Classes are weighted by their inverse frequency ("balanced"): a category given rarely is not
    drowned by a common one, so a suggestion keeps pointing at rare categories it recognises.
    """
    from sklearn.linear_model import LogisticRegression

    categories = list(categories)
    if not enough_labels(categories):
        raise ValueError(f"need at least {MIN_LABELS} labels of {MIN_CATEGORIES} categories to learn from")
    x = np.asarray(vectors, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0  # a feature constant over the labels carries nothing; keep it at 0
    regression = LogisticRegression(C=REGULARISATION_C, class_weight="balanced", max_iter=1000)
    regression.fit((x - mean) / scale, categories)
    return SuggestionModel(tuple(str(c) for c in regression.classes_), mean, scale,
                           regression.coef_.astype(np.float64), regression.intercept_.astype(np.float64),
                           len(categories))


def leave_one_out(vectors, categories) -> list[str]:
    """Each label's suggestion from a classifier fitted on all the others (the honest accuracy of
    the suggestion on labels it has not seen). An image whose rest is too few labels gets ""."""
    x, categories = np.asarray(vectors, dtype=np.float64), list(categories)
    predictions = []
    for i in range(len(categories)):
        rest = [categories[j] for j in range(len(categories)) if j != i]
        if not enough_labels(rest):
            predictions.append("")
            continue
        predictions.append(fit(np.delete(x, i, axis=0), rest).predict(x[i])[0])
    return predictions
