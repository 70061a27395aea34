"""Issue 21: anomalous images without a mask are image-level evidence. Image AUROC and the image
decision use every anomalous image; pixel metrics and the thresholds that need labelled defects
use only those with a mask."""

import json
from dataclasses import replace

import numpy as np
import pytest

from inference.engine import BenchmarkConfig, Sample, run_benchmark
from inference.engine.report import json_schema
from inference.engine.runner import _evaluate, threshold_free_mixed
from inference.engine.split import split_validation_test
from inference.engine.thresholds import NEEDS_ANOMALOUS

CFG = dict(image_size=64, pretrained=False, n_features=20, batch_size=4, device="cpu")


def _maps_case():
    """4 good, 2 anomalous with a mask, 2 without; 2x2 maps, hand-checkable.

    Image scores (map maxima): good 0.1 0.2 0.3 0.9 · masked 0.8 0.7 · unmasked 0.95 0.05.
    Image AUROC over all four anomalous: pairs above the 4 good = (3 + 3 + 4 + 0) / 16 = 10/16.
    Pixel AUROC over the masked only: their defect pixel (0.8, 0.7) against every normal pixel of
    the 4 good and 2 masked images (6 x 4 - 2 = 22 pixels, only the 0.9 above them) -> 42/44.
    """
    good = [0.1, 0.2, 0.3, 0.9]
    maps = np.zeros((8, 2, 2), np.float32)
    for i, v in enumerate(good):
        maps[i] = v / 2
        maps[i, 0, 0] = v
    maps[4], maps[5] = 0.0, 0.0
    maps[4, 1, 1], maps[5, 1, 1] = 0.8, 0.7
    maps[6, 0, 0], maps[7, 0, 0] = 0.95, 0.05
    masks = np.zeros((8, 2, 2), bool)
    masks[4, 1, 1] = masks[5, 1, 1] = True
    labels = np.array([False] * 4 + [True] * 4)
    pixel = np.array([True] * 6 + [False] * 2)
    return maps, masks, labels, pixel


def test_image_auroc_over_every_anomalous_image_pixel_auroc_over_the_masked_only():
    maps, masks, labels, pixel = _maps_case()
    scores = maps.reshape(8, -1).max(axis=1)

    mixed = threshold_free_mixed(maps, masks, labels, scores, np.arange(8), pixel)

    assert mixed["image_auroc"] == pytest.approx(10 / 16)
    assert mixed["pixel_auroc"] == pytest.approx(42 / 44)
    # unmasked images counted as if their mask were empty would add their pixels as normal ones
    wrong = threshold_free_mixed(maps, masks, labels, scores, np.arange(8), np.ones(8, bool))
    assert wrong["pixel_auroc"] != pytest.approx(42 / 44)


def _samples(labels, pixel):
    out = []
    for i, (anomalous, has) in enumerate(zip(labels, pixel)):
        out.append(Sample(f"/x/{i}.png", f"/x/{i}_mask.png" if anomalous and has else None,
                          "crack" if anomalous else "good", key=f"k{i:02d}"))
    return out


def test_without_masked_validation_defects_only_the_label_free_techniques_fit_and_one_is_chosen():
    """Every anomalous image without a mask: image-level numbers exist, the techniques that need
    labelled defects say why they were skipped, a label-free one is recommended."""
    rng = np.random.default_rng(0)
    n_good, n_bad = 12, 8
    labels = np.array([False] * n_good + [True] * n_bad)
    pixel = ~labels
    maps = rng.random((len(labels), 8, 8)).astype(np.float32)
    maps[labels, 3, 3] += 2.0
    masks = np.zeros(maps.shape, bool)
    test = _samples(labels, pixel)
    config = BenchmarkConfig(**CFG)
    scores = maps.reshape(len(maps), -1).max(axis=1)

    ev = _evaluate(test, maps, scores, masks, labels, None, config, 0, full=True, pixel=pixel)

    for name in NEEDS_ANOMALOUS:
        failure = ev["techniques"][name].failure
        assert failure.reason == "no_masked_anomalous_validation_images"
        assert failure.message.startswith("needs masks:")
    assert ev["techniques"]["normal_fpr"].failure is None and ev["techniques"]["normal_fpr"].threshold is not None
    assert ev["selection"].chosen in ("synthetic", "normal_fpr", "normal_fpr_1e4", "normal_sigma", "normal_max")
    assert ev["test_part"].image_auroc.value == 1.0  # the defect pixel tops every good image
    assert ev["test_part"].pixel_auroc.value is None and ev["test_part"].aupro.value is None
    # the parts-caught rate rests on the unmasked anomalous images alone here
    assert ev["image_decision"].failure is None and ev["image_decision"].test.recall.value >= 0.5


