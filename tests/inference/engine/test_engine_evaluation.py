"""The decision protocol on computed maps: split, intervals, cross-fitting, few-shot, image decision, CFLOW score."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.engine import evaluation, metrics
from inference.engine.report import SCHEMA_VERSION, json_schema
from inference.engine.split import split_problems, split_validation_test
from inference.engine.thresholds import ThresholdError, fit_threshold
from inference.engine.types import Sample


def _samples(defect_types):
    return [Sample(f"{k}.png", None if d == "good" else f"{k}_mask.png", d, key=f"{d}/{k}")
            for k, d in enumerate(defect_types)]


def _maps(n_anomalous=6, n_good=6, size=32, seed=0):
    """Maps whose anomalous images have one strong and one faint region, good ones noise only."""
    rng = np.random.default_rng(seed)
    n = n_anomalous + n_good
    maps = rng.normal(size=(n, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), bool)
    for i in range(n_anomalous):
        masks[i, 4 + i:14 + i, 3:13] = True
        maps[i][4 + i:14 + i, 3:13] += 2.0
        masks[i, 24:27, 20:28] = True
        maps[i, 24:27, 20:28] += 0.6
    return maps, masks, masks.reshape(n, -1).any(1)


# ---- defect 2: the split always leaves an anomalous image on each side ------------------------
def test_two_anomalous_images_of_two_types_split_one_and_one():
    test = _samples(["good"] * 4 + ["hole", "scratch"])
    for seed in range(10):
        val, rest = split_validation_test(test, 0.5, seed)
        assert sum(test[i].is_anomalous for i in val) == 1 and sum(test[i].is_anomalous for i in rest) == 1


def test_single_image_types_are_pooled_and_every_image_is_placed_once():
    test = _samples(["good"] * 6 + ["a", "b", "c", "d", "e", "e", "e", "e"])
    val, rest = split_validation_test(test, 0.5, 3)
    assert sorted(val + rest) == list(range(len(test)))
    singles = [i for i in val if test[i].defect_type in "abcd"]
    assert len(singles) == 2  # four single-image types pooled: half of them to validation


def test_split_problems_say_why():
    assert split_problems(_samples(["good"] * 3 + ["hole", "hole"])) == []
    assert "1 anomalous test image(s); at least 2 are needed" in split_problems(_samples(["good"] * 3 + ["hole"]))[0]
    assert "1 defect-free test image(s)" in split_problems(_samples(["good", "hole", "hole"]))[0]


# ---- defect 4: CFLOW scores keep their order where float32 saturated ----------------------------
def test_cflow_score_does_not_saturate_and_ranks_like_the_paper():
    from inference.engine.cflow import log_sum_exp_score

    d = torch.tensor([-5.0, -20.0, -40.0, -60.0, -90.0], dtype=torch.float64).reshape(1, 1, 1, 5)
    old = (1.0 - torch.exp(d).float()).reshape(-1)  # the paper's per-layer score, as float32 made it
    assert len(set(old.tolist())) == 2  # -20, -40, -60 and -90 all became exactly 1.0
    new = torch.stack([log_sum_exp_score([d[..., k:k + 1]], 1)[0, 0] for k in range(5)]).float()
    assert len(set(new.tolist())) == 5 and torch.all(new[1:] > new[:-1])
    # two layers, bilinear upsampling: the same order as the paper's sum of (1 - p) where float64 resolves it
    rng = np.random.default_rng(0)
    layers = [torch.tensor(rng.uniform(-12, 0, (1, 1, 4, 4))), torch.tensor(rng.uniform(-12, 0, (1, 1, 2, 2)))]
    paper = sum(torch.nn.functional.interpolate(1 - torch.exp(x), size=(8, 8), mode="bilinear",
                                                align_corners=False) for x in layers)[0, 0]
    ours = log_sum_exp_score(layers, 8)
    assert np.array_equal(np.argsort(paper.numpy().ravel(), kind="stable"),
                          np.argsort(ours.numpy().ravel(), kind="stable"))


# ---- defect 5: defect-free means the label, not an empty resized mask ---------------------------
def test_normal_thresholds_ignore_an_anomalous_image_whose_mask_vanished():
    maps, masks, _ = _maps(2, 3)
    vanished = np.zeros_like(masks[0])
    maps[0] += 5.0  # a thin defect lights up the whole map, but its mask vanished at this size
    masks[0] = vanished
    labels = np.array([True, True, False, False, False])
    by_label = fit_threshold("normal_max", maps, masks, labels=labels)
    assert by_label == pytest.approx(float(np.nextafter(maps[2:].max(), np.inf)))
    assert fit_threshold("normal_max", maps, masks) > maps[0].max()  # the old, mask-based reading


def test_image_decision_has_its_own_threshold():
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    labels = np.array([True, True, True, False, False, False])
    t = evaluation.fit_image_threshold(scores, labels)
    assert t == 0.7  # the highest threshold with every defective part caught and no good one rejected
    stats = evaluation.image_stats(scores, labels, t)
    assert stats["accuracy"] == 1.0 and stats["recall"] == 1.0 and stats["fpr"] == 0.0
    with pytest.raises(ThresholdError, match="needs anomalous images"):
        evaluation.fit_image_threshold(scores[3:], labels[3:])


# ---- intervals ----------------------------------------------------------------------------------
def test_resampled_statistics_equal_the_exact_metrics_on_the_same_images():
    maps, masks, labels = _maps()
    ranks = evaluation.PixelRanks(maps, masks)
    idx = np.array([0, 0, 1, 2, 3, 3, 6, 7, 8, 8, 9, 11])
    w = np.bincount(idx, minlength=len(maps))[None, :].astype(float)
    assert ranks.pixel_auroc_resamples(w)[0] == pytest.approx(metrics.pixel_auroc(maps[idx], masks[idx]), abs=1e-12)
    scores = metrics.image_scores(maps)
    assert evaluation.image_auroc_resamples(scores, labels, w)[0] == pytest.approx(
        metrics.image_auroc(scores[idx], labels[idx]))
    # AUPRO resamples are evaluated at 301 thresholds: close to the exact value
    assert ranks.aupro_resamples(w)[0] == pytest.approx(metrics.aupro(maps[idx], masks[idx]), abs=2e-3)
    c = evaluation.PixelCounts.at(maps, masks, 1.0)
    pooled = evaluation.segmentation_stats(c, labels, w)
    exact = metrics.threshold_metrics(maps[idx], masks[idx], 1.0)
    for key in ("iou", "dice", "precision", "recall", "fpr", "mean_image_iou"):
        assert pooled[key][0] == pytest.approx(exact[key]), key


def test_intervals_are_seeded_stratified_and_contain_the_estimate():
    maps, masks, labels = _maps()
    a = evaluation.Resampler(labels, seed=0)
    b = evaluation.Resampler(labels, seed=0)
    assert np.array_equal(a.weights, b.weights)
    assert np.all(a.weights[:, labels].sum(1) == labels.sum())  # stratified: the same number of each kind
    est = evaluation.threshold_free_estimates(maps, masks, labels, a)
    for name in ("image_auroc", "pixel_auroc", "aupro"):
        e = getattr(est, name)
        assert e.low <= e.value <= e.high, name
    seg = evaluation.segmentation_estimates(evaluation.PixelCounts.at(maps, masks, 1.0), labels, a)
    assert seg.iou.low < seg.iou.value < seg.iou.high


def test_paired_difference_of_a_candidate_with_itself_is_zero_and_of_two_is_paired():
    maps, masks, labels = _maps()
    strong = evaluation.PixelCounts.at(maps, masks, 1.0)
    weak = evaluation.PixelCounts.at(maps, masks, 2.5)
    counts = lambda c: np.column_stack([c.tp, c.fp, c.pos - c.tp]).tolist()  # noqa: E731
    same = evaluation.paired_difference(counts(strong), counts(strong), labels, seed=0)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    diff = evaluation.paired_difference(counts(strong), counts(weak), labels, seed=0)
    assert diff.low <= diff.value <= diff.high and diff.value == pytest.approx(
        evaluation.segmentation_stats(strong, labels)["iou"] - evaluation.segmentation_stats(weak, labels)["iou"])


# ---- defect 1: the technique is chosen by cross-fitting -----------------------------------------
def test_selection_scores_each_technique_on_folds_it_was_not_fitted_on():
    maps, masks, labels = _maps(n_anomalous=4, n_good=4)
    val = evaluation.ValidationData(maps, masks, labels)
    keys = [f"k{i}" for i in range(len(maps))]
    techniques = ("iou_curve", "f1", "roc", "normal_fpr", "normal_max")
    sel = evaluation.cross_fitted_selection(val, keys, techniques, 0.01, seed=0)
    assert sel.n_folds == 4 and "leave-one-anomalous-image-out" in sel.method
    entries = {e.technique: e for e in sel.entries}
    assert sel.chosen == max(entries, key=lambda k: entries[k].cv_iou)
    # normal_max by hand: fitted on the other folds' defect-free images, each held-out fold's
    # TP/FP/FN pixels summed into one IoU (the statistic the test part reports)
    folds, _ = evaluation.make_folds(labels, keys, 0)
    tp = fp = fn = 0
    for held in folds:
        assert labels[held].any()  # no fold without an anomalous image
        rest = np.setdiff1d(np.arange(len(maps)), held)
        t = fit_threshold("normal_max", maps[rest], masks[rest], labels=labels[rest])
        pred = maps[held] >= t
        tp += int((pred & masks[held]).sum())
        fp += int((pred & ~masks[held]).sum())
        fn += int((~pred & masks[held]).sum())
    assert entries["normal_max"].cv_iou == pytest.approx(tp / (tp + fp + fn))
    assert entries["normal_max"].folds_scored == 4
    # the in-sample rule is decided in advance: f1 maximises pooled Dice, hence IoU, on those pixels
    in_sample = {t: metrics.threshold_metrics(maps, masks, fit_threshold(t, maps, masks, labels=labels))["iou"]
                 for t in techniques}
    assert max(in_sample, key=in_sample.get) == "f1"


def test_pooled_criterion_is_not_the_mean_of_per_fold_ious():
    """A fold whose anomalous image is tiny would weigh as much as one with a large defect in a
    mean of fold IoUs; pooled, each pixel counts once, as in the test part's IoU."""
    maps, masks, labels = _maps(n_anomalous=3, n_good=3)
    masks[0] = False
    masks[0, 2:4, 2:4] = True  # a 4-pixel defect, badly found
    val = evaluation.ValidationData(maps, masks, labels)
    keys = [str(i) for i in range(6)]
    sel = evaluation.cross_fitted_selection(val, keys, ("normal_max",), 0.01, seed=0)
    folds, _ = evaluation.make_folds(labels, keys, 0)
    per_fold = []
    for held in folds:
        rest = np.setdiff1d(np.arange(6), held)
        t = fit_threshold("normal_max", maps[rest], masks[rest], labels=labels[rest])
        per_fold.append(metrics.threshold_metrics(maps[held], masks[held], t)["iou"])
    assert abs(sel.entries[0].cv_iou - np.mean(per_fold)) > 1e-3


