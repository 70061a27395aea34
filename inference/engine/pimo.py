"""AUPIMO: the area under each anomalous image's per-image overlap curve (Bertoldo et al., BMVC 2024).

The definition anomalib reports (``anomalib.metrics.pimo``, after the authors' ``aupimo``):

* **shared FPR** at a threshold t: the mean, over the defect-free images, of each one's share of
  pixels scoring ``>= t`` (every image has the same size here, so: the share of all their pixels);
* the **PIMO curve** of one anomalous image: its own TPR at t (the share of its mask's pixels
  scoring ``>= t``: how much of its defect the prediction overlaps) against the shared FPR at t;
* its **AUPIMO**: the area under that curve over log FPR from 1e-5 to 1e-4 (trapezoid rule on
  log FPR) divided by log(1e-4 / 1e-5). 1: all of the defect is found before one defect-free
  pixel in 100 000 is; 0: none of it while one in 10 000 is. One number per anomalous image, so a
  small defect weighs as much as a large one (unlike pixel AUROC or the pooled IoU); a set of
  images is summarised by the mean and the distribution of its images' AUPIMOs.

Computed exactly: the curve's vertices are taken just above and at every distinct score of the
defect-free pixels in the range, which is the limit of anomalib's dense grid of thresholds
(300 000 between the good pixels' minimum and maximum), and the range is cut at exactly 1e-5
and 1e-4 (anomalib integrates between the grid thresholds whose FPR is closest to them).
Where this differs from anomalib at the edges: an image labelled anomalous whose resized mask is
empty has no AUPIMO (anomalib, which reads the classes off the masks, would count it defect-free);
with fewer than 1 / 1e-5 = 100 000 defect-free pixels the range's lower end is under one pixel,
and no AUPIMO is reported (anomalib refuses fewer than about 30 thresholds in the range).

Bootstrap (:meth:`PerImageOverlap.mean_resamples`): a resample redraws the defect-free images
too, which moves the shared FPR, so every resample's curves are evaluated again. Each good
image's scores are kept down to the lowest of the images' own FPR-1e-4 scores (there, every image
alone, hence every resample, has reached the upper bound); its false positives are counted once
at up to 2 x 1000 thresholds (just above and at every distinct kept score, or at a log-spaced
subset of them when there are more), and a resample's AUPIMO of an image is then a weighted sum
of its TPRs there (exact when the subset holds every score).
"""

from __future__ import annotations

import math

import numpy as np

FPR_BOUNDS = (1e-5, 1e-4)
_RESAMPLE_SCORES = 1000  # at most this many distinct good scores (each just above and at)


def log_trapezoid_weights(fpr: np.ndarray, low: float, high: float) -> np.ndarray:
    """(B, T) weights ``c`` such that ``c[b] @ y`` is the area under the piecewise-linear curve
    through ``(log fpr[b, t], y[t])`` between ``log low`` and ``log high``.

    ``fpr`` ascending along each row. A vertex at FPR 0 (log = -inf) makes its segment the
    constant of its other end (the limit of the line). NaN rows where the curve stops short of
    ``high``.
    """
    fpr = np.atleast_2d(np.asarray(fpr, dtype=np.float64))
    a, b = math.log(low), math.log(high)
    with np.errstate(invalid="ignore", divide="ignore"):  # log 0 = -inf, and -inf - -inf
        x = np.log(fpr)
        x0, x1 = x[:, :-1], x[:, 1:]
        p0, p1 = np.maximum(x0, a), np.minimum(x1, b)
        width = np.maximum(p1 - p0, 0.0)
        span = x1 - x0
        sloped = np.isfinite(x0) & (span > 0)
        l0 = np.where(sloped, (p0 - x0) / np.where(sloped, span, 1.0), 1.0)
        l1 = np.where(sloped, (p1 - x0) / np.where(sloped, span, 1.0), 1.0)
    mid = np.where(width > 0, (l0 + l1) / 2.0, 0.0)
    weights = np.zeros_like(fpr)
    weights[:, :-1] += width * (1.0 - mid)
    weights[:, 1:] += width * mid
    weights[~(fpr[:, -1] >= high)] = np.nan
    return weights


