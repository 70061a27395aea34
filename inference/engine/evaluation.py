"""Statistics on computed anomaly maps: intervals, cross-fitted technique choice, few-shot study.

Everything here reuses the maps the model already produced; nothing runs the model.

* **Bootstrap intervals** (:class:`Resampler`): 95 % percentile intervals over test images,
  resampled with replacement within the anomalous and the defect-free images separately
  (stratified, so every resample has both kinds), seeded. Every statistic is a function of
  per-image sufficient statistics, so a resample is a weighted sum, not a recomputation:
  pooled pixel counts for IoU/Dice/precision/recall/FPR, a matrix of pairwise comparisons for
  image AUROC, one of per-image-pair Mann-Whitney counts for pixel AUROC (all exact), and for
  AUPRO per-image PRO and false-positive counts at 371 thresholds (the quantiles of the
  normal test pixels at FPR 0, 0.001, ..., 0.3, then 0.31, ..., 1), the only statistic whose
  resamples are evaluated on a grid (the point estimate stays exact); each resample's curve is
  closed at its own FPR 0.3 by interpolation, as the point estimate's is. AUPIMO's resamples
  re-evaluate every image's curve at the redrawn defect-free images' FPR (:mod:`.pimo`).
* **Cross-fitting** (:func:`cross_fitted_selection`): inside the validation part, K folds of
  images stratified by anomalous/defect-free, each holding at least one anomalous image
  (leave-one-anomalous-image-out when there are at most 10 anomalous validation images, else
  10 folds; none below 2); each technique is fitted on K-1 folds and its TP/FP/FN pixels counted
  on the held-out fold; the counts of all folds are pooled into one IoU, the statistic the
  test part reports, and the best is chosen. Choosing by the in-sample validation IoU instead
  favours ``f1``: it maximises pooled Dice on exactly those pixels, and Dice is monotone in
  IoU; when nothing can be cross-fitted a rule fixed in advance decides (:func:`fallback_choice`).
* **Few-shot study** (:func:`few_shot_study`): test IoU when a threshold is fitted with only n
  anomalous validation images (plus every defect-free one), over seeded random draws.

Cross-fitting and the few-shot study fit thresholds among the validation-score quantiles
:func:`thresholds.candidate_thresholds` gives (the IoU curve's own candidates, ~2000): each
image's TP/FP counts at every candidate are computed once (:class:`GridCounts`), so any subset
of images is fitted by summing rows. The label-free techniques (``normal_*``) are fitted exactly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import metrics
from .pimo import PerImageOverlap
from .report import (
    Estimate,
    FewShot,
    FewShotCurve,
    FewShotPoint,
    FitFailure,
    ImageClassification,
    ImageClassificationEstimates,
    Segmentation,
    SegmentationEstimates,
    Selection,
    SelectionEntry,
    ThresholdFreeEstimates,
)
from .thresholds import (NEEDS_ANOMALOUS, NORMAL_SIGMA_K, TECHNIQUES, ThresholdError, candidate_thresholds,
                         fit_threshold)

RESAMPLES = 1000
CONFIDENCE = 0.95
FEW_SHOT_DRAWS = 20
FEW_SHOT_TOLERANCE = 0.02
MAX_FOLDS = 10
# The AUPRO resamples' thresholds: the point sample's normal-pixel FPR 0, 0.001, ..., 0.3 and on,
# coarser, to 1. A resample's own FPR at a grid threshold differs from the point sample's, so a
# grid that stopped at 0.3 would leave about half the curves short of 0.3, integrated short and
# still divided by 0.3 (biased low); reaching FPR 1 every curve crosses 0.3 and is closed there.
AUPRO_GRID = np.r_[np.linspace(0.0, metrics.AUPRO_FPR_LIMIT, 301), np.linspace(0.31, 1.0, 70)]



def failure_of(exc: ThresholdError) -> FitFailure:
    text = str(exc)
    if "needs anomalous" in text:
        reason = "no_anomalous_validation_images"
    elif "needs defect-free" in text:
        reason = "no_defect_free_validation_images"
    else:
        reason = "invalid_setting"
    return FitFailure(reason=reason, message=text)


def _ratio(a, b):
    """a / b elementwise as float64, NaN where b == 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _value(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


# ---- per-image pixel counts -------------------------------------------------------------------
@dataclass
class PixelCounts:
    """Per image: pixels predicted anomalous inside (tp) and outside (fp) the mask, mask and normal pixel counts."""

    tp: np.ndarray
    fp: np.ndarray
    pos: np.ndarray
    neg: np.ndarray

    @classmethod
    def at(cls, maps: np.ndarray, masks: np.ndarray, threshold: float) -> PixelCounts:
        tp = np.empty(len(maps), np.int64)
        fp = np.empty(len(maps), np.int64)
        for i, (m, g) in enumerate(zip(maps, masks)):
            p = m >= threshold
            tp[i] = np.count_nonzero(p & g)
            fp[i] = np.count_nonzero(p) - tp[i]
        pos = masks.reshape(len(masks), -1).sum(axis=1).astype(np.int64)
        neg = masks[0].size - pos if len(masks) else np.zeros(0, np.int64)
        return cls(tp, fp, pos, np.asarray(neg, np.int64))

    def take(self, idx) -> PixelCounts:
        return PixelCounts(self.tp[idx], self.fp[idx], self.pos[idx], self.neg[idx])


def segmentation_stats(c: PixelCounts, anomalous: np.ndarray, weights: np.ndarray | None = None) -> dict:
    """Pooled pixel metrics; with ``weights`` (B, N) one value per resample, else scalars."""
    w = np.ones((1, len(c.tp))) if weights is None else weights
    tp, fp, pos, neg = w @ c.tp, w @ c.fp, w @ c.pos, w @ c.neg
    fn = pos - tp
    # per-image IoU of the anomalous images with a mask: TP / (FP + mask)
    has_mask = anomalous & (c.pos > 0)
    image_iou = _ratio(c.tp, c.fp + c.pos)
    wa = w[:, has_mask]
    good = ~anomalous
    out = {
        "iou": _ratio(tp, tp + fp + fn),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, pos),
        "fpr": _ratio(fp, neg),
        "mean_image_iou": _ratio(wa @ image_iou[has_mask], wa.sum(axis=1)),
        "good_image_fpr": _ratio(w[:, good] @ c.fp[good], w[:, good] @ (c.pos + c.neg)[good]),
    }
    return {k: (v if weights is not None else v[0]) for k, v in out.items()}


