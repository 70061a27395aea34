"""Label uncertainty in the breakdowns: the vote-weighted numbers against hand-computed ones."""
import numpy as np
import pytest

from inference.engine.evaluation import PixelCounts
from inference.engine.runner import _breakdowns
from inference.engine.types import Sample


def _case():
    """Tiny 8x8 maps (1 = predicted anomalous at threshold 0.5) with known TP / FP / FN.

    s0..s2  structural, undisputed          TP 6  FP 0  FN 3 each (IoU 2/3)
    d0      final surface (a reviewer); one annotator surface, one structural; background split
                                            TP 0  FP 4  FN 9
    u0      unsettled: structural / contamination, both with background (no final label)
                                            TP 9  FP 9  FN 0
    c0      contamination, undisputed       TP 9  FP 0  FN 0
    g0, g1  defect-free, nothing predicted
    """
    n = 8
    masks = np.zeros((n, 8, 8), bool)
    maps = np.zeros((n, 8, 8), np.float32)
    masks[2:, 0:3, 0:3] = True
    maps[2:5, 0:2, 0:3] = 1.0  # s0..s2: two of the mask's three rows
    maps[5, 6:8, 6:8] = 1.0  # d0: four pixels beside its defect
    maps[6, 0:3, 0:3] = maps[6, 5:8, 5:8] = 1.0  # u0: its defect and nine more
    maps[7, 0:3, 0:3] = 1.0  # c0: exactly its defect

    def sample(key, defect_type, category=None, background=None, **shares):
        return Sample(key, None if defect_type == "good" else key + "_mask", defect_type,
                      category=category, background=background, key=key, **shares)

    test = [sample("g0", "good"), sample("g1", "good"),
            *[sample(f"s{k}", "broken", "structural", True) for k in range(3)],
            sample("d0", "scratch", "surface", True, category_shares={"surface": 0.5, "structural": 0.5},
                   background_shares={True: 0.5, False: 0.5}),
            sample("u0", "broken", None, None, category_shares={"structural": 0.5, "contamination": 0.5},
                   background_shares={True: 1.0}),
            sample("c0", "dirt", "contamination", True)]
    labels = np.array([s.is_anomalous for s in test])
    ti = list(range(n))  # every image in the test part
    counts = {"f1": PixelCounts.at(maps, masks, 0.5)}
    assert counts["f1"].tp.tolist() == [0, 0, 6, 6, 6, 0, 9, 9]
    assert counts["f1"].fp.tolist() == [0, 0, 0, 0, 0, 4, 9, 0]
    return test, [], ti, maps, masks, labels, counts


@pytest.fixture(scope="module")
def breakdowns():
    return _breakdowns(*_case(), technique="f1", seed=0)


def test_weighted_iou_counts_each_image_by_its_annotators_share(breakdowns):
    structural = breakdowns.by_category["structural"]
    # final label: s0..s2 only, 18 / (18 + 0 + 9)
    assert structural.segmentation["f1"].iou == pytest.approx(2 / 3)
    lu = structural.label_uncertainty
    # votes: s0..s2 weigh 1, d0 and u0 0.5: TP 18 + 0 + 4.5, FP 0 + 2 + 4.5, FN 9 + 4.5 + 0
    assert lu.weighted["f1"].iou == pytest.approx(22.5 / (22.5 + 6.5 + 13.5))  # 9/17 = 0.529
    assert lu.weighted["f1"].recall == pytest.approx(22.5 / 36)
    assert lu.weight_total == 4.0 and lu.n_disputed == 2
    # every final-label member has the same counts: each resample's IoU is 2/3
    assert (lu.final_iou.value, lu.final_iou.low, lu.final_iou.high) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert lu.technique == "f1" and lu.depends_on_disputed_labels

    contamination = breakdowns.by_category["contamination"].label_uncertainty
    # c0 weighs 1, u0 0.5: TP 9 + 4.5, FP 0 + 4.5, FN 0
    assert contamination.weighted["f1"].iou == pytest.approx(13.5 / 18)
    assert breakdowns.by_category["contamination"].segmentation["f1"].iou == 1.0
    assert contamination.depends_on_disputed_labels  # 0.75 outside [1, 1]

    surface = breakdowns.by_category["surface"].label_uncertainty
    # d0 alone, at half weight: still IoU 0, inside the final-label interval [0, 0]
    assert surface.weighted["f1"].iou == 0.0 and surface.weight_total == 0.5 and surface.n_disputed == 1
    assert not surface.depends_on_disputed_labels


def test_background_weights_use_agreed_backgrounds_of_images_disputed_on_category(breakdowns):
    with_background = breakdowns.by_background["True"]
    # final: s0..s2, d0, c0 (u0 has no final label): TP 27, FP 4, FN 18
    assert with_background.segmentation["f1"].iou == pytest.approx(27 / 49)
    # votes: d0 weighs 0.5, u0 1 (both its annotators said "with background"): TP 36, FP 11, FN 13.5
    assert with_background.label_uncertainty.weighted["f1"].iou == pytest.approx(36 / 60.5)
    # "without background": no final-label image, d0 by one annotator's vote only
    without = breakdowns.by_background["False"]
    assert without.n_anomalous_test == 0 and without.segmentation == {}
    assert without.note == "no image has this as its final label; only some annotators' votes put images here"
    assert without.label_uncertainty.weighted["f1"].iou == 0.0
    assert without.label_uncertainty.depends_on_disputed_labels


def test_no_disputed_image_no_label_uncertainty():
    test, vi, ti, maps, masks, labels, counts = _case()
    agreed = [Sample(s.image_path, s.mask_path, s.defect_type, s.category or "structural",
                     True if s.is_anomalous else None, s.key) for s in test]
    b = _breakdowns(agreed, vi, ti, maps, masks, labels, counts, technique="f1", seed=0)
    assert all(sub.label_uncertainty is None for sub in [*b.by_category.values(), *b.by_background.values()])
    assert set(b.by_category) == {"structural", "surface", "contamination"} and set(b.by_background) == {"True"}
    assert all(sub.label_uncertainty is None for sub in _breakdowns(*_case(), technique="f1").by_defect_type.values())
