"""Evaluation metrics for anomaly localisation (standard definitions).

All functions take anomaly maps as an array ``(N, H, W)`` (float32 is enough)
and ground-truth masks as a bool array of the same shape, at the benchmark's
image size. Larger score = more anomalous; a pixel/image is *predicted
anomalous* when its score is ``>= threshold``.

* image AUROC / pixel AUROC: the area under the ROC curve, computed exactly as
  the Mann-Whitney statistic (a tie between a normal and an anomalous score
  counts one half), which is what :func:`sklearn.metrics.roc_auc_score` returns
  (the tests hold the two equal).
* AUPRO: the MVTec AD official definition (Bergmann et al., IJCV 2021):
  ground-truth regions are the 8-connected components of every mask
  (:func:`scipy.ndimage.label`); for a threshold, PRO is the mean over all
  regions (of all images) of the fraction of the region's pixels predicted
  anomalous, FPR is the fraction of all normal pixels (of all images) predicted
  anomalous. The PRO-vs-FPR curve is evaluated at every distinct score,
  closed with (0, 0) and (1, 1), integrated with the trapezoid rule up to
  FPR = 0.3 (linear interpolation at the limit) and divided by 0.3.
* AUPIMO: per anomalous image, its overlap against the defect-free images' FPR, over log FPR
  1e-5 to 1e-4 (Bertoldo et al. 2024, as anomalib reports it): :mod:`.pimo`.

Why not scikit-learn's curve functions here: a test folder at 256 px is millions
of pixels (bottle: 5.4 M), and ``roc_curve`` / ``precision_recall_curve`` make
several float64 and int64 copies of all of them (a few hundred MB at peak) plus a
full argsort. :class:`RankedPixels` sorts only the normal pixels' float32 scores
once, in place, and derives every pixel-level curve by binary search at the
(few) anomalous scores; the results are exact, not binned.
"""

from __future__ import annotations

import numpy as np

AUPRO_FPR_LIMIT = 0.3
_REGION_STRUCTURE = np.ones((3, 3), dtype=int)  # 8-connectivity


def _check(maps: np.ndarray, masks: np.ndarray) -> None:
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ in shape")


def image_scores(maps: np.ndarray) -> np.ndarray:
    """Image anomaly score = maximum of the map."""
    return maps.reshape(len(maps), -1).max(axis=1)


def rank_auroc(positive: np.ndarray, negative_sorted: np.ndarray) -> float:
    """Exact AUROC = P(positive > negative) + P(equal) / 2 (Mann-Whitney U / (n_pos * n_neg)).

    ``negative_sorted`` must be sorted ascending; counts are integers, so the only
    rounding is the final division.
    """
    below = np.searchsorted(negative_sorted, positive, side="left")
    upto = np.searchsorted(negative_sorted, positive, side="right")
    u2 = 2 * int(below.sum()) + int((upto - below).sum())  # twice U, an integer
    return u2 / (2.0 * len(positive) * len(negative_sorted))


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """AUROC of image scores against image labels (True = anomalous); None if one class."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores)
    if labels.all() or not labels.any():
        return None
    return rank_auroc(scores[labels], np.sort(scores[~labels]))


def _region_weights(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Per anomalous pixel (in ``masks[masks]`` order) the weight 1 / size of its region, and the region count."""
    from scipy import ndimage  # imported here: the engine's fit and inference do not need SciPy's memory

    parts, n_regions = [], 0
    for m in masks:
        if not m.any():
            continue
        labeled, n = ndimage.label(m, structure=_REGION_STRUCTURE)
        region = labeled[m]
        sizes = np.bincount(region, minlength=n + 1)
        parts.append(1.0 / sizes[region])
        n_regions += n
    weights = np.concatenate(parts) if parts else np.zeros(0)
    return weights, n_regions


