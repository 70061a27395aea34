"""Threshold techniques: turn anomaly maps into binary masks.

Each technique is fitted on the VALIDATION part only (maps + masks of the
validation images, and which images are anomalous) and returns one scalar
threshold; a pixel is predicted anomalous when its score is ``>= threshold``.
``TECHNIQUES`` maps the public names to the strategy objects, and is the one list of
techniques: each strategy carries its ``label`` (what it does) and ``short`` name (table
headings), from which the web side's choices and labels are derived. Techniques that need
anomalous (or defect-free) validation images raise :class:`ThresholdError` with a
clear message.

Label-free operating points (no labelled defect needed): ``normal_fpr`` (a set share of the
defect-free validation pixels above it, the ``normal_fpr_target`` setting, default 1 %),
``normal_fpr_1e4`` (the same rule at one pixel in 10 000, the upper end of the AUPIMO range,
``pimo.FPR_BOUNDS``), ``normal_sigma`` (mean + k standard deviations, k the ``normal_sigma_k``
setting), ``normal_max`` and ``synthetic``.

Which images are defect-free comes from the image labels (the dataset's folders),
never from the resized masks: a thin defect can vanish when its mask is resized, and
its image must still not count as defect-free for ``normal_fpr`` / ``normal_max``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from .metrics import RankedPixels, counts_at_thresholds


class ThresholdError(ValueError):
    """The technique cannot be fitted on the given validation data."""


def _anomalous(masks: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Per image: anomalous by its label when given, else by its (resized) mask."""
    if labels is not None:
        return np.asarray(labels, dtype=bool)
    return masks.reshape(len(masks), -1).any(axis=1)


def _need_anomalous(name: str, masks: np.ndarray) -> None:
    if not masks.any():
        raise ThresholdError(
            f"threshold technique {name!r} needs anomalous images in the validation part, "
            "but it has none"
        )