def segmentation(c: PixelCounts, anomalous: np.ndarray) -> Segmentation:
    s = segmentation_stats(c, anomalous)
    return Segmentation(**{k: _value(s[k]) for k in ("iou", "dice", "precision", "recall", "fpr", "mean_image_iou")})


# ---- bootstrap --------------------------------------------------------------------------------
class Resampler:
    """Stratified bootstrap weights over images: ``weights[b, i]`` = times image i is drawn in resample b."""

    def __init__(self, anomalous: np.ndarray, seed: int, resamples: int = RESAMPLES, stream: int = 0):
        """``stream``: an independent draw for the same seed (0: the test part; 1: the validation
        part, redrawn for the decision intervals)."""
        anomalous = np.asarray(anomalous, dtype=bool)
        rng = np.random.default_rng([seed, 20261130] + ([stream] if stream else []))
        n = len(anomalous)
        self.weights = np.zeros((resamples, n), dtype=np.float64)
        rows = np.arange(resamples)[:, None]
        for group in (np.flatnonzero(anomalous), np.flatnonzero(~anomalous)):
            if len(group):
                drawn = group[rng.integers(0, len(group), size=(resamples, len(group)))]
                np.add.at(self.weights, (rows, drawn), 1.0)
        self.resamples = resamples

    def interval(self, values: np.ndarray) -> tuple[float | None, float | None]:
        return self.percentile_interval(values)

    @staticmethod
    def percentile_interval(values: np.ndarray) -> tuple[float | None, float | None]:
        """The 95 % percentile interval of resampled values; None where too many are undefined."""
        values = np.asarray(values, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if len(finite) < 0.9 * len(values):  # undefined in too many resamples to say
            return None, None
        alpha = (1.0 - CONFIDENCE) / 2
        low, high = np.quantile(finite, [alpha, 1.0 - alpha])
        return float(low), float(high)

    def estimate(self, point, values) -> Estimate:
        point = None if point is None else _value(point)
        if point is None:
            return Estimate(None)
        low, high = self.interval(values)
        return Estimate(point, low, high)


def segmentation_estimates(c: PixelCounts, anomalous: np.ndarray, resampler: Resampler) -> SegmentationEstimates:
    point = segmentation_stats(c, anomalous)
    boot = segmentation_stats(c, anomalous, resampler.weights)
    return SegmentationEstimates(**{k: resampler.estimate(point[k], boot[k]) for k in point})


def image_auroc_resamples(scores: np.ndarray, anomalous: np.ndarray, weights: np.ndarray) -> np.ndarray:
    a, g = scores[anomalous], scores[~anomalous]
    if not len(a) or not len(g):
        return np.full(len(weights), np.nan)
    pairs = (a[:, None] > g[None, :]) + 0.5 * (a[:, None] == g[None, :])
    wa, wg = weights[:, anomalous], weights[:, ~anomalous]
    return _ratio(((wa @ pairs) * wg).sum(axis=1), wa.sum(axis=1) * wg.sum(axis=1))


class PixelRanks:
    """Per-image sorted normal scores and anomalous scores, for pixel AUROC and AUPRO resamples."""

    def __init__(self, maps: np.ndarray, masks: np.ndarray):
        self.normal = [np.sort(m[~g]) for m, g in zip(maps, masks)]
        self.anomalous = [m[g] for m, g in zip(maps, masks)]
        self.n_normal = np.array([len(x) for x in self.normal], dtype=np.float64)
        self.n_anomalous = np.array([len(x) for x in self.anomalous], dtype=np.float64)
        self.masks = masks

    def pixel_auroc_resamples(self, weights: np.ndarray) -> np.ndarray:
        """Mann-Whitney U for every resample from the (N, N) matrix of per-image-pair counts (exact)."""
        n = len(self.normal)
        owners = np.concatenate([np.full(len(a), i) for i, a in enumerate(self.anomalous)]) if n else np.zeros(0, int)
        pooled = np.concatenate(self.anomalous) if n else np.zeros(0)
        order = np.argsort(pooled, kind="stable")  # sorted queries: searchsorted walks memory in order
        pooled, owners = pooled[order], owners[order]
        twice_u = np.zeros((n, n), dtype=np.float64)  # [anomalous image i, normal image j]
        if len(pooled):
            for j, normal in enumerate(self.normal):
                below = np.searchsorted(normal, pooled, side="left")
                upto = np.searchsorted(normal, pooled, side="right")
                twice_u[:, j] = np.bincount(owners, weights=(below + upto).astype(np.float64), minlength=n)
        u = ((weights @ twice_u) * weights).sum(axis=1) / 2.0
        return _ratio(u, (weights @ self.n_anomalous) * (weights @ self.n_normal))

    def aupro_resamples(self, weights: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        # per-image normals are sorted already: a stable (merge) sort of their concatenation is cheap
        all_normal = np.sort(np.concatenate(self.normal), kind="stable") if self.normal else np.zeros(0)
        if not len(all_normal) or not self.n_anomalous.any():
            return np.full(len(weights), np.nan)
        # thresholds at which the pooled normal pixels' FPR is AUPRO_GRID (0 ... 1)
        ranks = np.clip(np.ceil((1.0 - AUPRO_GRID) * len(all_normal)).astype(int), 0, len(all_normal) - 1)
        thresholds = np.r_[np.nextafter(all_normal[-1], np.inf), all_normal[ranks[1:]]]
        n, t = len(self.normal), len(thresholds)
        false_pos = np.zeros((n, t))
        overlap = np.zeros((n, t))
        regions = np.zeros(n)
        for i, (normal, g) in enumerate(zip(self.normal, self.masks)):
            false_pos[i] = len(normal) - np.searchsorted(normal, thresholds, side="left")
            if not g.any():
                continue
            labeled, k = ndimage.label(g, structure=np.ones((3, 3), int))
            region = labeled[g]
            sizes = np.bincount(region, minlength=k + 1)
            order = np.argsort(self.anomalous[i])
            scores = self.anomalous[i][order]
            cum = np.r_[0.0, np.cumsum((1.0 / sizes[region])[order])]
            overlap[i] = cum[-1] - cum[np.searchsorted(scores, thresholds, side="left")]
            regions[i] = k
        fpr = _ratio(weights @ false_pos, (weights @ self.n_normal)[:, None])
        pro = _ratio(weights @ overlap, (weights @ regions)[:, None])
        return _areas_to_limit(np.c_[np.zeros(len(weights)), fpr], np.c_[np.zeros(len(weights)), pro],
                               metrics.AUPRO_FPR_LIMIT) / metrics.AUPRO_FPR_LIMIT


def _areas_to_limit(x: np.ndarray, y: np.ndarray, limit: float) -> np.ndarray:
    """Row-wise :func:`metrics.trapezoid_area`: x ascending along each row, starting at 0."""
    rows = np.arange(len(x))
    segments = (x[:, 1:] - x[:, :-1]) * (y[:, 1:] + y[:, :-1]) / 2.0
    cum = np.c_[np.zeros(len(x)), np.cumsum(segments, axis=1)]
    k = (x <= limit).sum(axis=1)  # points up to the limit: a prefix, at least the leading 0
    area = cum[rows, k - 1]
    inside = k < x.shape[1]
    kk = np.minimum(k, x.shape[1] - 1)
    x0, x1, y0, y1 = x[rows, k - 1], x[rows, kk], y[rows, k - 1], y[rows, kk]
    with np.errstate(divide="ignore", invalid="ignore"):
        y_at = np.where(x1 > x0, y0 + (y1 - y0) * (limit - x0) / (x1 - x0), y1)
    area = area + np.where(inside & (x0 < limit), 0.5 * (limit - x0) * (y0 + y_at), 0.0)
    return np.where(np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1), area, np.nan)


def threshold_free_estimates(maps, masks, anomalous, resampler: Resampler, scores=None,
                             overlap: PerImageOverlap | None = None) -> ThresholdFreeEstimates:
    """``overlap``: these images' AUPIMO, when the caller holds it already."""
    scores = metrics.image_scores(maps) if scores is None else scores
    point = metrics.threshold_free(maps, masks, anomalous, scores=scores)
    ranks = PixelRanks(maps, masks)
    overlap = PerImageOverlap(maps, masks, anomalous) if overlap is None else overlap
    w = resampler.weights
    return ThresholdFreeEstimates(
        image_auroc=resampler.estimate(point["image_auroc"], image_auroc_resamples(scores, anomalous, w)),
        pixel_auroc=resampler.estimate(point["pixel_auroc"], ranks.pixel_auroc_resamples(w)),
        aupro=resampler.estimate(point["aupro"], ranks.aupro_resamples(w)),
        aupimo=resampler.estimate(point["aupimo"], overlap.mean_resamples(w)),
    )


# ---- image-level decision ---------------------------------------------------------------------
IMAGE_RULE = ("Youden's J (true-positive rate minus false-positive rate) maximised on the validation "
              "part's image scores; on ties the highest threshold")


def fit_image_threshold(scores: np.ndarray, anomalous: np.ndarray) -> float:
    """Exact: J only improves when the threshold rises to the next anomalous score."""
    a, g = scores[anomalous], np.sort(scores[~anomalous])
    if not len(a):
        raise ThresholdError("the image threshold needs anomalous images in the validation part, but it has none")
    if not len(g):
        raise ThresholdError("the image threshold needs defect-free images in the validation part, but it has none")
    cand = np.unique(a)[::-1]  # descending
    tpr = (a[None, :] >= cand[:, None]).sum(axis=1) / len(a)
    fpr = (len(g) - np.searchsorted(g, cand, side="left")) / len(g)
    return float(cand[int(np.argmax(tpr - fpr))])


def image_stats(scores, anomalous, threshold, weights=None) -> dict:
    w = np.ones((1, len(scores))) if weights is None else weights
    pred = scores >= threshold
    tp, fp = w @ (pred & anomalous), w @ (pred & ~anomalous)
    n_pos, n_neg = w @ anomalous, w @ ~anomalous
    out = {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, n_pos),
           "accuracy": _ratio(tp + (n_neg - fp), n_pos + n_neg), "fpr": _ratio(fp, n_neg)}
    return {k: (v if weights is not None else v[0]) for k, v in out.items()}


