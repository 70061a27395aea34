"""Metrics against hand-computed cases and scikit-learn."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from inference.engine import metrics


def _random_case(seed=0, n=4, size=12):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    masks[1, 2:5, 3:7] = True
    masks[1, 8:10, 8:11] = True  # two regions in one image
    masks[2, 5:9, 1:3] = True
    maps = rng.random((n, size, size)).astype(np.float32) + masks * rng.random((n, size, size)).astype(np.float32)
    return maps, masks


def test_aurocs_match_sklearn():
    maps, masks = _random_case()
    assert metrics.pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    labels = masks.reshape(len(masks), -1).any(1)
    scores = maps.reshape(len(maps), -1).max(1)
    assert metrics.image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert metrics.image_auroc(scores, np.zeros(4, bool)) is None


def test_aurocs_with_ties_match_sklearn():
    maps, masks = _random_case(seed=5)
    maps = np.round(maps, 1)  # many normal/anomalous ties: each counts one half
    assert metrics.pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert metrics.RankedPixels(maps, np.zeros_like(masks)).auroc() is None


def test_ranked_roc_and_pr_curves_match_sklearn():
    maps, masks = _random_case(seed=2)
    maps = np.round(maps, 2)
    ranked = metrics.RankedPixels(maps, masks)
    fpr, tpr = ranked.roc_curve()
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    sk_fpr, sk_tpr, _ = roc_curve(masks.ravel(), maps.ravel())
    # every vertex of scikit-learn's ROC curve lies on ours
    for x, y in zip(sk_fpr, sk_tpr):
        assert np.isclose(np.interp(x, fpr, tpr, left=0), y) or any(np.isclose(fpr, x) & np.isclose(tpr, y))
    rec, prec = ranked.pr_curve()
    sk_prec, sk_rec, sk_thr = precision_recall_curve(masks.ravel(), maps.ravel())
    thresholds, _, _ = ranked.counts()
    for t, p, r in zip(sk_thr, sk_prec, sk_rec):
        if t in set(thresholds.tolist()):
            k = int(np.flatnonzero(thresholds == t)[0])
            assert (rec[k], prec[k]) == pytest.approx((r, p))


def test_aupro_perfect_detector_is_one():
    _, masks = _random_case()
    assert metrics.aupro(masks.astype(np.float32), masks) == pytest.approx(1.0)


def test_aupro_constant_map():
    # one threshold: FPR 1, PRO 1 -> curve (0,0)-(1,1); area to 0.3 = 0.045; / 0.3 = 0.15
    _, masks = _random_case()
    assert metrics.aupro(np.ones(masks.shape, np.float32), masks) == pytest.approx(0.15)


def test_aupro_hand_case():
    # region = 2 pixels scoring 0.9 and 0.5, two normal pixels scoring 0.7 and 0.1.
    # curve: (0,0) (0,.5) (.5,.5) (.5,1) (1,1) -> area to 0.3 = 0.3*0.5 -> normalised 0.5
    masks = np.array([[[True, True, False, False]]])
    maps = np.array([[[0.9, 0.5, 0.7, 0.1]]], np.float32)
    fpr, pro = metrics.pro_curve(maps, masks)
    points = set(zip(fpr.tolist(), pro.tolist()))
    assert points == {(0, 0), (0, 0.5), (0.5, 0.5), (0.5, 1), (1, 1)}
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)
    assert metrics.aupro(maps, masks) == pytest.approx(0.5)


def _pro_curve_by_definition(maps, masks):
    """FPR and PRO at every distinct score, straight from the definition (small inputs only)."""
    regions = []
    for i in range(len(masks)):
        lab, n = ndimage.label(masks[i], structure=np.ones((3, 3)))
        regions += [(i, lab == r) for r in range(1, n + 1)]
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fprs.append((pred & normal).sum() / normal.sum())
        pros.append(np.mean([pred[i][reg].mean() for i, reg in regions]))
    return np.array(fprs + [1.0]), np.array(pros + [1.0])


@pytest.mark.parametrize("seed,decimals", [(3, 2), (4, 1), (6, 6)])
def test_pro_curve_matches_definition(seed, decimals):
    maps, masks = _random_case(seed=seed)
    maps = np.round(maps, decimals)  # ties between normal and anomalous scores
    fpr, pro = metrics.pro_curve(maps, masks)
    ref_fpr, ref_pro = _pro_curve_by_definition(maps, masks)
    for limit in (0.05, 0.3, 1.0):
        assert metrics.trapezoid_area(fpr, pro, limit) == pytest.approx(
            metrics.trapezoid_area(ref_fpr, ref_pro, limit), abs=1e-12)
    # every point of the definition's curve lies on ours
    for x, y in zip(ref_fpr, ref_pro):
        on_vertex = np.any(np.isclose(fpr, x) & np.isclose(pro, y))
        assert on_vertex or np.isclose(np.interp(x, fpr, pro), y)


def test_threshold_free_ranks_once_and_agrees_with_the_single_metrics():
    maps, masks = _random_case(seed=7)
    tf = metrics.threshold_free(maps, masks)
    assert tf["pixel_auroc"] == metrics.pixel_auroc(maps, masks)
    assert tf["aupro"] == metrics.aupro(maps, masks)
    good = metrics.threshold_free(maps[[0, 3]], masks[[0, 3]])
    assert good == {"image_auroc": None, "pixel_auroc": None, "aupro": None, "aupimo": None}


def test_trapezoid_interpolates_at_limit():
    assert metrics.trapezoid_area([0, 1], [0, 1], 0.3) == pytest.approx(0.045)
    assert metrics.trapezoid_area([0, 0.3, 1], [1, 1, 1], 0.3) == pytest.approx(0.3)
    assert metrics.trapezoid_area([0, 0.2, 0.4], [0, 1, 1], 0.3) == pytest.approx(0.1 + 0.1)


def test_threshold_metrics_hand_case():
    masks = np.zeros((2, 2, 2), bool)
    masks[0, 0, :] = True  # image 0 anomalous (2 px), image 1 good
    maps = np.array([[[0.9, 0.2], [0.8, 0.1]], [[0.1, 0.1], [0.6, 0.1]]], np.float32)
    m = metrics.threshold_metrics(maps, masks, 0.5)
    # predicted: img0 (0,0) TP, (1,0) FP, (0,1) FN; img1 (1,0) FP -> TP=1 FP=2 FN=1 TN=4
    assert m["iou"] == pytest.approx(1 / 4)
    assert m["dice"] == pytest.approx(2 / 5)
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["recall"] == pytest.approx(1 / 2)
    assert m["fpr"] == pytest.approx(2 / 6)
    assert m["mean_image_iou"] == pytest.approx(1 / 3)
    assert m["image_accuracy"] == pytest.approx(0.5)  # both predicted anomalous
    assert metrics.per_image_iou(maps[0], masks[0], 0.5) == pytest.approx(1 / 3)
    assert metrics.per_image_iou(maps[1], masks[1], 0.95) is None


def test_counts_at_thresholds_brute_force():
    rng = np.random.default_rng(1)
    s = rng.random(500).astype(np.float32)
    y = rng.random(500) < 0.3
    thr = np.sort(rng.random(37))
    tp, fp = metrics.counts_at_thresholds(s, y, thr)
    for j, t in enumerate(thr):
        assert tp[j] == ((s >= t) & y).sum()
        assert fp[j] == ((s >= t) & ~y).sum()
