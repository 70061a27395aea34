"""Threshold techniques on constructed maps whose right threshold is known."""

import numpy as np
import pytest

from inference.engine import metrics
from inference.engine.thresholds import TECHNIQUES, ThresholdError, fit_threshold


def _separable(seed=0):
    """Anomalous pixels score in [0.6, 1], normal ones in [0, 0.4]."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((6, 16, 16), bool)
    masks[0, 2:6, 2:6] = True
    masks[1, 8:14, 3:5] = True
    masks[2, 0:3, 10:16] = True
    maps = np.where(masks, 0.6 + 0.4 * rng.random(masks.shape), 0.4 * rng.random(masks.shape)).astype(np.float32)
    return maps, masks


def test_registry_names_and_docstrings():
    assert set(TECHNIQUES) == {"iou_curve", "f1", "roc", "normal_fpr", "normal_fpr_1e4", "normal_sigma",
                               "normal_max", "synthetic"}
    for name, t in TECHNIQUES.items():
        assert t.name == name and t.__doc__ and len(t.__doc__) > 40
        assert t.label and t.short  # what the web side names it (derived, never re-spelled)


def test_normal_sigma_is_mean_plus_k_standard_deviations_of_the_good_pixels():
    """Hand-computed: good pixels 0..7 have mean 3.5 and (population) variance 5.25."""
    maps = np.zeros((3, 2, 2), np.float32)
    maps[0] = [[0, 1], [2, 3]]
    maps[1] = [[4, 5], [6, 7]]
    maps[2] = 100.0  # the anomalous image: never part of the statistics
    masks = np.zeros(maps.shape, bool)
    masks[2, 0, 0] = True
    labels = np.array([False, False, True])
    assert fit_threshold("normal_sigma", maps, masks, labels=labels) == pytest.approx(3.5 + 3 * 5.25 ** 0.5, rel=1e-6)
    assert fit_threshold("normal_sigma", maps, masks, labels=labels, normal_sigma_k=1.0) == pytest.approx(
        3.5 + 5.25 ** 0.5, rel=1e-6)
    assert fit_threshold("normal_sigma", maps, masks, labels=labels, normal_sigma_k=0.0) == 3.5
    with pytest.raises(ThresholdError, match="k must be"):
        fit_threshold("normal_sigma", maps, masks, labels=labels, normal_sigma_k=-1.0)
    # far from zero (scores around 1e4 with unit spread): no cancellation in the variance
    far = (maps[:2] + np.float32(1e4)).astype(np.float32)
    assert fit_threshold("normal_sigma", far, masks[:2], labels=labels[:2]) == pytest.approx(
        1e4 + 3.5 + 3 * 5.25 ** 0.5, abs=1e-3)


def test_normal_fpr_1e4_is_the_fpr_rule_at_one_pixel_in_ten_thousand_whatever_the_setting():
    vals = np.random.default_rng(1).permutation(40_000).astype(np.float32)
    maps = vals.reshape(4, 100, 100)
    masks = np.zeros(maps.shape, bool)
    for setting in (0.01, 0.2):
        t = fit_threshold("normal_fpr_1e4", maps, masks, normal_fpr_target=setting)
        assert (maps >= t).sum() == 4 and t == 39_996.0
    assert fit_threshold("normal_fpr", maps, masks, normal_fpr_target=0.01) == 39_600.0  # the setting's own


@pytest.mark.parametrize("name", ["iou_curve", "f1", "roc"])
def test_supervised_techniques_find_the_gap(name):
    maps, masks = _separable()
    t = fit_threshold(name, maps, masks)
    assert maps[~masks].max() < t <= maps[masks].min()
    m = metrics.threshold_metrics(maps, masks, t)
    assert m["iou"] == 1.0 and m["mean_image_iou"] == 1.0


def test_f1_and_roc_pick_lowest_anomalous_score():
    maps, masks = _separable()
    assert fit_threshold("f1", maps, masks) == pytest.approx(float(maps[masks].min()))
    assert fit_threshold("roc", maps, masks) == pytest.approx(float(maps[masks].min()))


def test_iou_curve_prefers_best_mean_iou():
    # image 0: region scores 0.9, image 1: region scores 0.5; normals score 0.7 in image 2 (good)
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2] = True
    masks[1, :2] = True
    maps = np.zeros((3, 4, 4), np.float32)
    maps[0][masks[0]] = 0.9
    maps[1][masks[1]] = 0.5
    # at t<=0.5 both anomalous images are perfect (good image irrelevant to the mean IoU)
    t = fit_threshold("iou_curve", maps, masks)
    assert 0.0 < t <= 0.5


def test_normal_fpr_exact_share():
    masks = np.zeros((4, 50, 50), bool)
    masks[3, :5, :5] = True  # one anomalous image, ignored by normal_* techniques
    rng = np.random.default_rng(0)
    vals = rng.permutation(7500).astype(np.float32) / 7500  # good pixels: distinct values
    maps = np.zeros((4, 50, 50), np.float32)
    maps[:3] = vals.reshape(3, 50, 50)
    maps[3] = 5.0
    t = fit_threshold("normal_fpr", maps, masks, normal_fpr_target=0.01)
    assert (maps[:3] >= t).sum() == 75  # exactly 1 % of defect-free pixels
    assert t == pytest.approx(7425 / 7500)


def test_normal_max_is_just_above_good_max():
    maps, masks = _separable()
    good = ~masks.reshape(6, -1).any(1)
    t = fit_threshold("normal_max", maps, masks)
    assert t > maps[good].max()
    assert not (maps[good] >= t).any()
    assert np.float32(t) == np.nextafter(maps[good].max(), np.float32(np.inf))


@pytest.mark.parametrize("name", ["iou_curve", "f1", "roc"])
def test_need_anomalous_images(name):
    maps = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    with pytest.raises(ThresholdError, match="anomalous"):
        fit_threshold(name, maps, np.zeros(maps.shape, bool))


@pytest.mark.parametrize("name", ["normal_fpr", "normal_fpr_1e4", "normal_sigma", "normal_max"])
def test_normal_techniques_need_good_images_only(name):
    maps = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    assert np.isfinite(fit_threshold(name, maps, np.zeros(maps.shape, bool)))
    with pytest.raises(ThresholdError, match="defect-free"):
        fit_threshold(name, maps, np.ones(maps.shape, bool))


def test_unknown_technique():
    with pytest.raises(KeyError):
        fit_threshold("otsu", np.zeros((1, 2, 2)), np.zeros((1, 2, 2), bool))


@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_f1_and_roc_reach_the_best_value_over_every_distinct_score(decimals):
    """Brute force over every distinct score: no threshold beats the fitted one (ties included)."""
    rng = np.random.default_rng(decimals)
    masks = np.zeros((5, 12, 12), bool)
    masks[1, 2:6, 2:7] = True
    masks[3, 7:11, 1:4] = True
    maps = np.round(rng.random(masks.shape) * 0.8 + masks * 0.4 * rng.random(masks.shape), decimals)
    maps = maps.astype(np.float32)

    def f1(t):
        m = metrics.threshold_metrics(maps, masks, t)
        return m["dice"] or 0.0

    def youden(t):
        m = metrics.threshold_metrics(maps, masks, t)
        return (m["recall"] or 0.0) - m["fpr"]

    candidates = np.unique(maps).tolist()
    for name, value in (("f1", f1), ("roc", youden)):
        t = fit_threshold(name, maps, masks)
        assert value(t) == pytest.approx(max(value(c) for c in candidates), abs=1e-12)
        # the highest threshold among equally good ones
        assert all(value(c) < value(t) - 1e-12 for c in candidates if c > t)