def image_classification(scores, anomalous, threshold) -> ImageClassification:
    return ImageClassification(**{k: _value(v) for k, v in image_stats(scores, anomalous, threshold).items()})


def image_estimates(scores, anomalous, threshold, resampler: Resampler) -> ImageClassificationEstimates:
    point = image_stats(scores, anomalous, threshold)
    boot = image_stats(scores, anomalous, threshold, resampler.weights)
    return ImageClassificationEstimates(**{k: resampler.estimate(point[k], boot[k]) for k in point})


# ---- thresholds on a grid of candidates ---------------------------------------------------------
class GridCounts:
    """Per image, TP and FP pixel counts at every candidate threshold (ascending)."""

    def __init__(self, maps: np.ndarray, masks: np.ndarray, thresholds: np.ndarray):
        self.thresholds = thresholds
        n, t = len(maps), len(thresholds)
        self.tp = np.zeros((n, t), np.int64)
        self.fp = np.zeros((n, t), np.int64)
        for i, (m, g) in enumerate(zip(maps, masks)):
            self.tp[i], self.fp[i] = metrics.counts_at_thresholds(m, g, thresholds)
        self.pos = masks.reshape(n, -1).sum(axis=1).astype(np.int64)
        self.neg = (masks[0].size if n else 0) - self.pos

    def pooled_iou(self, idx) -> np.ndarray:
        tp, fp, pos = self.tp[idx].sum(0), self.fp[idx].sum(0), self.pos[idx].sum()
        return _ratio(tp, fp + pos)


