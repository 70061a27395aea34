"""Drift statistics: the KS test and the rejection shares, against SciPy and hand counts."""
import numpy as np
import pytest
from scipy import stats

from inference.engine import drift


def test_proportion_is_clopper_pearson():
    p = drift.proportion(3, 40)
    assert p.share == pytest.approx(0.075)
    # Clopper-Pearson by its definition: beta quantiles
    assert p.low == pytest.approx(stats.beta.ppf(0.025, 3, 38))
    assert p.high == pytest.approx(stats.beta.ppf(0.975, 4, 37))
    assert drift.proportion(0, 0).share is None


def test_same_distribution_is_silent_and_a_shift_is_seen():
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 40)
    same = drift.drift_statistics(reference, rng.normal(0, 1, 60), image_threshold=2.5)
    assert same.enough and not same.shifted and not same.drifted and same.p_value > 0.05
    line = rng.normal(1.0, 1, 60)
    shifted = drift.drift_statistics(reference, line, image_threshold=2.5)
    assert shifted.shifted and shifted.drifted and shifted.p_value < drift.SIGNIFICANCE
    assert shifted.p_value == pytest.approx(stats.ks_2samp(line, reference).pvalue)
    assert shifted.ks_statistic == pytest.approx(stats.ks_2samp(line, reference).statistic)


def test_more_rejections_than_expected_needs_non_overlapping_intervals():
    reference = np.linspace(0, 1, 50)  # 5 of 50 at or above 0.9 -> expected about 10 %
    line = np.concatenate([np.full(30, 0.95), np.full(30, 0.2)])  # half rejected
    result = drift.drift_statistics(reference, line, image_threshold=0.9)
    assert result.expected_rejected.hits == 5 and result.line_rejected.hits == 30
    assert result.line_rejected.low > result.expected_rejected.high and result.more_rejected
    few = drift.drift_statistics(reference, line[:10], image_threshold=0.9)
    assert not few.enough and few.p_value is None and not few.drifted


def test_ecdf_polyline_steps_from_bottom_left_to_top_right():
    points = drift.ecdf_polyline(np.array([1.0, 3.0]), 0.0, 4.0, 100.0, 50.0).split()
    assert points[0] == "0.0,50.0" and points[-1] == "100.0,0.0"
    assert "25.0,25.0" in points and "75.0,0.0" in points
