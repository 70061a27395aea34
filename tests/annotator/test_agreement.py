"""Agreement statistics against values computed by hand."""
from datetime import timedelta

import pytest
from django.utils import timezone

from annotator.models import Image, LabelHistory
from annotator.services import agreement
from annotator.services.labels import save_label
from tests.api.labelling_factory import make_dataset

S, X, C, M = "structural", "surface", "contamination", "combined"


def test_fleiss_kappa_by_hand():
    # 3 raters, 4 items. P_i = 1, 1/3, 1/3, 0 -> P_bar = 5/12.
    # Totals S 6, C 4, X 2 of 12 -> P_e = (36 + 16 + 4) / 144 = 7/18.
    # kappa = (5/12 - 7/18) / (1 - 7/18) = (1/36) / (22/36) = 1/22.
    items = [[S, S, S], [S, S, C], [C, C, X], [S, C, X]]
    assert agreement.fleiss_kappa(items) == pytest.approx(1 / 22)


def test_fleiss_kappa_perfect_and_undefined():
    assert agreement.fleiss_kappa([[S, S], [C, C]]) == pytest.approx(1.0)
    assert agreement.fleiss_kappa([[S, S], [S, S]]) is None  # chance agreement 1
    assert agreement.fleiss_kappa([[S]]) is None  # nothing pairable


def test_krippendorff_alpha_by_hand():
    # Coincidences: o_aa = 2, o_bb = 2, o_ab = o_ba = 1; n_a = n_b = 3, n = 6.
    # D_o = 2, D_e = (3*3 + 3*3) / 5 = 3.6 -> alpha = 1 - 2 / 3.6 = 4/9.
    assert agreement.krippendorff_alpha_nominal([["a", "a"], ["b", "b"], ["a", "b"]]) == pytest.approx(4 / 9)


@pytest.fixture
def rated(db, tmp_path, settings, make_user):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = make_dataset(tmp_path, overlap=2, products=(("widget", "object", 6),), good_train=1)
    images = list(Image.objects.filter(is_anomalous=True).order_by("pk"))
    a, b = make_user("alice"), make_user("bob")
    a_labels = [(True, S), (True, S), (True, S), (True, C), (False, C), (False, X)]
    b_labels = [(True, S), (True, S), (True, C), (False, C), (False, C), (False, X)]
    for image, (bg_a, cat_a), (bg_b, cat_b) in zip(images, a_labels, b_labels):
        save_label(image=image, annotator=a, background=bg_a, category=cat_a)
        save_label(image=image, annotator=b, background=bg_b, category=cat_b)
    return dataset


def test_cohen_kappa_and_confusion_matrices_by_hand(rated):
    result = agreement.dataset_agreement(rated)
    assert result["annotators"] == ["alice", "bob"]
    fields = result["fields"]

    # Category: p_o = 5/6; marginals alice S3 C2 X1, bob S2 C3 X1 -> p_e = 13/36; kappa = 17/23.
    category = fields["category"]["pairs"][0]
    assert category["annotators"] == ["alice", "bob"] and category["n"] == 6
    assert category["observed_agreement"] == pytest.approx(5 / 6)
    assert category["cohen_kappa"] == pytest.approx(17 / 23)
    assert category["confusion_matrix"] == {
        "values": [S, X, C, M],
        "matrix": [[2, 0, 1, 0], [0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]],
    }

    # Background: p_o = 5/6; alice yes4 no2, bob yes3 no3 -> p_e = 1/2; kappa = 2/3.
    background = fields["background"]["pairs"][0]
    assert background["cohen_kappa"] == pytest.approx(2 / 3)
    assert background["confusion_matrix"]["matrix"] == [[3, 1], [0, 2]]

    # Both fields jointly: p_o = 4/6; p_e = (3*2 + 1*1 + 1*2 + 1*1) / 36 = 10/36; kappa = 7/13.
    overall = fields["overall"]["pairs"][0]
    assert overall["cohen_kappa"] == pytest.approx(7 / 13)
    assert overall["observed_agreement"] == pytest.approx(4 / 6)

    # With two raters per item Fleiss' kappa uses pooled marginals (Scott's pi):
    # category: P_bar = 5/6; pooled S5 C5 X2 of 12 -> P_e = (25+25+4)/144 = 3/8; kappa = (5/6-3/8)/(5/8) = 11/15.
    assert fields["category"]["fleiss_kappa"] == pytest.approx(11 / 15)


def test_per_annotator_counts_and_speed(rated):
    alice_rows = LabelHistory.objects.filter(annotator__username="alice").order_by("id")
    start = timezone.now()
    for index, (row, offset) in enumerate(zip(alice_rows, [0, 10, 30, 40, 100, 110])):
        LabelHistory.objects.filter(pk=row.pk).update(changed_at=start + timedelta(seconds=offset))
    stats = {row["annotator"]: row for row in agreement.dataset_agreement(rated)["per_annotator"]}
    alice = stats["alice"]
    assert alice["labels"] == 6
    assert alice["categories"] == {S: 3, C: 2, X: 1}
    assert alice["background_yes"] == 4
    # Gaps 10, 20, 10, 60, 10 -> median 10 s.
    assert alice["median_seconds"] == pytest.approx(10)


def test_sql_statistics_match_the_reference_formulas(db, tmp_path, settings, make_user):
    """Three annotators, two or three labels per image: the SQL path gives the textbook values."""
    import random

    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = make_dataset(tmp_path, overlap=3, products=(("widget", "object", 12),), good_train=1)
    images = list(Image.objects.filter(is_anomalous=True).order_by("pk"))
    users = [make_user(name) for name in ("carol", "alice", "bob")]
    rng = random.Random(7)
    given = {}
    for index, image in enumerate(images):
        for user in users[: 2 + index % 2]:
            value = (rng.random() < 0.6, rng.choice([S, X, C, M]))
            save_label(image=image, annotator=user, background=value[0], category=value[1])
            given.setdefault(image.pk, {})[user.username] = value
    result = agreement.dataset_agreement(dataset)
    assert result["annotators"] == ["alice", "bob", "carol"]
    assert result["images"] == 12 and result["images_with_several_labels"] == 12
    for field in agreement.FIELDS:
        items = [[agreement.field_value(field, *v) for v in r.values()] for r in given.values()]
        stats = result["fields"][field]
        assert stats["fleiss_kappa"] == pytest.approx(agreement.fleiss_kappa(items))
        assert stats["krippendorff_alpha"] == pytest.approx(agreement.krippendorff_alpha_nominal(items))
        for pair in stats["pairs"]:
            first, second = pair["annotators"]
            common = sorted(pk for pk, r in given.items() if first in r and second in r)
            a = [agreement.field_value(field, *given[pk][first]) for pk in common]
            b = [agreement.field_value(field, *given[pk][second]) for pk in common]
            assert pair["n"] == len(common)
            expected = agreement.cohen_kappa(a, b, agreement.field_values(field))
            assert pair["cohen_kappa"] == (pytest.approx(expected) if expected is not None else None)