def last_argmax_rows(values: np.ndarray) -> np.ndarray:
    """Per row, the index of the maximum; on ties the last (the highest threshold of an ascending grid)."""
    v = np.where(np.isfinite(values), values, -np.inf)
    best = v >= v.max(axis=1, keepdims=True) - 1e-12
    return values.shape[1] - 1 - np.argmax(best[:, ::-1], axis=1)


def grid_fit_weighted(name: str, grid: GridCounts, weights: np.ndarray, anomalous: np.ndarray) -> np.ndarray:
    """(B,) indices into ``grid.thresholds`` of the labelled-defect technique ``name`` (iou_curve,
    f1, roc) fitted on each row of ``weights`` (B, images): how often each image is drawn."""
    w = weights
    if name == "iou_curve":
        has = anomalous & (grid.pos > 0)
        ious = _ratio(grid.tp[has], grid.fp[has] + grid.pos[has][:, None])
        return last_argmax_rows(_ratio(w[:, has] @ ious, w[:, has].sum(axis=1)[:, None]))
    tp, fp, pos, neg = w @ grid.tp, w @ grid.fp, w @ grid.pos, w @ grid.neg
    if name == "f1":
        return last_argmax_rows(_ratio(2 * tp, tp + fp + pos[:, None]))
    if name == "roc":
        return last_argmax_rows(tp / np.maximum(pos, 1)[:, None] - fp / np.maximum(neg, 1)[:, None])
    raise KeyError(name)