def test_mixed_evaluation_fits_the_mask_based_techniques_on_the_masked_validation_images():
    maps, masks, labels, pixel = _maps_case()
    rng = np.random.default_rng(1)
    # more of the same, so that each part holds masked and unmasked anomalous images
    maps = np.concatenate([maps] * 3) + rng.random((24, 2, 2)).astype(np.float32) * 1e-3
    masks, labels, pixel = np.concatenate([masks] * 3), np.concatenate([labels] * 3), np.concatenate([pixel] * 3)
    test = _samples(labels, pixel)
    scores = maps.reshape(len(maps), -1).max(axis=1)
    vi, ti = (np.array(i) for i in split_validation_test(test, 0.5, 0))

    ev = _evaluate(test, maps, scores, masks, labels, None, BenchmarkConfig(**CFG), 0, full=True, pixel=pixel)

    assert ev["techniques"]["iou_curve"].failure is None
    assert set(ev["pv"]) == {i for i in vi if pixel[i]} and set(ev["pt"]) == {i for i in ti if pixel[i]}
    from inference.engine import metrics
    assert ev["test_part"].image_auroc.value == pytest.approx(metrics.image_auroc(scores[ti], labels[ti]))
    pt = ev["pt"]
    assert ev["test_part"].pixel_auroc.value == pytest.approx(metrics.pixel_auroc(maps[pt], masks[pt]))


@pytest.fixture(scope="module")
def mixed_run(synthetic):
    """The synthetic product with half its anomalous images' masks left out (two of each defect
    type, one in each part of the seed-0 split)."""
    train, test = synthetic
    anomalous = [i for i, s in enumerate(test) if s.is_anomalous]
    dropped = {i for n, i in enumerate(anomalous) if n % 4 in (0, 1)}
    test = [replace(s, mask_path=None) if i in dropped else s for i, s in enumerate(test)]
    return run_benchmark(train, test, BenchmarkConfig(**CFG)), test


def test_a_run_reports_how_many_anomalous_images_had_masks(mixed_run):
    import jsonschema

    report, test = mixed_run
    jsonschema.validate(report, json_schema())
    masks = report["masks"]
    unmasked = sum(s.is_anomalous and s.mask_path is None for s in test)
    assert masks["test_image_level_only"] + masks["validation_image_level_only"] == unmasked
    assert masks["test_with_mask"] + masks["validation_with_mask"] == sum(s.mask_path is not None for s in test)
    assert "pixel_auroc" in masks["needs_masks"] and "image_auroc" not in masks["needs_masks"]
    rows = {row["key"]: row for row in report["per_image"]}
    without = [s.report_key for s in test if s.is_anomalous and s.mask_path is None and s.report_key in rows]
    assert without and all(not rows[k]["has_mask"] and rows[k]["iou"]["f1"] is None and rows[k]["counts"] == {}
                           for k in without)
    assert all(rows[k]["predicted_anomalous"] is not None for k in without)
    assert masks["test_image_level_only"] > 0 and masks["validation_image_level_only"] > 0
    assert report["techniques"]["iou_curve"]["failure"] is None  # masked validation defects remain
    json.dumps(report)
