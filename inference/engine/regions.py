"""What an inspector counts at one threshold: defect regions found and false alarms per good image.

* **Defect regions**: the 8-connected components of each anomalous test image's mask (at the
  benchmark's image size), the regions AUPRO averages over. A region is *found* when the
  predicted mask (score ``>= threshold``) covers at least one of its pixels: an alarm that points
  at the defect, however little of it the outline covers (how well it is outlined is what IoU
  measures). The detection rate is found / all regions, pooled over the images.
* **False-alarm regions**: the 8-connected components of the predicted mask that touch no defect
  pixel. Per defect-free image: their number on the defect-free test images divided by the number
  of those images, what an inspector is sent to look at on a clean part.

Intervals: the test part's stratified bootstrap (:class:`evaluation.Resampler`); a resample's
rate is its weighted sums of the per-image counts, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .report import Estimate, RegionDetection

_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


@dataclass
class RegionCounts:
    """Per image: defect regions, those found, and false-alarm regions (predicted, touching no defect)."""

    regions: np.ndarray
    found: np.ndarray
    false_alarms: np.ndarray

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
        for i, mask in enumerate(masks):
            labelled, n = self._label(mask) if mask.any() else (None, 0)
            self.labelled.append(labelled)
            self.regions[i] = n

    def at(self, maps: np.ndarray, threshold: float) -> RegionCounts:
        found = np.zeros(len(maps), dtype=np.int64)
        false_alarms = np.zeros(len(maps), dtype=np.int64)
        for i, (m, g) in enumerate(zip(maps, self.masks)):
            predicted = m >= threshold
            if not predicted.any():
                continue
            components, n = self._label(predicted)
            hits = predicted & g
            if self.labelled[i] is not None:
                found[i] = np.unique(self.labelled[i][hits]).size
            false_alarms[i] = n - np.unique(components[hits]).size
        return RegionCounts(self.regions.copy(), found, false_alarms)


def _rates(c: RegionCounts, anomalous: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    good = ~anomalous
    with np.errstate(invalid="ignore", divide="ignore"):
        detection = (weights @ c.found) / (weights @ c.regions)
        alarms = (weights[:, good] @ c.false_alarms[good]) / weights[:, good].sum(axis=1)
    return np.where(np.isfinite(detection), detection, np.nan), np.where(np.isfinite(alarms), alarms, np.nan)


def region_detection(c: RegionCounts, anomalous: np.ndarray, resampler) -> RegionDetection:
    """The counts of one threshold on the test part, with bootstrap intervals (``resampler``)."""
    anomalous = np.asarray(anomalous, dtype=bool)
    point = _rates(c, anomalous, np.ones((1, len(anomalous))))
    boot = _rates(c, anomalous, resampler.weights)
    detection, alarms = (resampler.estimate(p[0], b) if np.isfinite(p[0]) else Estimate(None)
                         for p, b in zip(point, boot))
    return RegionDetection(
        defect_regions=int(c.regions.sum()), found=int(c.found.sum()), detection_rate=detection,
        good_images=int((~anomalous).sum()), false_alarm_regions=int(c.false_alarms[~anomalous].sum()),
        false_alarms_per_good_image=alarms)
