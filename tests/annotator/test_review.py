"""Reviewers see disagreements with every label and set the final label (recorded in history)."""
import pytest

from annotator.models import Image, LabelHistory, ReviewDecision
from annotator.services import review
from annotator.services.labels import effective_labels, save_label
from tests.api.labelling_factory import make_dataset


@pytest.fixture
def disputed(db, tmp_path, settings, make_user):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = make_dataset(tmp_path, overlap=2, products=(("widget", "object", 3),), good_train=1)
    first, agreed, single = Image.objects.filter(is_anomalous=True).order_by("pk")
    a, b = make_user("alice"), make_user("bob")
    save_label(image=first, annotator=a, background=True, category="surface")
    save_label(image=first, annotator=b, background=True, category="contamination")
    save_label(image=agreed, annotator=a, background=False, category="structural")
    save_label(image=agreed, annotator=b, background=False, category="structural")
    save_label(image=single, annotator=a, background=True, category="combined")
    return dataset, first, agreed, single


def test_disagreements_listed_with_each_label(disputed):
    dataset, first, agreed, single = disputed
    items = review.review_items(dataset=dataset)
    assert [item.image.pk for item in items] == [first.pk]
    assert [(l.annotator.username, l.category) for l in items[0].labels] == [
        ("alice", "surface"), ("bob", "contamination")]


def test_decision_is_final_and_in_history(disputed, reviewer_account, annotator_account):
    dataset, first, agreed, single = disputed
    assert first.pk not in effective_labels([first.pk])
    review.decide(image=first, reviewer=reviewer_account, background=True, category="combined", note="both")
    assert effective_labels([first.pk, agreed.pk, single.pk]) == {
        first.pk: (True, "combined", "review"),
        agreed.pk: (False, "structural", "unanimous"),
        single.pk: (True, "combined", "single"),
    }
    assert review.review_items(dataset=dataset) == []
    assert len(review.review_items(dataset=dataset, include_decided=True)) == 1
    review.decide(image=first, reviewer=reviewer_account, background=False, category="combined")
    entries = list(LabelHistory.objects.filter(image=first, source="review").order_by("id"))
    assert [(e.action, e.before, e.after) for e in entries] == [
        ("created", None, {"background": True, "category": "combined"}),
        ("updated", {"background": True, "category": "combined"}, {"background": False, "category": "combined"}),
    ]
    assert ReviewDecision.objects.get(image=first).reviewer == reviewer_account
    with pytest.raises(PermissionError):
        review.decide(image=first, reviewer=annotator_account, background=True, category="surface")
    with pytest.raises(ValueError):
        review.decide(image=first, reviewer=reviewer_account, background=True, category="bogus")


def test_final_category_counts_match_the_effective_labels(db, tmp_path, settings, make_user, reviewer_account):
    import random

    from annotator.models import Image
    from annotator.services.labels import effective_labels, save_label
    from tests.api.labelling_factory import make_dataset

    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = make_dataset(tmp_path, overlap=2, products=(("widget", "object", 10),), good_train=1)
    a, b = make_user("a1"), make_user("b1")
    rng = random.Random(3)
    images = list(Image.objects.filter(is_anomalous=True).order_by("pk"))
    for image in images:
        for user in (a, b) if rng.random() < 0.7 else (a,):
            save_label(image=image, annotator=user, background=True, category=rng.choice(["surface", "combined"]))
    review.decide(image=images[0], reviewer=reviewer_account, background=False, category="structural")
    expected: dict[str, int] = {}
    for label in effective_labels([i.pk for i in images]).values():
        expected[label.category] = expected.get(label.category, 0) + 1
    assert review.final_category_counts(dataset) == expected
    assert review.disagreements(dataset=dataset).count() == len(
        [i for i in images if len({(l.background, l.category) for l in i.labels.all()}) > 1 and i.pk != images[0].pk]
    )
