"""What an inspector counts at one threshold: defect regions found and false alarms per good image.

* **Defect regions**: the 8-connected components of each anomalous test image's mask (at the
  benchmark's image size), the regions AUPRO averages over. A region is *found* when the
  predicted mask (score ``>= threshold``) covers at least one of its pixels: an alarm that points
  at the defect, however little of it the outline covers (how well it is outlined is what IoU
  measures). The detection rate is found / all regions, pooled over the images.
* **Defect size** (``by_size``): each defect region falls in a size class by its share of the
  image (its pixels over the evaluation canvas's, :mod:`.geometry`): :data:`SIZE_CLASSES`, each
  ``[low, high)``. Per class a region counts as *detected* under a stricter rule than *found*:
  the predicted mask covers at least :data:`MIN_OVERLAP` (30 %) of the region's pixels (a single
  alarm pixel on a large defect does not make it detected). A class whose rate's interval lies
  entirely below the interval of the class with the highest rate is flagged ``lower_than_best``:
  a gap beyond the sampling uncertainty of both, which a reader can check on the page by eye.
* **False-alarm regions**: the 8-connected components of the predicted mask that touch no defect
  pixel. Per defect-free image: their number on the defect-free test images divided by the number
  of those images, what an inspector is sent to look at on a clean part.

Intervals: the test part's stratified bootstrap (:class:`evaluation.Resampler`); a resample's
rate is its weighted sums of the per-image counts, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .report import Estimate, RegionDetection, SizeClassDetection

_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)
# Defect-size classes: (name, lowest share of the image, highest share (excluded; None: no bound)).
SIZE_CLASSES = (("< 0.1 %", 0.0, 0.001), ("0.1–1 %", 0.001, 0.01), ("1–10 %", 0.01, 0.1), ("≥ 10 %", 0.1, None))
# A region counts as detected in its size class when the prediction covers this share of its pixels.
MIN_OVERLAP = 0.3


def size_class_of(share: np.ndarray) -> np.ndarray:
    """The index into :data:`SIZE_CLASSES` of each share of the image."""
    return np.searchsorted([low for _, low, _ in SIZE_CLASSES[1:]], share, side="right")


@dataclass
class RegionCounts:
    """Per image: defect regions, those found, and false-alarm regions (predicted, touching no defect)."""

    regions: np.ndarray
    found: np.ndarray
    false_alarms: np.ndarray
    # (images, size classes): defect regions per class, and those covered by >= MIN_OVERLAP
    size_regions: np.ndarray
    size_detected: np.ndarray

    def per_image(self, i: int) -> list[int]:
        return [int(self.found[i]), int(self.regions[i]), int(self.false_alarms[i])]


class DefectRegions:
    """The defect regions of a set of masks, labelled once and counted at any threshold."""

    def __init__(self, masks: np.ndarray):
        from scipy import ndimage  # as in metrics: fitting and inference do not need SciPy

        self._label = lambda image: ndimage.label(image, structure=_EIGHT_CONNECTED)
        self.masks = masks
        self.labelled = []
        self.regions = np.zeros(len(masks), dtype=np.int64)
        self.sizes, self.size_class = [], []  # per image: each region's pixel count and size class
        self.size_regions = np.zeros((len(masks), len(SIZE_CLASSES)), dtype=np.int64)
        for i, mask in enumerate(masks):
            labelled, n = self._label(mask) if mask.any() else (None, 0)
            self.labelled.append(labelled)
            self.regions[i] = n
            sizes = np.bincount(labelled.ravel(), minlength=n + 1)[1:] if n else np.zeros(0, np.int64)
            self.sizes.append(sizes)
            self.size_class.append(size_class_of(sizes / mask.size))
            self.size_regions[i] = np.bincount(self.size_class[i], minlength=len(SIZE_CLASSES))

    def at(self, maps: np.ndarray, threshold: float) -> RegionCounts:
        found = np.zeros(len(maps), dtype=np.int64)
        false_alarms = np.zeros(len(maps), dtype=np.int64)
        size_detected = np.zeros_like(self.size_regions)
        for i, (m, g) in enumerate(zip(maps, self.masks)):
            predicted = m >= threshold
            if not predicted.any():
                continue
            components, n = self._label(predicted)
            hits = predicted & g
            if self.labelled[i] is not None:
                found[i] = np.unique(self.labelled[i][hits]).size
                covered = np.bincount(self.labelled[i][hits], minlength=self.regions[i] + 1)[1:]
                # integers against the share, so a region covered exactly 30 % counts
                detected = covered >= np.ceil(MIN_OVERLAP * self.sizes[i] - 1e-9)
                size_detected[i] = np.bincount(self.size_class[i][detected], minlength=len(SIZE_CLASSES))
            false_alarms[i] = n - np.unique(components[hits]).size
        return RegionCounts(self.regions.copy(), found, false_alarms, self.size_regions.copy(), size_detected)


def _rates(c: RegionCounts, anomalous: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    good = ~anomalous
    with np.errstate(invalid="ignore", divide="ignore"):
        detection = (weights @ c.found) / (weights @ c.regions)
        alarms = (weights[:, good] @ c.false_alarms[good]) / weights[:, good].sum(axis=1)
    return np.where(np.isfinite(detection), detection, np.nan), np.where(np.isfinite(alarms), alarms, np.nan)


def _estimate(point: np.ndarray, boot: np.ndarray, resampler) -> Estimate:
    return resampler.estimate(point[0], boot) if np.isfinite(point[0]) else Estimate(None)


def _by_size(c: RegionCounts, resampler) -> list[SizeClassDetection]:
    """Per size class: regions, those detected (>= MIN_OVERLAP covered) and the rate, pooled over
    the images, its interval from the same image resamples as every other number; then the flag."""
    with np.errstate(invalid="ignore", divide="ignore"):
        point = c.size_detected.sum(axis=0, keepdims=True) / c.size_regions.sum(axis=0, keepdims=True)
        boot = (resampler.weights @ c.size_detected) / (resampler.weights @ c.size_regions)
    out = [SizeClassDetection(name, low, high, int(c.size_regions[:, k].sum()), int(c.size_detected[:, k].sum()),
                              _estimate(point[:, k], boot[:, k], resampler))
           for k, (name, low, high) in enumerate(SIZE_CLASSES)]
    rated = [s for s in out if s.detection_rate.value is not None]
    best = max(rated, key=lambda s: s.detection_rate.value, default=None)
    if best is not None and best.detection_rate.low is not None:
        for s in rated:
            s.lower_than_best = s.detection_rate.high is not None and s.detection_rate.high < best.detection_rate.low
    return out


def region_detection(c: RegionCounts, anomalous: np.ndarray, resampler) -> RegionDetection:
    """The counts of one threshold on the test part, with bootstrap intervals (``resampler``)."""
    anomalous = np.asarray(anomalous, dtype=bool)
    point = _rates(c, anomalous, np.ones((1, len(anomalous))))
    boot = _rates(c, anomalous, resampler.weights)
    detection, alarms = (_estimate(p, b, resampler) for p, b in zip(point, boot))
    return RegionDetection(
        defect_regions=int(c.regions.sum()), found=int(c.found.sum()), detection_rate=detection,
        good_images=int((~anomalous).sum()), false_alarm_regions=int(c.false_alarms[~anomalous].sum()),
        false_alarms_per_good_image=alarms, by_size=_by_size(c, resampler))