def grid_fit(name: str, grid: GridCounts, idx: np.ndarray, anomalous: np.ndarray) -> int:
    """Index into ``grid.thresholds`` of technique ``name`` fitted on images ``idx``."""
    idx = np.asarray(idx, dtype=int)
    if not (anomalous[idx] & (grid.pos[idx] > 0)).any():
        raise ThresholdError(f"threshold technique {name!r} needs anomalous images in the validation part, "
                             "but it has none")
    weights = np.bincount(idx, minlength=len(grid.pos)).astype(np.float64)[None, :]
    return int(grid_fit_weighted(name, grid, weights, anomalous)[0])


@dataclass
class ValidationData:
    """The validation part's maps, plus (optionally) synthetic anomalies made from its defect-free images.

    ``synthetic_source[k]`` is the validation index of the defect-free image synthetic map k was
    made from: a fold that does not hold that image never sees its synthetic copy.
    """

    maps: np.ndarray
    masks: np.ndarray
    anomalous: np.ndarray
    synthetic_maps: np.ndarray | None = None
    synthetic_masks: np.ndarray | None = None
    synthetic_source: np.ndarray | None = None
    normal_sigma_k: float = NORMAL_SIGMA_K  # the run's setting for ``normal_sigma``
    _grid: GridCounts | None = None

    @property
    def grid(self) -> GridCounts | None:
        """Per-image counts at the IoU curve's candidate thresholds (None without anomalous pixels)."""
        if self._grid is None and self.masks.any():
            self._grid = GridCounts(self.maps, self.masks, candidate_thresholds(self.maps, self.masks))
        return self._grid

    def fit(self, name: str, idx, normal_fpr_target: float) -> float:
        """Technique ``name`` fitted exactly on validation images ``idx`` (and their synthetic copies)."""
        idx = np.asarray(idx, dtype=int)
        if name == "synthetic":
            maps, masks, anomalous = self._synthetic_set(idx)
            return TECHNIQUES["synthetic"].fit(maps, masks)
        return fit_threshold(name, self.maps[idx], self.masks[idx], normal_fpr_target,
                             labels=self.anomalous[idx], normal_sigma_k=self.normal_sigma_k)

    def _synthetic_set(self, idx):
        if self.synthetic_maps is None:
            raise ThresholdError("the synthetic technique needs synthetic anomalies, and none were made")
        good = idx[~self.anomalous[idx]]
        keep = np.isin(self.synthetic_source, good)
        if not keep.any():
            raise ThresholdError("threshold technique 'synthetic' needs defect-free validation images to paste "
                                 "synthetic anomalies into, but it has none")
        maps = np.concatenate([self.maps[good], self.synthetic_maps[keep]])
        masks = np.concatenate([self.masks[good], self.synthetic_masks[keep]])
        anomalous = np.r_[np.zeros(len(good), bool), np.ones(int(keep.sum()), bool)]
        return maps, masks, anomalous