def test_one_anomalous_validation_image_makes_no_fold_without_one_and_falls_back_by_a_fixed_rule():
    """Two folds with one anomalous image would leave a fold of defect-free pixels only, which
    rewards thresholds that never fire; nothing is cross-fitted and the report says so."""
    maps, masks, labels = _maps(n_anomalous=1, n_good=4)
    val = evaluation.ValidationData(maps, masks, labels)
    sel = evaluation.cross_fitted_selection(val, [str(i) for i in range(5)], ("f1", "normal_max"), 0.01, 0)
    assert sel.n_folds == 0 and sel.chosen is None and "not cross-fitted" in sel.method
    entries = {e.technique: e for e in sel.entries}
    for name in ("f1", "normal_max"):
        assert entries[name].failure.reason == "too_few_anomalous_validation_images"
        assert "1 anomalous validation image" in entries[name].failure.message
    chosen, rule = evaluation.fallback_choice(["f1", "iou_curve", "normal_max"])
    assert chosen == "iou_curve" and "fixed in advance" in rule and "f1" in rule
    assert evaluation.fallback_choice(["normal_fpr", "synthetic"])[0] == "synthetic"
    assert evaluation.fallback_choice(["f1", "normal_max"])[0] == "f1"
    assert evaluation.fallback_choice([])[0] is None


