"""AUPIMO on constructed maps whose per-image overlap curves are known by hand."""

import math

import numpy as np
import pytest

from inference.engine import evaluation
from inference.engine.pimo import FPR_BOUNDS, PerImageOverlap

N_GOOD = 200_000  # two defect-free images of 400 x 250 pixels: FPR 1e-5 is 2 pixels, 1e-4 is 20


def _hand_example():
    """Good pixels score 0 .. 199 999 (each once; image 0 the lower half), so the shared FPR at t is
    #{good >= t} / 200 000.

    * image 2: two defect pixels, one above every good pixel, one at 199 993.5 (6 good pixels,
      FPR 3e-5, lie above it): TPR 1/2 from FPR 1e-5 to 3e-5, then 1, so
      AUPIMO = (0.5 ln 3 + ln(10/3)) / ln 10;
    * image 3: its defect scores below every good pixel: AUPIMO 0;
    * image 4: its defect scores above every good pixel: AUPIMO 1;
    * image 5: labelled anomalous, but its (resized) mask is empty: no AUPIMO.
    """
    maps = np.zeros((6, 400, 250), np.float32)
    masks = np.zeros(maps.shape, bool)
    maps[:2] = np.arange(N_GOOD, dtype=np.float32).reshape(2, 400, 250)  # image 0 the lower half
    masks[2, 0, :2] = True
    maps[2, 0, :2] = [1e6, 199_993.5]
    masks[3, 5, :4] = True
    maps[3, 5, :4] = -1.0
    masks[4, 9, :3] = True
    maps[4, 9, :3] = 3e5
    maps[5] = 1e6  # no mask pixel: its scores count nowhere
    labels = np.array([False, False, True, True, True, True])
    return maps, masks, labels


HALF_THEN_ONE = (0.5 * math.log(3) + math.log(10 / 3)) / math.log(10)  # 0.7614...


def test_aupimo_matches_the_hand_computed_curves():
    maps, masks, labels = _hand_example()
    overlap = PerImageOverlap(maps, masks, labels)
    assert overlap.note == ""
    values = overlap.values()
    assert np.isnan(values[[0, 1, 5]]).all()  # defect-free images, and the one without defect pixels
    assert values[2] == pytest.approx(HALF_THEN_ONE, abs=1e-12)
    assert values[3] == 0.0 and values[4] == 1.0
    assert overlap.mean() == pytest.approx((HALF_THEN_ONE + 0 + 1) / 3, abs=1e-12)
    q = overlap.quantiles()
    assert (q["min"], q["max"]) == (0.0, 1.0) and q["median"] == pytest.approx(HALF_THEN_ONE, abs=1e-12)
    assert q["q25"] == pytest.approx(HALF_THEN_ONE / 2, abs=1e-12)


def test_a_resample_is_the_same_images_drawn_again():
    """Weights = times each image is drawn: the resample's mean AUPIMO is the one of the replicated images.
    Redrawing the defect-free images moves the shared FPR: with image 0 (scores below 100 000) drawn
    twice and image 1 not at all, image 2's defect lies above every good pixel (AUPIMO 1), and the
    mean over images 2, 3 and 4 drawn 1, 1 and 3 times is (1 + 0 + 3) / 5."""
    maps, masks, labels = _hand_example()
    overlap = PerImageOverlap(maps, masks, labels)
    drawn = np.array([0, 0, 2, 3, 4, 4, 4])
    weights = np.bincount(drawn, minlength=len(maps)).astype(float)
    replicated = PerImageOverlap(maps[drawn], masks[drawn], labels[drawn])
    assert replicated.mean() == pytest.approx(0.8, abs=1e-12)
    assert overlap.mean_resamples(np.stack([weights, np.ones(len(maps))])) == pytest.approx(
        [0.8, (HALF_THEN_ONE + 0 + 1) / 3], abs=1e-12)