def make_folds(anomalous: np.ndarray, keys: Sequence[str], seed: int) -> tuple[list[np.ndarray], str]:
    """Stratified folds of validation images, every fold holding at least one anomalous image.

    A fold without an anomalous image would score a threshold on defect-free pixels only, where
    any false positive costs and none can be made up, tilting the choice towards thresholds that
    never fire. So there are as many folds as anomalous images, at most :data:`MAX_FOLDS`, and
    none at all below 2 anomalous images (the caller falls back, see :func:`fallback_choice`).
    """
    n_anomalous = int(anomalous.sum())
    k = min(n_anomalous, MAX_FOLDS)
    if k < 2:
        return [], (f"not cross-fitted: {n_anomalous} anomalous validation image(s), and folds that each "
                    "hold one need at least 2")
    rng = np.random.default_rng([seed, 7])
    folds = [[] for _ in range(k)]
    for group in (np.flatnonzero(anomalous), np.flatnonzero(~anomalous)):
        order = sorted(group, key=lambda i: keys[i])
        order = [order[j] for j in rng.permutation(len(order))]
        for j, i in enumerate(order):
            folds[j % k].append(i)
    if n_anomalous <= MAX_FOLDS:
        method = (f"leave-one-anomalous-image-out: {k} folds, each holding one anomalous validation image "
                  "and a share of the defect-free ones")
    else:
        method = f"{k}-fold, stratified by anomalous / defect-free validation images"
    return [np.array(sorted(f), dtype=int) for f in folds], method


SELECTION_RULE = ("highest IoU pooled over the held-out folds (each fold's TP, FP and FN pixels at the "
                  "threshold fitted on the other folds, summed: the same IoU the test part reports)")


def _fold_threshold(val: ValidationData, grid: GridCounts | None, name: str, train: np.ndarray,
                    normal_fpr_target: float) -> float:
    if name in NEEDS_ANOMALOUS:
        if grid is None:
            raise ThresholdError(f"threshold technique {name!r} needs anomalous images in the "
                                 "validation part, but it has none")
        return float(grid.thresholds[grid_fit(name, grid, train, val.anomalous)])
    return val.fit(name, train, normal_fpr_target)