class RankedPixels:
    """All pixels of ``maps``, split by ``masks`` into normal and anomalous scores, ready for exact curves.

    The normal scores (the vast majority) are copied once and sorted in place in
    their own dtype; the anomalous scores are sorted with their PRO region weights.
    Every curve is then evaluated at the distinct anomalous scores only: between
    two of them the true-positive count and the PRO are constant, so the curve is
    a horizontal segment whose area does not depend on where the normal scores
    fall inside it. The vertices kept are therefore exactly those of the curve over
    every distinct score (ties between a normal and an anomalous score give the
    same diagonal segment).
    """

    def __init__(self, maps: np.ndarray, masks: np.ndarray):
        _check(maps, masks)
        self.normal = maps[~masks]  # a copy: boolean indexing
        self.normal.sort()
        anomalous = maps[masks]
        order = np.argsort(anomalous, kind="stable")
        self.anomalous = anomalous[order]
        self._masks = masks
        self._order = order
        self.n_normal = int(self.normal.size)
        self.n_anomalous = int(self.anomalous.size)

    @property
    def both_classes(self) -> bool:
        return self.n_normal > 0 and self.n_anomalous > 0

    def auroc(self) -> float | None:
        """Pixel AUROC; None if only one class is present."""
        if not self.both_classes:
            return None
        return rank_auroc(self.anomalous, self.normal)

    def _steps(self, weights_sorted: np.ndarray):
        """Distinct anomalous scores (descending) with, at each as threshold ``t``:
        cumulative weight of anomalous pixels ``>= t``, normal pixels ``>= t`` and ``> t``."""
        desc = self.anomalous[::-1]
        w_desc = weights_sorted[::-1]
        last = np.flatnonzero(np.r_[desc[1:] != desc[:-1], True])  # last index of each run of equal scores
        thresholds = desc[last]
        gain = np.cumsum(w_desc, dtype=np.float64)[last]
        normal_ge = self.n_normal - np.searchsorted(self.normal, thresholds, side="left")
        normal_gt = self.n_normal - np.searchsorted(self.normal, thresholds, side="right")
        return thresholds, gain, normal_ge, normal_gt

    def _curve(self, weights_sorted: np.ndarray, total: float) -> tuple[np.ndarray, np.ndarray]:
        """FPR and normalised gain at every curve vertex, closed with (0, 0) and (1, 1)."""
        _, gain, normal_ge, normal_gt = self._steps(weights_sorted)
        before = np.r_[0.0, gain[:-1]]
        # per distinct anomalous score: the vertex just above it (gain unchanged), then at it
        x = np.column_stack([normal_gt, normal_ge]).ravel() / self.n_normal
        y = np.column_stack([before, gain]).ravel() / total
        return np.clip(np.r_[0.0, x, 1.0], 0, 1), np.clip(np.r_[0.0, y, 1.0], 0, 1)

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(thresholds descending, TP, FP) at every distinct anomalous score.

        Any threshold-picking criterion that prefers more true and fewer false
        positives (Youden's J, F1) reaches its maximum at one of these thresholds.
        """
        thresholds, tp, normal_ge, _ = self._steps(np.ones(self.n_anomalous))
        return thresholds, tp.astype(np.int64), normal_ge

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(FPR, TPR) vertices of the pixel ROC curve."""
        return self._curve(np.ones(self.n_anomalous), float(self.n_anomalous))

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(recall, precision) at every distinct anomalous score, from the highest threshold down."""
        _, tp, fp = self.counts()
        return tp / self.n_anomalous, tp / (tp + fp)

    def pro_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(FPR, PRO) vertices of the per-region-overlap curve (see the module docstring)."""
        weights, n_regions = _region_weights(self._masks)
        if n_regions == 0 or self.n_normal == 0:
            raise ValueError("AUPRO needs both anomalous regions and normal pixels")
        return self._curve(weights[self._order], float(n_regions))

    def aupro(self, fpr_limit: float = AUPRO_FPR_LIMIT) -> float | None:
        if not self.both_classes:
            return None
        fprs, pros = self.pro_curve()
        return trapezoid_area(fprs, pros, fpr_limit) / fpr_limit


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float | None:
    """AUROC over all pixels of all images; None if only one class is present."""
    return RankedPixels(maps, masks).auroc()


def trapezoid_area(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Area under the piecewise-linear curve (x ascending) from x[0] to ``x_max``.

    When ``x_max`` falls between two curve points, y is linearly interpolated there.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = x <= x_max
    xs, ys = x[keep], y[keep]
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
    if len(xs) and xs[-1] < x_max:
        ins = len(xs)
        if ins < len(x):  # interpolate towards the next point beyond x_max
            x0, x1, y0, y1 = x[ins - 1], x[ins], y[ins - 1], y[ins]
            y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0) if x1 > x0 else y1
            area += 0.5 * (x_max - x0) * (y0 + y_at)
    return area


def pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR and PRO at every distinct score (descending thresholds), with (0,0) and (1,1) added."""
    return RankedPixels(maps, masks).pro_curve()


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = AUPRO_FPR_LIMIT) -> float | None:
    """Normalised area under the PRO curve up to ``fpr_limit`` (MVTec AD definition)."""
    return RankedPixels(maps, masks).aupro(fpr_limit)


def threshold_free(maps: np.ndarray, masks: np.ndarray, labels: np.ndarray | None = None,
                   scores: np.ndarray | None = None) -> dict:
    """Image AUROC, pixel AUROC, AUPRO and the mean AUPIMO (:mod:`.pimo`); the pixels are ranked
    once for both pixel AUROC and AUPRO.

    ``labels`` (True = anomalous image) decide image AUROC; without them the masks do, and an
    anomalous image whose thin defect vanished from its resized mask would count as defect-free.
    ``scores``: the model's image scores (default: the maximum of each map).
    """
    _check(maps, masks)
    if labels is None:
        labels = masks.reshape(len(masks), -1).any(axis=1)
    from .pimo import PerImageOverlap

    ranked = RankedPixels(maps, masks)
    return {
        "image_auroc": image_auroc(image_scores(maps) if scores is None else scores, labels),
        "pixel_auroc": ranked.auroc(),
        "aupro": ranked.aupro(),
        "aupimo": PerImageOverlap(maps, masks, labels).mean(),
    }


def _safe_div(a: float, b: float) -> float | None:
    return float(a) / float(b) if b > 0 else None


def threshold_metrics(
    maps: np.ndarray, masks: np.ndarray, threshold: float, image_labels: np.ndarray | None = None
) -> dict:
    """Threshold-dependent metrics; pixel predicted anomalous iff score >= threshold.

    * ``iou``: dataset-level TP/(TP+FP+FN) over all pixels of all images;
    * ``mean_image_iou``: mean of per-image IoU over anomalous images only;
    * ``dice`` (= pixel F1), ``precision``, ``recall``, ``fpr`` (pixel FP/(FP+TN));
    * ``image_accuracy``: image predicted anomalous iff its max score >= threshold.
    Undefined ratios (0/0) are None.
    """
    _check(maps, masks)
    if image_labels is None:
        image_labels = masks.reshape(len(masks), -1).any(axis=1)
    tp = fp = fn = tn = 0
    image_ious = []
    for m, g, lab in zip(maps, masks, image_labels):
        p = m >= threshold
        t = int(np.count_nonzero(p & g))
        f_p = int(np.count_nonzero(p & ~g))
        f_n = int(np.count_nonzero(~p & g))
        tp, fp, fn = tp + t, fp + f_p, fn + f_n
        tn += int(g.size) - t - f_p - f_n
        if lab:
            image_ious.append(t / (t + f_p + f_n) if (t + f_p + f_n) else 0.0)
    pred_img = image_scores(maps) >= threshold
    return {
        "threshold": float(threshold),
        "iou": _safe_div(tp, tp + fp + fn),
        "mean_image_iou": float(np.mean(image_ious)) if image_ious else None,
        "dice": _safe_div(2 * tp, 2 * tp + fp + fn),
        "precision": _safe_div(tp, tp + fp),
        "recall": _safe_div(tp, tp + fn),
        "fpr": _safe_div(fp, fp + tn),
        "image_accuracy": float(np.mean(pred_img == np.asarray(image_labels, bool))) if len(maps) else None,
    }


def per_image_iou(m: np.ndarray, g: np.ndarray, threshold: float) -> float | None:
    """IoU of one image's prediction with its mask; None when both are empty."""
    p = m >= threshold
    inter = np.count_nonzero(p & g)
    union = np.count_nonzero(p | g)
    return float(inter / union) if union else None


def counts_at_thresholds(scores: np.ndarray, positive: np.ndarray, thresholds: np.ndarray):
    """TP and FP counts for every threshold of an ascending array (predicate ``>=``).

    One pass over the pixels: ``searchsorted`` gives how many thresholds each pixel
    reaches, a reversed cumulative sum gives the counts for all thresholds at once.
    """
    idx = np.searchsorted(thresholds, scores.ravel(), side="right")  # thresholds <= score
    pos = positive.ravel()
    n_t = len(thresholds)
    hp = np.bincount(idx[pos], minlength=n_t + 1)
    hn = np.bincount(idx[~pos], minlength=n_t + 1)
    # pixel with idx=k is positive for thresholds 0..k-1 -> count for t_j = sum_{k>j} h[k]
    tp = np.cumsum(hp[::-1])[::-1][1:]
    fp = np.cumsum(hn[::-1])[::-1][1:]
    return tp, fp
