"""Defect regions found and false alarms per defect-free image, on a case counted by hand."""

import numpy as np
import pytest

from inference.engine import evaluation
from inference.engine.regions import DefectRegions, region_detection

THRESHOLD = 0.5


def _hand_case():
    """Three 6 x 6 images; a pixel is predicted anomalous where its score is >= 0.5.

    * image 0 (anomalous) has 3 defect regions: A = (0,0) (0,1) (1,1); B = (4,4) (5,5), one region
      only with 8-connectivity; C = (0,5). Predicted: (1,1) in A, (0,5) = C exactly (at the
      threshold itself), and a blob (3,0) (3,1) touching no defect: 2 of 3 regions found, 1 false alarm.
    * image 1 (defect-free): predicted (0,0) and (2,2) (3,3), diagonal neighbours: 2 false alarms.
    * image 2 (defect-free): nothing predicted.
    """
    masks = np.zeros((3, 6, 6), bool)
    for y, x in [(0, 0), (0, 1), (1, 1), (4, 4), (5, 5), (0, 5)]:
        masks[0, y, x] = True
    maps = np.zeros((3, 6, 6), np.float32)
    for y, x in [(1, 1), (3, 0), (3, 1)]:
        maps[0, y, x] = 0.9
    maps[0, 0, 5] = THRESHOLD
    maps[0, 4, 4] = maps[0, 5, 5] = 0.49  # region B is missed, just
    for y, x in [(0, 0), (2, 2), (3, 3)]:
        maps[1, y, x] = 0.8
    maps[2] = 0.3
    return maps, masks, np.array([True, False, False])


def test_regions_found_and_false_alarms_match_the_hand_count():
    maps, masks, anomalous = _hand_case()
    counts = DefectRegions(masks).at(maps, THRESHOLD)
    assert [counts.per_image(i) for i in range(3)] == [[2, 3, 1], [0, 0, 2], [0, 0, 0]]
    resampler = evaluation.Resampler(anomalous, seed=0, resamples=200)
    result = region_detection(counts, anomalous, resampler)
    assert (result.found, result.defect_regions) == (2, 3)
    assert result.detection_rate.value == pytest.approx(2 / 3)
    # the false alarm on the anomalous image is not a defect-free image's: (2 + 0) / 2 images
    assert (result.false_alarm_regions, result.good_images) == (2, 2)
    assert result.false_alarms_per_good_image.value == 1.0
    # one anomalous image: its detection rate cannot move; the good images' alarms can (0, 1 or 2 per image)
    assert result.detection_rate.low == result.detection_rate.high == pytest.approx(2 / 3)
    assert result.false_alarms_per_good_image.low == 0.0 and result.false_alarms_per_good_image.high == 2.0


def test_a_threshold_above_every_score_finds_nothing_and_raises_no_alarm():
    maps, masks, anomalous = _hand_case()
    counts = DefectRegions(masks).at(maps, 1.0)
    result = region_detection(counts, anomalous, evaluation.Resampler(anomalous, seed=0, resamples=50))
    assert result.found == 0 and result.detection_rate.value == 0.0
    assert result.false_alarms_per_good_image.value == 0.0