def cross_fitted_selection(val: ValidationData, keys: Sequence[str], techniques: Sequence[str],
                           normal_fpr_target: float, seed: int) -> Selection:
    """Choose the technique by cross-fitting inside the validation part (see the module docstring)."""
    folds, method = make_folds(val.anomalous, keys, seed)
    n = len(val.maps)
    grid = val.grid if folds and any(t in NEEDS_ANOMALOUS for t in techniques) else None
    entries = []
    for name in techniques:
        if not folds:
            entries.append(SelectionEntry(name, None, 0, FitFailure(
                "too_few_anomalous_validation_images",
                f"{name} cannot be cross-fitted: {method.removeprefix('not cross-fitted: ')}")))
            continue
        tp = fp = fn = 0
        failure = None
        for held in folds:
            try:
                threshold = _fold_threshold(val, grid, name, np.setdiff1d(np.arange(n), held), normal_fpr_target)
            except ThresholdError as exc:
                failure = failure_of(exc)
                break
            c = PixelCounts.at(val.maps[held], val.masks[held], threshold)
            tp, fp, fn = tp + int(c.tp.sum()), fp + int(c.fp.sum()), fn + int((c.pos - c.tp).sum())
        if failure is not None or tp + fp + fn == 0:
            entries.append(SelectionEntry(name, None, 0, failure))
        else:
            entries.append(SelectionEntry(name, tp / (tp + fp + fn), len(folds), None))
    scored = [e for e in entries if e.cv_iou is not None]
    chosen = max(scored, key=lambda e: e.cv_iou).technique if scored else None  # first on ties
    return Selection(method=method, n_folds=len(folds), rule=SELECTION_RULE, chosen=chosen, entries=entries)


def fallback_choice(fitted: Sequence[str]) -> tuple[str | None, str]:
    """The technique, among those fitted on the whole validation part, when none could be cross-fitted,
    and the rule that chose it.

    The rule is fixed in advance, not an in-sample score: on the pixels it was fitted on ``f1``
    maximises pooled Dice, hence IoU, so an in-sample comparison would always pick it. The IoU
    curve fits the reported criterion itself, so it comes first; without labelled defects the
    synthetic technique does the same on synthetic ones; else the first fitted in the launch's order.
    """
    for name in ("iou_curve", "synthetic"):
        if name in fitted:
            return name, (f"no technique could be cross-fitted, so a rule fixed in advance: {name}, fitted on "
                          "the whole validation part (it maximises IoU itself; in-sample IoU would always "
                          "favour f1)")
    if fitted:
        return fitted[0], ("no technique could be cross-fitted, so a rule fixed in advance: the first "
                           f"technique fitted on the whole validation part in the launch's order ({fitted[0]})")
    return None, "no technique could be cross-fitted or fitted"


# ---- few-shot study ---------------------------------------------------------------------------
def few_shot_n_values(n_available: int) -> list[int]:
    steps = [1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000]
    return [n for n in steps if n < n_available] + ([n_available] if n_available else [])


def few_shot_study(val: ValidationData, test_maps: np.ndarray, test_masks: np.ndarray,
                   techniques: Sequence[str], normal_fpr_target: float, seed: int) -> FewShot:
    """Test IoU against the number of anomalous validation images the threshold is fitted on."""
    anomalous_idx = np.flatnonzero(val.anomalous)
    good_idx = np.flatnonzero(~val.anomalous)
    n_values = few_shot_n_values(len(anomalous_idx))
    grid = val.grid
    thresholds = grid.thresholds if grid is not None else np.zeros(0)
    test_grid = GridCounts(test_maps, test_masks, thresholds)
    test_iou_at = test_grid.pooled_iou(np.arange(len(test_maps)))
    rng = np.random.default_rng([seed, 11])
    draws = {n: ([anomalous_idx] if n == len(anomalous_idx) else
                 [rng.choice(anomalous_idx, size=n, replace=False) for _ in range(FEW_SHOT_DRAWS)])
             for n in n_values}
    curves = []
    for name in techniques:
        needs = name in NEEDS_ANOMALOUS
        failure, points = None, []
        try:
            if needs:
                if grid is None:
                    raise ThresholdError(f"threshold technique {name!r} needs anomalous images in the validation "
                                         "part, but it has none")
                for n, sets in draws.items():
                    ious = [test_iou_at[grid_fit(name, grid, np.r_[good_idx, chosen], val.anomalous)]
                            for chosen in sets]
                    points.append(_few_shot_point(n, ious))
            else:  # label-free: one threshold, whatever n is
                threshold = val.fit(name, np.arange(len(val.maps)), normal_fpr_target)
                c = PixelCounts.at(test_maps, test_masks, threshold)
                iou = float(segmentation_stats(c, test_masks.reshape(len(test_masks), -1).any(1))["iou"])
                points = [FewShotPoint(n, _value(iou), _value(iou), _value(iou), 1) for n in [0, *n_values]]
        except ThresholdError as exc:
            failure, points = failure_of(exc), []
        curves.append(FewShotCurve(name, needs, points, _enough(points), failure))
    return FewShot(draws=FEW_SHOT_DRAWS, candidates=len(thresholds), tolerance=FEW_SHOT_TOLERANCE,
                   n_values=n_values, n_available=len(anomalous_idx), curves=curves)


