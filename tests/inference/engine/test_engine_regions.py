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


SIZE_SHAPE = (50, 40)  # 2000 pixels: one pixel is 0.05 % of the image, 2 pixels 0.1 %, 20 pixels 1 %


def _size_case():
    """Regions of known share of a 50 x 40 image and known overlap with the prediction.

    Image 0 (anomalous):
      A (0,0), 1 px = 0.05 %, predicted: covered 100 %        -> < 0.1 %, detected
      B (0,10), 1 px, not predicted                            -> < 0.1 %, missed
      C (5,0) (5,1), 2 px = 0.1 % exactly, 1 px predicted: 50 % -> 0.1–1 % (the lower bound is in), detected
      D row 10 x 0..9, 10 px = 0.5 %, 3 px predicted: 30 %     -> 0.1–1 %, detected (exactly the rule)
      E rows 20–21 x 0..9, 20 px = 1 %, 5 px predicted: 25 %   -> 1–10 %, found (one pixel) but not detected
      F rows 30..49 x 20..29, 200 px = 10 %, 100 px predicted  -> ≥ 10 %, detected
    Image 1 (anomalous): G (0,0) 1 px not predicted (< 0.1 %, missed); H rows 10..13 x 20..29, 40 px
      = 2 %, all predicted (1–10 %, detected).
    Image 2 (defect-free): one false alarm at (0,0).
    """
    masks = np.zeros((3, *SIZE_SHAPE), bool)
    maps = np.zeros((3, *SIZE_SHAPE), np.float32)
    masks[0, 0, 0] = masks[0, 0, 10] = True
    masks[0, 5, 0:2] = masks[0, 10, 0:10] = masks[0, 20:22, 0:10] = masks[0, 30:50, 20:30] = True
    maps[0, 0, 0] = maps[0, 5, 0] = 1.0
    maps[0, 10, 0:3] = maps[0, 20, 0:5] = maps[0, 30:40, 20:30] = 1.0
    masks[1, 0, 0] = masks[1, 10:14, 20:30] = True
    maps[1, 10:14, 20:30] = 1.0
    maps[2, 0, 0] = 1.0
    return maps, masks, np.array([True, True, False])


def test_size_classes_count_regions_by_share_of_the_image_and_detect_them_at_30_percent_overlap():
    maps, masks, anomalous = _size_case()
    counts = DefectRegions(masks).at(maps, THRESHOLD)
    result = region_detection(counts, anomalous, evaluation.Resampler(anomalous, seed=0, resamples=200))
    by_size = {s.size_class: s for s in result.by_size}
    assert list(by_size) == ["< 0.1 %", "0.1–1 %", "1–10 %", "≥ 10 %"]
    assert {k: (s.detected, s.regions) for k, s in by_size.items()} == {
        "< 0.1 %": (1, 3), "0.1–1 %": (2, 2), "1–10 %": (1, 2), "≥ 10 %": (1, 1)}
    assert [s.detection_rate.value for s in result.by_size] == pytest.approx([1 / 3, 1.0, 0.5, 1.0])
    assert [(s.share_low, s.share_high) for s in result.by_size] == [
        (0.0, 0.001), (0.001, 0.01), (0.01, 0.1), (0.1, None)]
    # "found" keeps its one-pixel rule: E counts there, not in its size class
    assert (result.found, result.defect_regions) == (6, 8)
    # the false alarms are the ones already counted, per defect-free image
    assert result.false_alarms_per_good_image.value == 1.0
    # two anomalous images: a class only image 0 has is undefined in a quarter of the resamples,
    # so the best class has no interval and nothing is flagged
    assert by_size["0.1–1 %"].detection_rate.low is None
    assert not any(s.lower_than_best for s in result.by_size)


def _flag_case():
    """Twelve anomalous images, each with a 1-pixel defect never predicted and a 2 % one always
    predicted, and a 0.5 % one predicted in every other image; four defect-free images."""
    masks = np.zeros((16, *SIZE_SHAPE), bool)
    maps = np.zeros((16, *SIZE_SHAPE), np.float32)
    for i in range(12):
        masks[i, 0, 0] = masks[i, 10:14, 20:30] = masks[i, 30, 0:10] = True
        maps[i, 10:14, 20:30] = 1.0
        if i % 2:
            maps[i, 30, 0:10] = 1.0
    return maps, masks, np.arange(16) < 12


def test_a_size_class_missed_beyond_the_intervals_is_flagged_against_the_best_one():
    maps, masks, anomalous = _flag_case()
    result = region_detection(DefectRegions(masks).at(maps, THRESHOLD), anomalous,
                              evaluation.Resampler(anomalous, seed=0, resamples=500))
    by_size = {s.size_class: s for s in result.by_size}
    assert by_size["1–10 %"].detection_rate.low == 1.0 and not by_size["1–10 %"].lower_than_best
    assert by_size["< 0.1 %"].detection_rate.high == 0.0 and by_size["< 0.1 %"].lower_than_best
    # half detected: its interval ends below 1, the best's starts at 1, so it is flagged too
    assert by_size["0.1–1 %"].detection_rate.value == 0.5 and by_size["0.1–1 %"].lower_than_best
    # a class without regions has no rate and no flag
    assert by_size["≥ 10 %"].regions == 0 and by_size["≥ 10 %"].detection_rate.value is None
    assert not by_size["≥ 10 %"].lower_than_best
