"""save_label / delete_label keep the append-only history; effective_labels honours reviews."""
import pytest

from annotator.models import Image, LabelHistory
from annotator.services import review
from annotator.services.labels import delete_label, effective_labels, save_label
from tests.api.labelling_factory import make_dataset


@pytest.fixture
def image(db, tmp_path, settings):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    make_dataset(tmp_path, products=(("widget", "object", 1),), good_train=1)
    return Image.objects.get(is_anomalous=True)


def test_history_of_changes(image, annotator_account):
    label = save_label(image=image, annotator=annotator_account, background=True, category="surface")
    save_label(image=image, annotator=annotator_account, background=True, category="surface")  # no-op
    save_label(image=image, annotator=annotator_account, background=False, category="surface")
    delete_label(label=image.labels.get(), changed_by=annotator_account)
    rows = list(LabelHistory.objects.filter(image=image).values_list("action", "before", "after"))
    assert rows == [
        ("created", None, {"background": True, "category": "surface"}),
        ("updated", {"background": True, "category": "surface"}, {"background": False, "category": "surface"}),
        ("deleted", {"background": False, "category": "surface"}, None),
    ]
    assert label.pk is not None
    with pytest.raises(ValueError):
        save_label(image=image, annotator=annotator_account, background=True, category="nonsense")


def test_effective_label_review_overrides_annotators(image, make_user, reviewer_account):
    a, b = make_user("a"), make_user("b")
    save_label(image=image, annotator=a, background=True, category="surface")
    assert effective_labels([image.pk])[image.pk] == (True, "surface", "single")
    save_label(image=image, annotator=b, background=True, category="surface")
    assert effective_labels([image.pk])[image.pk].source == "unanimous"
    save_label(image=image, annotator=b, background=True, category="structural")
    assert effective_labels([image.pk]) == {}
    review.decide(image=image, reviewer=reviewer_account, background=False, category="structural")
    assert effective_labels([image.pk])[image.pk] == (False, "structural", "review")


def test_resolve_label_rule():
    from annotator.services.labels import EffectiveLabel, resolve_label

    assert resolve_label([(True, "surface")]) == EffectiveLabel(True, "surface", "single")
    assert resolve_label([(True, "surface")] * 2) == EffectiveLabel(True, "surface", "unanimous")
    assert resolve_label([(True, "surface"), (True, "structural")]) is None
    assert resolve_label([(True, "surface"), (True, "structural")], (False, "combined")) == EffectiveLabel(
        False, "combined", "review"
    )
    assert resolve_label([], (True, "structural")) == EffectiveLabel(True, "structural", "review")
    assert resolve_label([]) is None
