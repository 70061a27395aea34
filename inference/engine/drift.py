"""Drift on the line: are a deployed model's image scores still those it was validated on?

Two checks, each with its uncertainty (plain NumPy/SciPy, no Django):

* **Distribution**: the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``, exact
  p-value where SciPy can compute it) between the line's image scores and the reference scores,
  the defect-free images of the run's test folder (validation and test parts: scored by the
  fitted model, never trained on). It is distribution-free and looks at the whole shape, so a
  brightness change that moves every score a little is seen before the threshold is crossed.
  "Shifted" at p < ``SIGNIFICANCE`` (0.01) once the line has ``MIN_LINE_IMAGES`` (20) scores:
  a fixed level, so looking again every day will now and then warn on a healthy line (about
  one look in a hundred); the p-value is shown beside it for that reason.
* **Rejections**: the share of line images at or above the image threshold against the
  false-reject rate expected from the defect-free images of the run's *test* part (the part the
  threshold was not fitted on), both with 95 % Clopper-Pearson intervals. "More rejected than
  expected" when the line's interval lies wholly above the expected one. A line that simply
  makes more defective parts raises this share too: the message says so.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

SIGNIFICANCE = 0.01
MIN_LINE_IMAGES = 20
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Proportion:
    """``hits`` of ``total`` with its Clopper-Pearson interval (None when ``total`` is 0)."""

    hits: int
    total: int
    share: float | None
    low: float | None
    high: float | None


def proportion(hits: int, total: int, confidence: float = CONFIDENCE) -> Proportion:
    if total <= 0:
        return Proportion(int(hits), 0, None, None, None)
    interval = stats.binomtest(int(hits), int(total)).proportion_ci(confidence_level=confidence, method="exact")
    return Proportion(int(hits), int(total), hits / total, float(interval.low), float(interval.high))


@dataclass(frozen=True)
class DriftStatistics:
    reference_count: int
    line_count: int
    # None until the line has MIN_LINE_IMAGES scores (and a reference exists)
    ks_statistic: float | None
    p_value: float | None
    line_rejected: Proportion
    expected_rejected: Proportion
    enough: bool
    shifted: bool
    more_rejected: bool

    @property
    def drifted(self) -> bool:
        return self.shifted or self.more_rejected


def drift_statistics(reference: np.ndarray, line: np.ndarray, image_threshold: float,
                     expected_from: np.ndarray | None = None) -> DriftStatistics:
    """``reference``: defect-free scores the model was validated with; ``line``: scores on the
    line; ``expected_from``: the defect-free scores the expected false-reject rate comes from
    (default: ``reference``)."""
    reference = np.asarray(reference, np.float64)
    line = np.asarray(line, np.float64)
    expected_from = reference if expected_from is None else np.asarray(expected_from, np.float64)
    line_rejected = proportion(int((line >= image_threshold).sum()), line.size)
    expected = proportion(int((expected_from >= image_threshold).sum()), expected_from.size)
    enough = line.size >= MIN_LINE_IMAGES and reference.size >= 1
    ks = p = None
    if enough:
        result = stats.ks_2samp(line, reference, method="auto")
        ks, p = float(result.statistic), float(result.pvalue)
    more = bool(enough and expected.high is not None and line_rejected.low is not None
                and line_rejected.low > expected.high)
    return DriftStatistics(int(reference.size), int(line.size), ks, p, line_rejected, expected, enough,
                           bool(p is not None and p < SIGNIFICANCE), more)


def ecdf_polyline(scores: np.ndarray, low: float, high: float, width: float, height: float) -> str:
    """SVG ``points`` of the empirical distribution function of ``scores`` over [low, high] (x)
    and [0, 1] (y, upwards), as steps."""
    values = np.sort(np.asarray(scores, np.float64))
    if values.size == 0 or high <= low:
        return ""

    def x(v):
        return (min(max(v, low), high) - low) / (high - low) * width

    points, level = [(0.0, height)], 0.0
    for i, v in enumerate(values):
        points.append((x(v), height - level * height))
        level = (i + 1) / values.size
        points.append((x(v), height - level * height))
    points.append((width, height - level * height))
    return " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