class PerImageOverlap:
    """AUPIMO of every anomalous image of ``maps`` against its defect-free images (``anomalous`` False).

    ``note`` says why there is none ("" when there is).
    """

    def __init__(self, maps: np.ndarray, masks: np.ndarray, anomalous: np.ndarray, bounds=FPR_BOUNDS):
        anomalous = np.asarray(anomalous, dtype=bool)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.n_images = len(maps)
        self.good = np.flatnonzero(~anomalous)
        defect_pixels = masks.reshape(len(masks), -1).sum(axis=1) if len(masks) else np.zeros(0, int)
        self.scored = np.flatnonzero(anomalous & (defect_pixels > 0))
        self.pixels = int(maps[0].size) if len(maps) else 0
        self.n_good_pixels = len(self.good) * self.pixels
        self.note = self._why_not(int(anomalous.sum()))
        self._values = np.full(self.n_images, np.nan)
        if self.note:
            return
        self.dtype = maps.dtype
        self._tails = self._good_tails(maps)
        self._defects = [np.sort(maps[i][masks[i]]) for i in self.scored]
        self._distinct = np.unique(np.concatenate(self._tails))[::-1]  # descending
        # the point sample: every distinct good score down to the first at or beyond the upper bound
        pooled = np.sort(np.concatenate(self._tails))
        fpr_at = (len(pooled) - np.searchsorted(pooled, self._distinct, side="left")) / self.n_good_pixels
        last = int(np.searchsorted(fpr_at, self.bounds[1], side="left"))
        thresholds = self._vertices(self._distinct[:last + 1])
        self._values[self.scored] = self._areas(thresholds, np.ones((1, len(self.good))))[0]

    def _why_not(self, n_anomalous: int) -> str:
        low = self.bounds[0]
        if not len(self.good):
            return "no defect-free image to measure the false-positive rate on"
        if self.n_good_pixels * low < 1:
            return (f"needs at least {math.ceil(1 / low):,} defect-free pixels (FPR {low:g} is one of them); "
                    f"these images have {self.n_good_pixels:,}")
        if not len(self.scored):
            return ("no anomalous image with defect pixels" if n_anomalous else "no anomalous image")
        return ""

    def _good_tails(self, maps: np.ndarray) -> list[np.ndarray]:
        """Per defect-free image, its sorted scores down to the lowest of the images' own scores at the
        upper FPR bound: there every image, so every weighting of them, has reached that bound."""
        k = min(self.pixels, math.ceil(self.bounds[1] * self.pixels) + 1)
        floor = min(np.partition(maps[i].ravel(), self.pixels - k)[self.pixels - k] for i in self.good)
        return [np.sort(maps[i][maps[i] >= floor]) for i in self.good]

    def _vertices(self, scores: np.ndarray) -> np.ndarray:
        """Thresholds just above and at each of ``scores`` (descending): the curve's vertices, FPR ascending."""
        scores = scores.astype(self.dtype)
        above = np.nextafter(scores, np.array(np.inf, dtype=self.dtype))
        return np.column_stack([above, scores]).ravel().astype(np.float64)

    def _areas(self, thresholds: np.ndarray, good_weights: np.ndarray) -> np.ndarray:
        """(B, scored images) AUPIMO with the defect-free images weighted by each row of ``good_weights``."""
        false_pos = np.stack([len(t) - np.searchsorted(t, thresholds, side="left") for t in self._tails])
        fpr = (good_weights @ false_pos) / (good_weights.sum(axis=1, keepdims=True) * self.pixels)
        tpr = np.stack([(len(d) - np.searchsorted(d, thresholds, side="left")) / len(d) for d in self._defects])
        low, high = self.bounds
        areas = log_trapezoid_weights(fpr, low, high) @ tpr.T / math.log(high / low)
        return np.clip(areas, 0.0, 1.0)

    def values(self) -> np.ndarray:
        """(images,) each anomalous image's AUPIMO; NaN for defect-free images and those without one."""
        return self._values.copy()

    def mean(self) -> float | None:
        scored = self._values[self.scored]
        return float(scored.mean()) if len(scored) and np.isfinite(scored).all() else None

    def quantiles(self) -> dict[str, float | None]:
        """Minimum, quartiles and maximum of the images' AUPIMOs (None without any)."""
        scored = self._values[self.scored]
        names = ("min", "q25", "median", "q75", "max")
        if not len(scored) or not np.isfinite(scored).all():
            return dict.fromkeys(names)
        return dict(zip(names, (float(q) for q in np.quantile(scored, [0.0, 0.25, 0.5, 0.75, 1.0]))))

    def mean_resamples(self, weights: np.ndarray) -> np.ndarray:
        """(B,) the mean AUPIMO of each bootstrap resample (``weights[b, i]``: times image i is drawn)."""
        weights = np.asarray(weights, dtype=np.float64)
        if self.note:
            return np.full(len(weights), np.nan)
        scores = self._distinct
        if len(scores) > _RESAMPLE_SCORES:
            ranks = np.unique(np.round(np.geomspace(1, len(scores), _RESAMPLE_SCORES)).astype(int)) - 1
            scores = scores[ranks]
        areas = self._areas(self._vertices(scores), weights[:, self.good])
        drawn = weights[:, self.scored]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (drawn * areas).sum(axis=1) / drawn.sum(axis=1)