def _few_shot_point(n: int, ious: list[float]) -> FewShotPoint:
    values = np.array([v for v in ious if math.isfinite(v)])
    if not len(values):
        return FewShotPoint(n, None, None, None, len(ious))
    low, high = np.quantile(values, [0.025, 0.975])
    return FewShotPoint(n, float(values.mean()), float(low), float(high), len(ious))


def _enough(points: list[FewShotPoint]) -> int | None:
    if not points or points[-1].iou_mean is None:
        return None
    target = points[-1].iou_mean - FEW_SHOT_TOLERANCE
    for p in points:
        if p.iou_mean is not None and p.iou_mean >= target:
            return p.n_anomalous
    return None


# ---- synthetic anomalies ----------------------------------------------------------------------
# ---- evidence ---------------------------------------------------------------------------------
def test_images_digest(entries: Sequence[tuple]) -> str:
    """A digest of the test part's images and labels: equal digests = the same evidence."""
    h = hashlib.sha256()
    for entry in sorted(entries):
        h.update(repr(entry).encode())
    return h.hexdigest()[:16]


def paired_difference(counts_a: Sequence[Sequence[int]], counts_b: Sequence[Sequence[int]],
                      anomalous: Sequence[bool], seed: int, resamples: int = RESAMPLES) -> Estimate:
    """IoU(a) - IoU(b) on the same test images, with a paired bootstrap interval.

    ``counts_*``: per image [TP, FP, FN] pixels of each candidate (the reports' ``per_image``
    counts, in the same image order). The same resamples are drawn for both, so the interval
    is that of the difference itself, not of two independent estimates.
    """
    a = np.asarray(counts_a, dtype=np.float64).reshape(-1, 3)
    b = np.asarray(counts_b, dtype=np.float64).reshape(-1, 3)
    w = Resampler(np.asarray(anomalous, bool), seed, resamples).weights

    def iou(c, weights):
        tp, fp, fn = weights @ c[:, 0], weights @ c[:, 1], weights @ c[:, 2]
        return _ratio(tp, tp + fp + fn)

    ones = np.ones((1, len(a)))
    point = float((iou(a, ones) - iou(b, ones))[0])
    diff = iou(a, w) - iou(b, w)
    finite = diff[np.isfinite(diff)]
    if not math.isfinite(point) or len(finite) < 0.9 * len(diff):
        return Estimate(None)
    low, high = np.quantile(finite, [(1 - CONFIDENCE) / 2, 1 - (1 - CONFIDENCE) / 2])
    return Estimate(point, float(low), float(high))


def paired_resample_difference(point: float | None, a: Sequence[float | None],
                               b: Sequence[float | None]) -> Estimate:
    """``point`` (IoU(a) - IoU(b)) with the interval of the per-resample differences ``a - b``: the
    decision intervals' resamples of two runs that drew the same resamples (same test images,
    same seed), so it holds where each procedure's threshold lands, paired."""
    if point is None or not math.isfinite(point) or len(a) != len(b) or not len(a):
        return Estimate(None)
    x = np.array([np.nan if v is None else v for v in a], dtype=np.float64)
    y = np.array([np.nan if v is None else v for v in b], dtype=np.float64)
    diff = x - y
    finite = diff[np.isfinite(diff)]
    if len(finite) < 0.9 * len(diff):
        return Estimate(None)
    low, high = np.quantile(finite, [(1 - CONFIDENCE) / 2, 1 - (1 - CONFIDENCE) / 2])
    return Estimate(float(point), float(low), float(high))


def mean_spread(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return None, None, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)

