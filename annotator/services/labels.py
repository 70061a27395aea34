"""Label changes go through here so every change lands in the append-only history."""
from collections import Counter, defaultdict
from typing import NamedTuple

from django.db import connection, transaction

from annotator.models import Image, Label, LabelHistory, ReviewDecision, User


def recount_labels(image: Image) -> tuple[bool, bool, list[int]]:
    """Refresh the image's label count, "still needs labels" and "annotators disagree" flags
    (the queue and the review list read them through partial indexes).

    Returns (needed labels before, needs labels now, ids of its annotators).
    """
    row = Image.objects.filter(pk=image.pk).values_list("needs_labels", "product__dataset__label_overlap").first()
    if row is None:
        return False, False, []
    before, overlap = row
    # Unordered: Label's default ordering (by image) would join image, product and dataset.
    labels = list(Label.objects.filter(image_id=image.pk).order_by().values_list("annotator_id", "background", "category"))
    annotators = [annotator for annotator, *_ in labels]
    n = len(annotators)
    disagrees = len({tuple(value) for _, *value in labels}) > 1
    Image.objects.filter(pk=image.pk).update(label_count=n, needs_labels=n < overlap, disagrees=disagrees)
    if before != (n < overlap):
        from annotator.services.queue import images_short_of_labels_changed

        images_short_of_labels_changed(image.product_id, +1 if n < overlap else -1)
    return before, n < overlap, annotators


_UPSERT_PROGRESS = (
    "INSERT INTO annotator_annotatorprogress (annotator_id, product_id, done, waiting) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (annotator_id, product_id) DO UPDATE SET "
    "done = annotator_annotatorprogress.done + excluded.done, "
    "waiting = annotator_annotatorprogress.waiting + excluded.waiting"
)


def _bump_progress(product_id: int, deltas: dict[int, list[int]]) -> None:
    """Add (done, waiting) deltas per annotator, in annotator-id order (no deadlock between two
    transactions that touch the same rows)."""
    with connection.cursor() as cursor:
        for annotator_id in sorted(deltas):
            done, waiting = deltas[annotator_id]
            if done or waiting:
                cursor.execute(_UPSERT_PROGRESS, [annotator_id, product_id, done, waiting])


def _snapshot(label: Label | None) -> dict | None:
    if label is None:
        return None
    return {"background": label.background, "category": label.category}


