"""Decision intervals: validation images redrawn, thresholds refitted in every resample."""

import numpy as np
import pytest

from inference.engine import decision_intervals, evaluation, metrics
from inference.engine.thresholds import PixelMoments, fit_threshold

from .test_engine_evaluation import _maps

TECHNIQUES = ("iou_curve", "f1", "roc", "normal_fpr", "normal_fpr_1e4", "normal_sigma", "normal_max")


def _setup(n_anomalous=3, n_good=4, seed=0):
    maps, masks, labels = _maps(n_anomalous=n_anomalous * 2, n_good=n_good * 2, seed=seed)
    vi = np.r_[0:n_anomalous, 2 * n_anomalous:2 * n_anomalous + n_good]
    ti = np.setdiff1d(np.arange(len(maps)), vi)
    val = evaluation.ValidationData(maps[vi], masks[vi], labels[vi])
    fitted = {t: fit_threshold(t, val.maps, val.masks, 0.01, labels=val.anomalous) for t in TECHNIQUES}
    return maps, masks, labels, vi, ti, val, fitted


@pytest.mark.parametrize("name", TECHNIQUES)
def test_a_resample_refits_as_the_technique_fits_the_drawn_images(name):
    """Weights = how often each validation image is drawn: the grid refit lands where the technique's
    own fit on the replicated images lands (exactly for normal_max; the others among the grid's
    thresholds, as good by their own criterion)."""
    maps, masks, labels, vi, ti, val, fitted = _setup()
    drawn = np.array([0, 0, 2, 3, 3, 5, 6])  # validation positions, some twice
    w = np.bincount(drawn, minlength=len(val.maps))[None, :].astype(float)
    moments = PixelMoments.of(val.maps, ~val.anomalous)
    grid = decision_intervals._grid(val, fitted, 0.01, exact=moments.thresholds(w, 3.0))
    counts = evaluation.GridCounts(val.maps, val.masks, grid)
    k = decision_intervals.refit_indices(name, counts, w, val.anomalous, 0.01, sigma=(moments, 3.0))[0]
    exact = fit_threshold(name, val.maps[drawn], val.masks[drawn], 0.01, labels=val.anomalous[drawn])
    if name in ("normal_max", "normal_sigma", "normal_fpr_1e4"):  # (1e-4 of 7 000 pixels: above the maximum)
        assert grid[k] == exact
    else:  # among the grid's thresholds: the refit's own criterion is as good as the exact fit's
        m, g = val.maps[drawn], val.masks[drawn]
        at = lambda t: metrics.threshold_metrics(m, g, t)  # noqa: E731
        if name == "f1":
            assert at(grid[k])["dice"] == pytest.approx(at(exact)["dice"], abs=2e-3)
        elif name == "iou_curve":
            # ~2000 candidates among these toy maps' 7 000 pixels: equal to the curve's resolution
            assert at(grid[k])["mean_image_iou"] == pytest.approx(at(exact)["mean_image_iou"], abs=1e-2)
        elif name == "normal_fpr":
            good = ~val.anomalous[drawn]
            fpr = lambda t: float((m[good] >= t).mean())  # noqa: E731
            assert fpr(grid[k]) <= 0.01 + 1e-12 and fpr(grid[k]) == pytest.approx(fpr(exact), abs=1e-3)
        else:
            assert grid[k] == pytest.approx(exact, rel=0.05)


def test_decision_interval_holds_the_threshold_uncertainty_and_is_wider_than_the_fixed_one():
    maps, masks, labels, vi, ti, val, fitted = _setup(n_anomalous=3, n_good=3)
    resampler = evaluation.Resampler(labels[ti], seed=0)
    point = {}
    fixed = {}
    for name, t in fitted.items():
        c = evaluation.PixelCounts.at(maps[ti], masks[ti], t)
        fixed[name] = evaluation.segmentation_estimates(c, labels[ti], resampler).iou
        point[name] = fixed[name].value
    out = decision_intervals.decision_estimates(val, fitted, maps[ti], masks[ti], resampler.weights, point, 0.01, 0)
    assert set(out) == set(TECHNIQUES)
    for name, d in out.items():
        assert d.iou.value == point[name] and d.threshold.value == fitted[name]
        assert d.threshold.low <= d.threshold.high
        assert d.iou.low <= d.iou.value + 1e-9 or d.iou.high >= d.iou.value - 1e-9
    widths = {n: (out[n].iou.high - out[n].iou.low) - (fixed[n].high - fixed[n].low) for n in ("iou_curve", "f1")}
    assert all(w > 0 for w in widths.values()), widths
    # the same seed gives the same intervals; another seed another draw
    again = decision_intervals.decision_estimates(val, fitted, maps[ti], masks[ti], resampler.weights, point, 0.01, 0)
    assert again["iou_curve"] == out["iou_curve"]


def test_two_procedures_pair_resample_by_resample_with_their_thresholds_refitted():
    """The recommendation's "not distinguishable": a procedure against itself differs by exactly 0;
    two techniques' refitted resamples pair into an interval of the difference itself."""
    maps, masks, labels, vi, ti, val, fitted = _setup(n_anomalous=3, n_good=3)
    resampler = evaluation.Resampler(labels[ti], seed=0)
    point = {n: evaluation.segmentation_stats(evaluation.PixelCounts.at(maps[ti], masks[ti], t), labels[ti])["iou"]
             for n, t in fitted.items()}
    out = decision_intervals.decision_estimates(val, fitted, maps[ti], masks[ti], resampler.weights, point, 0.01, 0)
    a, b = out["iou_curve"].iou_resamples, out["normal_fpr"].iou_resamples
    assert len(a) == len(b) == evaluation.RESAMPLES
    same = evaluation.paired_resample_difference(0.0, a, a)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    diff = evaluation.paired_resample_difference(point["iou_curve"] - point["normal_fpr"], a, b)
    by_hand = np.quantile(np.array(a) - np.array(b), [0.025, 0.975])
    assert (diff.low, diff.high) == pytest.approx(tuple(by_hand))
    assert evaluation.paired_resample_difference(0.1, a, b[:-1]).value is None  # other draws: no pairing
