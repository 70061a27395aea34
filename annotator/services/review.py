"""Reviewers settle disagreements: they see every label of an image and set the final one."""
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count

from annotator.paths import is_drawn_mask
from annotator.models import Image, Label, LabelHistory, MaskRevision, ReviewDecision, User


@dataclass
class ReviewItem:
    image: Image
    labels: list[Label] = field(default_factory=list)
    decision: ReviewDecision | None = None
    reference: Image | None = None
    # The image's current mask when it was made in the mask editor (origin: proposed, edited, drawn).
    mask: MaskRevision | None = None
    # Its entries in the defect book (annotator.services.defect_book).
    pins: list = field(default_factory=list)

    @property
    def disagrees(self) -> bool:
        return len({(label.background, label.category) for label in self.labels}) > 1


def reference_for(image: Image) -> Image | None:
    """The defect-free image shown beside ``image``: its nearest one when computed, else the first."""
    from annotator.services.references import nearest_reference

    return nearest_reference(image)


def disagreements(*, dataset=None, include_decided: bool = False):
    """Images whose annotators disagree (on background or category), in review order, as a queryset.

    Decided images are left out unless ``include_decided``. It reads the ``disagrees`` flag kept
    on each image (partial index), so a page costs the same with 100 or 100 000 labels.
    """
    images = Image.objects.filter(disagrees=True, split=Image.Split.TEST, is_anomalous=True)
    if dataset is not None:
        images = images.filter(product__dataset=dataset)
    if not include_decided:
        images = images.filter(review_decision__isnull=True)
    return images.select_related("product__dataset").order_by("product__dataset__name", "product__name", "path")


def items_for(images) -> list[ReviewItem]:
    """One ReviewItem per image (a page of ``disagreements``), with each label and who gave it."""
    by_image = {image.pk: ReviewItem(image=image) for image in images}
    labels = Label.objects.filter(image_id__in=list(by_image)).select_related("annotator").order_by(
        "annotator__username"
    )
    for label in labels:
        by_image[label.image_id].labels.append(label)
    for decision in ReviewDecision.objects.filter(image_id__in=list(by_image)).select_related("reviewer"):
        by_image[decision.image_id].decision = decision
    drawn = [pk for pk, item in by_image.items() if is_drawn_mask(item.image.mask_path)]
    for revision in MaskRevision.objects.filter(image_id__in=drawn).select_related("created_by").order_by("image", "-number"):
        if by_image[revision.image_id].mask is None:  # the newest is the current mask
            by_image[revision.image_id].mask = revision
    from annotator.services.defect_book import pins_by_image

    for image_id, pins in pins_by_image(by_image).items():
        by_image[image_id].pins = pins
    return list(by_image.values())


def review_items(*, dataset=None, include_decided: bool = False) -> list[ReviewItem]:
    """Every disagreement as a ReviewItem (small datasets and tests; pages use ``disagreements``)."""
    return items_for(disagreements(dataset=dataset, include_decided=include_decided))


def _snapshot(decision: ReviewDecision | None) -> dict | None:
    if decision is None:
        return None
    return {"background": decision.background, "category": decision.category}


class NotReviewable(ValueError):
    """Only anomalous test images carry labels, so only they get a final label."""


@transaction.atomic
def decide(*, image: Image, reviewer: User, background: bool, category: str, note: str = "") -> ReviewDecision:
    """Set (or change) the final label of ``image``; recorded in the label history (source "review")."""
    if not reviewer.is_reviewer_role:
        raise PermissionError("Only reviewers and admins decide final labels.")
    if category not in Label.Category.values:
        raise ValueError(f"Unknown defect category {category!r}; expected one of {Label.Category.values}.")
    if not image.is_labellable:
        raise NotReviewable(f"{image.path} is not an anomalous test image with a mask; only those get a final label"
                            + (" (it needs a mask first)." if image.needs_mask else "."))
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
    if before is None:  # a decided image counts as done in the product's progress
        from annotator.services.queue import product_completion_changed

        product_completion_changed(image.product_id)
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


def final_category_counts(dataset) -> dict[str, int]:
    """Images per final category (as ``labels.resolve_label`` decides), counted in SQL: a reviewer's
    decision, else the category of images whose annotators all agree (``disagrees`` is false)."""
    counts: dict[str, int] = defaultdict(int)
    decided = ReviewDecision.objects.filter(image__product__dataset=dataset).order_by()
    for category, n in decided.values_list("category").annotate(n=Count("pk")):
        counts[category] += n
    agreed = Label.objects.filter(
        image__product__dataset=dataset, image__disagrees=False, image__review_decision__isnull=True
    ).order_by()
    for category, n in agreed.values_list("category").annotate(n=Count("image_id", distinct=True)):
        counts[category] += n
    return dict(counts)


def counts_by_dataset() -> dict[int, int]:
    """Number of undecided disagreements per dataset id (for navigation badges), counted in SQL."""
    return dict(
        disagreements().order_by().values_list("product__dataset").annotate(n=Count("pk"))
    )
