"""Label changes go through here so every change lands in the append-only history."""
from django.db import transaction

from annotator.models import Image, Label, LabelHistory, User


def _snapshot(label: Label | None) -> dict | None:
    if label is None:
        return None
    return {"background": label.background, "category": label.category}


@transaction.atomic
def save_label(
    *,
    image: Image,
    annotator: User,
    background: bool,
    category: str,
    changed_by: User | None = None,
    source: str = "workspace",
) -> Label:
    """Create or change ``annotator``'s label of ``image``; a no-op change writes no history."""
    if category not in Label.Category.values:
        raise ValueError(f"Unknown defect category {category!r}; expected one of {Label.Category.values}.")
    label = Label.objects.select_for_update().filter(image=image, annotator=annotator).first()
    before = _snapshot(label)
    if label is None:
        label = Label(image=image, annotator=annotator)
    label.background = bool(background)
    label.category = category
    after = _snapshot(label)
    if before == after:
        return label
    label.save()
    LabelHistory.objects.create(
        image=image,
        annotator=annotator,
        changed_by=changed_by or annotator,
        action=LabelHistory.Action.CREATED if before is None else LabelHistory.Action.UPDATED,
        before=before,
        after=after,
        source=source,
    )
    return label


@transaction.atomic
def delete_label(*, label: Label, changed_by: User, source: str = "workspace") -> None:
    LabelHistory.objects.create(
        image=label.image,
        annotator=label.annotator,
        changed_by=changed_by,
        action=LabelHistory.Action.DELETED,
        before=_snapshot(label),
        after=None,
        source=source,
    )
    label.delete()