def _need_normal_images(name: str, masks: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    good = ~_anomalous(masks, labels)
    if not good.any():
        raise ThresholdError(
            f"threshold technique {name!r} needs defect-free images in the validation part, "
            "but it has none"
        )
    return good


def sorted_quantiles(values: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """``np.quantile(values, qs)`` (its default, linear method), bit for bit, by one sort.

    NumPy's quantile partitions around every requested rank; for a thousand quantiles of a few
    million map pixels one sort (SIMD-accelerated for floats) is about eight times faster. The
    interpolation is NumPy's own ``_lerp`` (from the lower neighbour below t = 0.5, from the
    upper one above), so the thresholds are the ones ``np.quantile`` gives.
    """
    ordered = np.sort(np.asarray(values).ravel())
    n = ordered.size
    virtual = np.asarray(qs, dtype=np.float64) * (n - 1)
    below = np.floor(virtual).astype(np.intp)
    above = np.minimum(below + 1, n - 1)
    t = virtual - below
    a, b = ordered[below], ordered[above]
    diff = b - a
    out = a + diff * t
    np.subtract(b, diff * (1 - t), out=out, where=t >= 0.5, casting="unsafe")
    return out


def candidate_thresholds(maps: np.ndarray, masks: np.ndarray, n: int = 1000) -> np.ndarray:
    """Ascending candidate thresholds: quantiles of all scores plus of the anomalous pixels."""
    qs = np.linspace(0.0, 1.0, n + 1)
    cand = [sorted_quantiles(maps, qs)]
    if masks.any():
        cand.append(sorted_quantiles(maps[masks], qs))
    # Round to the maps' dtype: comparisons "map >= t" happen in that dtype.
    return np.unique(np.concatenate(cand).astype(maps.dtype)).astype(np.float64)


def _next_up(x) -> float:
    """Smallest value of x's dtype above x (as a Python float, exactly representable)."""
    x = np.asarray(x)
    return float(np.nextafter(x, np.array(np.inf, dtype=x.dtype)))


@dataclass(frozen=True)
class IoUCurve:
    """``iou_curve``: the threshold maximising the mean IoU over anomalous validation images.

    For each candidate threshold (quantiles of the validation scores, ~2000
    values) the IoU of every anomalous validation image is computed in one
    vectorised pass; the threshold with the highest mean IoU wins. On ties the
    highest tied threshold is taken (fewest false positives on the good images,
    which the mean over anomalous images ignores). Needs anomalous validation images.
    """

    name: str = "iou_curve"
    needs_anomalous: bool = True
    label: str = "IoU curve (max mean IoU)"
    short: str = "IoU curve"

    def curve(self, maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _need_anomalous(self.name, masks)
        thr = candidate_thresholds(maps, masks)
        ious = np.zeros(len(thr))
        anomalous = np.flatnonzero(_anomalous(masks))
        for i in anomalous:
            tp, fp = counts_at_thresholds(maps[i], masks[i], thr)
            fn = int(masks[i].sum()) - tp
            ious += tp / np.maximum(tp + fp + fn, 1)
        return thr, ious / len(anomalous)

    def fit(self, maps: np.ndarray, masks: np.ndarray, **_) -> float:
        thr, ious = self.curve(maps, masks)
        best = np.flatnonzero(ious >= ious.max() - 1e-12)
        return float(thr[best[-1]])


def _counts_at_anomalous_scores(name: str, maps: np.ndarray, masks: np.ndarray):
    """(thresholds descending, TP, FP, number of anomalous pixels) over all validation pixels, exact."""
    _need_anomalous(name, masks)
    ranked = RankedPixels(maps, masks)
    thresholds, tp, fp = ranked.counts()
    return thresholds, tp, fp, ranked.n_anomalous, ranked.n_normal


@dataclass(frozen=True)
class F1Max:
    """``f1``: the threshold with the maximum pixel F1 on the validation precision-recall curve.

    Exact over every distinct validation score: F1 = 2 TP / (TP + FP + P) only
    improves when the threshold rises to the next anomalous pixel's score (same TP,
    no more FP), so the maximum is at one of the anomalous scores, where it is
    evaluated (:meth:`metrics.RankedPixels.counts`). On ties the highest threshold
    wins. Needs anomalous validation images.
    """

    name: str = "f1"
    needs_anomalous: bool = True
    label: str = "Max F1"
    short: str = "Max F1"

    def fit(self, maps: np.ndarray, masks: np.ndarray, **_) -> float:
        thresholds, tp, fp, n_pos, _ = _counts_at_anomalous_scores(self.name, maps, masks)
        f1 = 2 * tp / (tp + fp + n_pos)
        return float(thresholds[int(np.argmax(f1))])  # descending: argmax = highest of the ties


@dataclass(frozen=True)
class RocYouden:
    """``roc``: Youden's J statistic (TPR - FPR) maximised on the validation pixel ROC curve.

    Exact over every distinct validation score, evaluated at the anomalous
    pixels' scores where the maximum lies (the same argument as for ``f1``). On ties
    the highest threshold wins. Needs anomalous validation images (and normal
    pixels, which they always have).
    """

    name: str = "roc"
    needs_anomalous: bool = True
    label: str = "ROC (Youden J)"
    short: str = "ROC (Youden)"

    def fit(self, maps: np.ndarray, masks: np.ndarray, **_) -> float:
        thresholds, tp, fp, n_pos, n_neg = _counts_at_anomalous_scores(self.name, maps, masks)
        j = tp / n_pos - fp / max(n_neg, 1)
        return float(thresholds[int(np.argmax(j))])


@dataclass(frozen=True)
class NormalFPR:
    """``normal_fpr``: the score exceeded by only a set share of defect-free validation pixels.

    Takes the pixels of the defect-free (good) validation images and returns the
    threshold ``t`` such that ``floor(target * n)`` of them score ``>= t``: the target
    false-positive rate is the run's ``normal_fpr_target`` setting (default 1 %), or
    ``fixed_target`` for a preset of the rule (``normal_fpr_1e4``). Needs no anomalous image.
    """

    name: str = "normal_fpr"
    needs_anomalous: bool = False
    label: str = "Normal-image FPR target"
    short: str = "Normal FPR"
    fixed_target: float | None = None

    def target_for(self, setting: float) -> float:
        """The false-positive rate this technique aims at, given the run's ``normal_fpr_target``."""
        return self.fixed_target if self.fixed_target is not None else setting

    def fit(self, maps: np.ndarray, masks: np.ndarray, target: float = 0.01, labels=None, **_) -> float:
        good = _need_normal_images(self.name, masks, labels)
        target = self.target_for(target)
        if not 0.0 <= target < 1.0:
            raise ThresholdError(f"normal_fpr target must be in [0, 1), got {target}")
        px = maps[good].ravel()
        m = int(np.floor(target * px.size))
        if m == 0:
            return _next_up(px.max())
        # m-th largest value: exactly m pixels are >= it (absent ties).
        kth = np.partition(px, px.size - m)[px.size - m]
        return float(kth)


# The control-chart convention (Shewhart's 3-sigma limits, the rule a quality engineer already
# applies to a process measurement): beyond 3 standard deviations of the in-control process.
# Gaussian scores would put 0.135 % of defect-free pixels above it, between ``normal_fpr`` at
# 1 % and ``normal_fpr_1e4``; anomaly scores are right-skewed, so the results page states the
# share actually above it (the threshold's percentile of the good pixels).
NORMAL_SIGMA_K = 3.0


@dataclass
class PixelMoments:
    """Per image: number, sum and sum of squares of its pixel scores (defect-free images only;
    the others count zero), shifted by ``center`` (the good pixels' mean) against cancellation.

    Any weighting of the images (a bootstrap resample draws image i ``w[i]`` times) then has
    the exact mean and standard deviation of its pixels, as weighted sums: the decision
    intervals refit ``normal_sigma`` on redrawn validation images with them.
    """

    n: np.ndarray
    total: np.ndarray
    squares: np.ndarray
    center: float
    dtype: type = np.float32  # the maps' own: thresholds are rounded to it

    @classmethod
    def of(cls, maps: np.ndarray, good: np.ndarray) -> PixelMoments:
        good = np.asarray(good, dtype=bool)
        n = np.where(good, maps[0].size if len(maps) else 0, 0).astype(np.float64)
        center = float(np.mean([m.mean(dtype=np.float64) for m in maps[good]])) if good.any() else 0.0
        total = np.zeros(len(maps))
        squares = np.zeros(len(maps))
        for i in np.flatnonzero(good):
            x = maps[i].astype(np.float64) - center
            total[i], squares[i] = x.sum(), np.dot(x.ravel(), x.ravel())
        return cls(n, total, squares, center, maps.dtype.type)

    def thresholds(self, weights: np.ndarray, k: float) -> np.ndarray:
        """(B,) mean + k * standard deviation (population) of the pixels each weight row draws,
        rounded to the maps' dtype (the comparisons ``map >= t`` happen in it)."""
        w = np.atleast_2d(weights)
        n = w @ self.n
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = (w @ self.total) / n
            var = np.maximum((w @ self.squares) / n - mean ** 2, 0.0)
        return (self.center + mean + k * np.sqrt(var)).astype(self.dtype).astype(np.float64)


@dataclass(frozen=True)
class NormalSigma:
    """``normal_sigma``: the mean of the defect-free validation pixels' scores plus k standard deviations.

    k is the run's ``normal_sigma_k`` setting (default :data:`NORMAL_SIGMA_K`, the 3-sigma
    control limit); the standard deviation is the population one over every good pixel (there
    are hundreds of thousands). Needs no anomalous image.
    """

    name: str = "normal_sigma"
    needs_anomalous: bool = False
    label: str = "Mean + k standard deviations of normal-image pixels"
    short: str = "Normal k·σ"

    def fit(self, maps: np.ndarray, masks: np.ndarray, labels=None, sigma_k: float = NORMAL_SIGMA_K, **_) -> float:
        good = _need_normal_images(self.name, masks, labels)
        if not (np.isfinite(sigma_k) and sigma_k >= 0):
            raise ThresholdError(f"normal_sigma k must be a number >= 0, got {sigma_k}")
        return float(PixelMoments.of(maps, good).thresholds(good.astype(np.float64), sigma_k)[0])


@dataclass(frozen=True)
class NormalMax:
    """``normal_max``: just above the highest score seen on defect-free validation images.

    Every good validation image is then predicted entirely normal (the threshold
    is the next float above the maximum). Needs no anomalous image.
    """

    name: str = "normal_max"
    needs_anomalous: bool = False
    label: str = "Max score on normal images"
    short: str = "Normal max"

    def fit(self, maps: np.ndarray, masks: np.ndarray, labels=None, **_) -> float:
        good = _need_normal_images(self.name, masks, labels)
        return _next_up(maps[good].max())


@dataclass(frozen=True)
class SyntheticAnomalies:
    """``synthetic``: the IoU-curve rule fitted on synthetic anomalies instead of labelled ones.

    The maps given are those of the defect-free validation images plus synthetic defects
    pasted into them (:func:`synthetic.synthetic_defects`, run through the model by the runner), so
    a product with no labelled anomalous image still gets a localisation threshold: the
    label-free baseline of the few-shot study. Needs no anomalous image.
    """

    name: str = "synthetic"
    needs_anomalous: bool = False
    label: str = "IoU curve on synthetic anomalies (no labels)"
    short: str = "Synthetic"

    def fit(self, maps: np.ndarray, masks: np.ndarray, **_) -> float:
        if not masks.any():
            raise ThresholdError("threshold technique 'synthetic' needs defect-free validation images to paste "
                                 "synthetic anomalies into, but it has none")
        return IoUCurve().fit(maps, masks)


TECHNIQUES = {
    "iou_curve": IoUCurve(),
    "f1": F1Max(),
    "roc": RocYouden(),
    "normal_fpr": NormalFPR(),
    # FPR 1e-4: the upper end of AUPIMO's range (pimo.FPR_BOUNDS), the strict label-free point
    "normal_fpr_1e4": NormalFPR(name="normal_fpr_1e4", label="Normal-image FPR 1e-4 (one pixel in 10 000)",
                                short="Normal FPR 1e-4", fixed_target=1e-4),
    "normal_sigma": NormalSigma(),
    "normal_max": NormalMax(),
    "synthetic": SyntheticAnomalies(),
}
NEEDS_ANOMALOUS = tuple(name for name, technique in TECHNIQUES.items() if technique.needs_anomalous)


def fit_threshold(name: str, maps: np.ndarray, masks: np.ndarray, normal_fpr_target: float = 0.01,
                  labels: np.ndarray | None = None, normal_sigma_k: float = NORMAL_SIGMA_K) -> float:
    """Fit technique ``name`` on validation maps/masks; raises ThresholdError or KeyError.

    ``labels`` (True = anomalous image) says which images are defect-free; without it the
    masks decide (an image with an empty resized mask then counts as defect-free).
    """
    if name not in TECHNIQUES:
        raise KeyError(f"unknown threshold technique {name!r}; known: {sorted(TECHNIQUES)}")
    return TECHNIQUES[name].fit(maps, masks, target=normal_fpr_target, labels=labels, sigma_k=normal_sigma_k)