def _dense_grid_reference(maps, masks, labels, n_thresholds=300_000):
    """AUPIMO the way anomalib's torch code evaluates it: a linear grid of thresholds between the good
    pixels' minimum and maximum, the trapezoid rule on log shared FPR between the grid points whose
    FPR is closest to the bounds, divided by ln 10 (written from its documented definition).
    Returns the values and the FPRs it actually integrated between."""
    good = np.sort(maps[~labels].ravel())
    thresholds = np.linspace(good[0], good[-1], n_thresholds)
    fpr = (len(good) - np.searchsorted(good, thresholds, side="left")) / len(good)  # descending
    lo = int(np.argmin(np.abs(fpr - FPR_BOUNDS[0])))
    hi = int(np.argmin(np.abs(fpr - FPR_BOUNDS[1])))
    x = np.log(fpr[hi:lo + 1][::-1])
    out = []
    for m, g in zip(maps[labels], masks[labels]):
        d = np.sort(m[g])
        tpr = ((len(d) - np.searchsorted(d, thresholds, side="left")) / len(d))[hi:lo + 1][::-1]
        out.append(np.trapezoid(tpr, x) / math.log(FPR_BOUNDS[1] / FPR_BOUNDS[0]))
    return np.array(out), (fpr[lo], fpr[hi])


def test_exact_aupimo_is_the_limit_of_anomalibs_dense_threshold_grid():
    rng = np.random.default_rng(3)
    n_good, n_bad, size = 16, 6, 256  # 1 M good pixels: the bounds are 10 and 100 of them
    maps = rng.standard_normal((n_good + n_bad, size, size)).astype(np.float32)
    masks = np.zeros(maps.shape, bool)
    for k in range(n_good, n_good + n_bad):
        masks[k, 40:40 + 4 * k, 60:90] = True
        maps[k][masks[k]] += rng.uniform(2.0, 5.0)  # defects of several strengths
    labels = np.arange(len(maps)) >= n_good
    exact = PerImageOverlap(maps, masks, labels).values()[labels]
    reference, (lo, hi) = _dense_grid_reference(maps, masks, labels)
    assert 0.05 < exact.min() and exact.max() < 0.99  # curves that rise inside the range
    # over the range the grid actually integrated, the two agree to the grid's resolution ...
    same_range = PerImageOverlap(maps, masks, labels, bounds=(lo, hi)).values()[labels]
    assert same_range * math.log(hi / lo) / math.log(10) == pytest.approx(reference, abs=1e-4)
    # ... and the grid's bounds snap to the nearest FPR (half a pixel of 10 at 1e-5 here: ~1 % off)
    assert exact == pytest.approx(reference, abs=0.03)


def test_no_aupimo_where_fpr_1e5_is_below_one_pixel_or_nothing_is_anomalous():
    maps, masks, labels = _hand_example()
    small = PerImageOverlap(maps[:, :100, :100], masks[:, :100, :100], labels)  # 20 000 good pixels
    assert "100,000 defect-free pixels" in small.note and small.mean() is None
    assert np.isnan(small.mean_resamples(np.ones((3, len(maps))))).all()
    assert PerImageOverlap(maps[:2], masks[:2], labels[:2]).note == "no anomalous image"
    assert PerImageOverlap(maps[2:], masks[2:], labels[2:]).note.startswith("no defect-free image")


def test_the_mean_has_a_bootstrap_interval_over_test_images():
    maps, masks, labels = _hand_example()
    overlap = PerImageOverlap(maps, masks, labels)
    resampler = evaluation.Resampler(labels, seed=0, resamples=200)
    estimate = resampler.estimate(overlap.mean(), overlap.mean_resamples(resampler.weights))
    assert estimate.low <= estimate.value <= estimate.high and estimate.low < estimate.high


def test_the_strict_label_free_threshold_is_at_the_upper_end_of_the_aupimo_range():
    from inference.engine.thresholds import TECHNIQUES

    assert TECHNIQUES["normal_fpr_1e4"].fixed_target == FPR_BOUNDS[1]
