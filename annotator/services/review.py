"""Reviewers settle disagreements: they see every label of an image and set the final one."""
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import transaction

from annotator.models import Image, Label, LabelHistory, ReviewDecision, User


@dataclass
class ReviewItem:
    image: Image
    labels: list[Label] = field(default_factory=list)
    decision: ReviewDecision | None = None
    reference: Image | None = None

    @property
    def disagrees(self) -> bool:
        return len({(label.background, label.category) for label in self.labels}) > 1


def reference_for(image: Image) -> Image | None:
    """The defect-free image shown beside ``image``: its nearest one when computed, else the first."""
    from annotator.services.references import nearest_reference

    return nearest_reference(image)


def review_items(*, dataset=None, include_decided: bool = False) -> list[ReviewItem]:
    """Images whose annotators disagree (on background or category), with each label and who gave it.

    Decided images are left out unless ``include_decided``.
    """
    labels = Label.objects.select_related("annotator", "image__product__dataset").order_by(
        "image__product__name", "image__path", "annotator__username"
    )
    if dataset is not None:
        labels = labels.filter(image__product__dataset=dataset)
    by_image: dict[int, ReviewItem] = {}
    for label in labels:
        item = by_image.setdefault(label.image_id, ReviewItem(image=label.image))
        item.labels.append(label)
    decisions = ReviewDecision.objects.filter(image_id__in=list(by_image)).select_related("reviewer")
    for decision in decisions:
        by_image[decision.image_id].decision = decision
    return [
        item
        for item in by_image.values()
        if item.disagrees and (include_decided or item.decision is None)
    ]


def _snapshot(decision: ReviewDecision | None) -> dict | None:
    if decision is None:
        return None
    return {"background": decision.background, "category": decision.category}


@transaction.atomic
def decide(*, image: Image, reviewer: User, background: bool, category: str, note: str = "") -> ReviewDecision:
    """Set (or change) the final label of ``image``; recorded in the label history (source "review")."""
    if not reviewer.is_reviewer_role:
        raise PermissionError("Only reviewers and admins decide final labels.")
    if category not in Label.Category.values:
        raise ValueError(f"Unknown defect category {category!r}; expected one of {Label.Category.values}.")
    decision = ReviewDecision.objects.select_for_update().filter(image=image).first()
    before = _snapshot(decision)
    if decision is None:
        decision = ReviewDecision(image=image)
    decision.reviewer = reviewer
    decision.background = bool(background)
    decision.category = category
    decision.note = note
    after = _snapshot(decision)
    decision.save()
    if before != after:
        LabelHistory.objects.create(
            image=image,
            annotator=reviewer,
            changed_by=reviewer,
            action=LabelHistory.Action.CREATED if before is None else LabelHistory.Action.UPDATED,
            before=before,
            after=after,
            source="review",
        )
    return decision


def counts_by_dataset() -> dict[int, int]:
    """Number of undecided disagreements per dataset id (for navigation badges)."""
    result: dict[int, int] = defaultdict(int)
    for item in review_items():
        result[item.image.product.dataset_id] += 1
    return dict(result)