# ---- few-shot study -----------------------------------------------------------------------------
def test_few_shot_study_points_and_label_free_baseline():
    maps, masks, labels = _maps(n_anomalous=12, n_good=6)
    val = evaluation.ValidationData(maps[::2], masks[::2], labels[::2])
    few = evaluation.few_shot_study(val, maps[1::2], masks[1::2], ("iou_curve", "normal_max"), 0.01, seed=0)
    assert few.n_values == [1, 2, 3, 5, 6] and few.n_available == 6
    curve, flat = few.curves
    assert [p.n_anomalous for p in curve.points] == few.n_values
    assert all(p.iou_low <= p.iou_mean <= p.iou_high for p in curve.points)
    assert curve.points[0].draws == evaluation.FEW_SHOT_DRAWS and curve.points[-1].draws == 1
    assert curve.enough is not None and curve.points[-1].iou_mean - 0.02 <= next(
        p.iou_mean for p in curve.points if p.n_anomalous == curve.enough)
    assert not flat.needs_anomalous and len({p.iou_mean for p in flat.points}) == 1
    assert flat.points[0].n_anomalous == 0


# ---- defect 8: one typed report with a committed schema -----------------------------------------
def test_committed_schema_is_the_generated_one():
    committed = json.loads((Path(evaluation.__file__).parent / "report.schema.json").read_text())
    assert committed == json_schema(), "regenerate inference/engine/report.schema.json (see report.py)"
    assert str(SCHEMA_VERSION) in committed["title"]