# No savepoint: a failure here fails the caller's transaction as a whole (the queue's, which holds
# the image's row lock), and the hot path saves two round trips.
@transaction.atomic(savepoint=False)
def save_label(
    *,
    image: Image,
    annotator: User,
    background: bool,
    category: str,
    changed_by: User | None = None,
    source: str = "workspace",
    background_carried: bool = False,
    suggested_category: str = "",
) -> Label:
    """Create or change ``annotator``'s label of ``image``; a no-op change writes no history.

    ``background_carried``: the background was pre-selected from the annotator's previous label of
    the product and submitted unchanged (see ``Label.background_carried``).
    ``suggested_category``: the category the workspace suggested for this new label ("" for none);
    recorded with whether it was taken when the label is created, and only then (a correction
    later does not re-decide it).
    """
    if category not in Label.Category.values:
        raise ValueError(f"Unknown defect category {category!r}; expected one of {Label.Category.values}.")
    if suggested_category and suggested_category not in Label.Category.values:
        raise ValueError(f"Unknown suggested category {suggested_category!r}; expected one of {Label.Category.values}.")
    label = Label.objects.select_for_update().filter(image=image, annotator=annotator).order_by().first()
    before = _snapshot(label)
    if label is None:
        label = Label(image=image, annotator=annotator)
    label.background = bool(background)
    label.category = category
    after = _snapshot(label)
    if before == after:
        return label
    if before is None or before["background"] != after["background"]:
        # Kept from the first label otherwise: a category correction does not re-decide the background.
        label.background_carried = bool(background_carried)
    suggested = ""
    if before is None:
        suggested = suggested_category
        label.suggested_category = suggested
        label.suggestion_taken = bool(suggested) and suggested == category
    label.save()
    needed, needs, annotators = recount_labels(image)
    if before is None:
        deltas = {annotator.pk: [1, 1 if needs else 0]}
        if needed and not needs:  # this label completed the image: the others no longer wait
            for other in annotators:
                if other != annotator.pk:
                    deltas.setdefault(other, [0, 0])[1] -= 1
        _bump_progress(image.product_id, deltas)
    LabelHistory.objects.create(
        image=image,
        annotator=annotator,
        changed_by=changed_by or annotator,
        action=LabelHistory.Action.CREATED if before is None else LabelHistory.Action.UPDATED,
        before=before,
        after=after,
        source=source,
        suggested_category=suggested,
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
    image = label.image
    annotator_id = label.annotator_id
    label.delete()
    needed, needs, annotators = recount_labels(image)
    deltas = {annotator_id: [-1, -1 if needed else 0]}
    if needs and not needed:  # the image is short of a label again: its other annotators wait
        for other in annotators:
            deltas.setdefault(other, [0, 0])[1] += 1
    _bump_progress(image.product_id, deltas)


class EffectiveLabel(NamedTuple):
    background: bool
    category: str
    source: str  # "single", "unanimous" (several annotators agree) or "review" (a reviewer decided)


def resolve_label(
    values: list[tuple[bool, str]], decision: tuple[bool, str] | None = None
) -> EffectiveLabel | None:
    """The rule for one image: a reviewer's decision wins; otherwise the annotators' label when
    they all agree (one label, or several identical ones); None while they disagree."""
    if decision is not None:
        return EffectiveLabel(decision[0], decision[1], "review")
    if values and len(set(values)) == 1:
        background, category = values[0]
        return EffectiveLabel(background, category, "single" if len(values) == 1 else "unanimous")
    return None


class VoteShares(NamedTuple):
    """Where an image's annotators disagree: the share of them who chose each value."""

    category: dict[str, float]
    background: dict[bool, float]


def vote_shares(values: list[tuple[bool, str]]) -> VoteShares | None:
    """The shares of an image's labels ``(background, category)``, or None where fewer than two
    annotators labelled it or they all agree (then the final label says it all). Both dimensions
    come together, so an image disputed on its category alone keeps its agreed background."""
    if len(values) < 2 or len(set(values)) == 1:
        return None
    n = len(values)
    categories = Counter(category for _, category in values)
    backgrounds = Counter(background for background, _ in values)
    return VoteShares({c: categories[c] / n for c in sorted(categories)},
                      {b: backgrounds[b] / n for b in (True, False) if b in backgrounds})


def vote_shares_of(image_ids) -> dict[int, VoteShares]:
    """``vote_shares`` of every image of ``image_ids`` whose annotators disagree (the benchmark's
    label-uncertainty breakdowns weigh each image by them)."""
    values: dict[int, list[tuple[bool, str]]] = defaultdict(list)
    for image_id, background, category in Label.objects.filter(image_id__in=list(image_ids)).order_by().values_list(
        "image_id", "background", "category"
    ):
        values[image_id].append((background, category))
    shares = {image_id: vote_shares(v) for image_id, v in values.items()}
    return {image_id: s for image_id, s in shares.items() if s is not None}


def effective_labels(image_ids) -> dict[int, EffectiveLabel]:
    """The label each image counts with in exports and benchmarks (see ``resolve_label``).

    Images whose annotators disagree get no entry until a reviewer decides.
    """
    image_ids = list(image_ids)
    values: dict[int, list[tuple[bool, str]]] = defaultdict(list)
    for image_id, background, category in Label.objects.filter(image_id__in=image_ids).values_list(
        "image_id", "background", "category"
    ):
        values[image_id].append((background, category))
    decisions = {
        image_id: (background, category)
        for image_id, background, category in ReviewDecision.objects.filter(
            image_id__in=image_ids
        ).values_list("image_id", "background", "category")
    }
    result = {}
    for image_id in values.keys() | decisions.keys():
        resolved = resolve_label(values.get(image_id, []), decisions.get(image_id))
        if resolved is not None:
            result[image_id] = resolved
    return result


def visible_history(user: User, image: Image | None = None):
    """Label changes newest first; annotators see only the history of their own labels."""
    entries = LabelHistory.objects.select_related("annotator", "changed_by", "image__product__dataset").order_by(
        "-changed_at", "-id"
    )
    if image is not None:
        entries = entries.filter(image=image)
    if not user.is_reviewer_role:
        entries = entries.filter(annotator=user)
    return entries
