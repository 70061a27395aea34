"""Evaluation metrics for anomaly localisation (standard definitions).

All functions take anomaly maps as an array ``(N, H, W)`` (float32 is enough)
and ground-truth masks as a bool array of the same shape, at the benchmark's
image size. Larger score = more anomalous; a pixel/image is *predicted
anomalous* when its score is ``>= threshold``.

* image AUROC / pixel AUROC: :func:`sklearn.metrics.roc_auc_score`.
* AUPRO: the MVTec AD official definition (Bergmann et al., IJCV 2021):
  ground-truth regions are the 8-connected components of every mask
  (:func:`scipy.ndimage.label`); for a threshold, PRO is the mean over all
  regions (of all images) of the fraction of the region's pixels predicted
  anomalous, FPR is the fraction of all normal pixels (of all images) predicted
  anomalous. The PRO-vs-FPR curve is evaluated at every distinct score,
  closed with (0, 0) and (1, 1), integrated with the trapezoid rule up to
  FPR = 0.3 (linear interpolation at the limit) and divided by 0.3.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

AUPRO_FPR_LIMIT = 0.3


def _check(maps: np.ndarray, masks: np.ndarray) -> None:
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ in shape")


def image_scores(maps: np.ndarray) -> np.ndarray:
    """Image anomaly score = maximum of the map."""
    return maps.reshape(len(maps), -1).max(axis=1)


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """AUROC of image scores against image labels (True = anomalous); None if one class."""
    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float | None:
    """AUROC over all pixels of all images; None if only one class is present."""
    _check(maps, masks)
    y = masks.ravel()
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, maps.ravel()))


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
    """FPR and PRO at every distinct score (descending thresholds), with (0,0) and (1,1) added.

    Memory-lean: one descending sort of all scores; normal pixels are counted with an
    int32 cumulative sum, and the per-region weights 1 / (region size * n_regions)
    are accumulated over the (few) anomalous pixels only.
    """
    _check(maps, masks)
    structure = np.ones((3, 3), dtype=int)
    weights = np.zeros(maps.shape, dtype=np.float32)  # per anomalous pixel: 1/region size
    n_regions = 0
    for i in range(len(masks)):
        if not masks[i].any():
            continue
        labeled, n = ndimage.label(masks[i], structure=structure)
        counts = np.bincount(labeled.ravel(), minlength=n + 1).astype(np.float64)
        w = np.zeros(n + 1)
        w[1:] = 1.0 / counts[1:]
        weights[i] = w[labeled]
        n_regions += n
    flat_mask = masks.ravel()
    n_normal = int(flat_mask.size - np.count_nonzero(flat_mask))
    if n_regions == 0 or n_normal == 0:
        raise ValueError("AUPRO needs both anomalous regions and normal pixels")
    scores = maps.ravel()
    order = np.argsort(scores, kind="stable")[::-1].astype(np.int32 if scores.size < 2**31 else np.int64)
    s_sorted = scores[order]
    # last index of each run of equal scores (threshold = that score, ">=")
    ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    del s_sorted
    m_sorted = flat_mask[order]
    anom_pos = np.flatnonzero(m_sorted)  # sorted positions of anomalous pixels
    pro_cum = np.cumsum(weights.ravel()[order[anom_pos]].astype(np.float64)) / n_regions
    del order, weights
    n_anom_upto = np.searchsorted(anom_pos, ends, side="right")  # anomalous pixels at or above
    pros = np.where(n_anom_upto > 0, pro_cum[np.maximum(n_anom_upto - 1, 0)], 0.0)
    fprs = (ends + 1 - n_anom_upto) / n_normal
    fprs, pros = np.clip(fprs, 0, 1), np.clip(pros, 0, 1)
    return np.r_[0.0, fprs, 1.0], np.r_[0.0, pros, 1.0]


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = AUPRO_FPR_LIMIT) -> float | None:
    """Normalised area under the PRO curve up to ``fpr_limit`` (MVTec AD definition)."""
    if not masks.any() or masks.all():
        return None
    fprs, pros = pro_curve(maps, masks)
    return trapezoid_area(fprs, pros, fpr_limit) / fpr_limit


def threshold_free(maps: np.ndarray, masks: np.ndarray) -> dict:
    labels = masks.reshape(len(masks), -1).any(axis=1)
    return {
        "image_auroc": image_auroc(image_scores(maps), labels),
        "pixel_auroc": pixel_auroc(maps, masks),
        "aupro": aupro(maps, masks),
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