def test_failures_are_typed():
    exc = ThresholdError("threshold technique 'f1' needs anomalous images in the validation part, but it has none")
    failure = evaluation.failure_of(exc)
    assert failure.reason == "no_anomalous_validation_images" and "f1" in failure.message
    assert math.isnan(evaluation._ratio(1, 0))


def test_image_auroc_counts_an_anomalous_image_whose_mask_vanished_as_anomalous():
    maps, masks, labels = _maps(3, 3)
    masks[0] = False  # its thin defect vanished when the mask was resized; the folder still says defective
    maps[0] -= 10.0  # and the model missed it: image AUROC must pay for that
    assert metrics.threshold_free(maps, masks, labels)["image_auroc"] < 1.0
    assert metrics.threshold_free(maps, masks)["image_auroc"] == 1.0  # the mask-based reading hid the miss


def test_aupro_resamples_are_integrated_to_fpr_limit_when_the_resample_is_quieter_than_the_sample():
    """A resample drawing mostly quiet images has a lower FPR at every grid threshold than the
    point sample: its curve must still be closed at its own FPR 0.3, not integrated short."""
    rng = np.random.default_rng(3)
    size, n = 32, 8
    maps = rng.normal(size=(n, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), bool)
    for i in range(4):  # anomalous images: quiet background, one region
        masks[i, 8:16, 8:16] = True
        maps[i] *= 0.2
        maps[i, 8:16, 8:16] += rng.uniform(0.0, 1.0, size=(8, 8))
    maps[4:] += 1.5  # loud defect-free images dominate the point sample's high-FPR thresholds
    ranks = evaluation.PixelRanks(maps, masks)
    idx = np.array([0, 1, 2, 3, 0, 1, 2, 3, 4])  # mostly quiet images
    w = np.bincount(idx, minlength=n)[None, :].astype(float)
    exact = metrics.aupro(maps[idx], masks[idx])
    assert ranks.aupro_resamples(w)[0] == pytest.approx(exact, abs=5e-3)
