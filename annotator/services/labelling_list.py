"""The labelling list of a product (Label Studio's data-manager idea): every anomalous test image
with my label, how many labels it has and whether its annotators disagree, filtered.

Filters (``FILTERS``, one source for the page's links and the checks): ``mine`` (images I
labelled), ``unlabelled`` (images I have not), ``disagreement`` (its annotators disagree and no
reviewer has decided; reviewers and admins only), ``all``; ``category`` narrows to my label's
category (or, for reviewers, any label's). Annotators see only their own labels, never who else
said what, nor whether the others' labels differ from theirs.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from annotator.models import LABELLABLE, Image, Label, Product, ReviewDecision, User

FILTERS = {
    "all": "All",
    "mine": "My labels",
    "unlabelled": "Not labelled by me",
    "disagreement": "Disagreement",
}


@dataclass
class ListRow:
    image: Image
    mine: Label | None = None
    labels: list[Label] = field(default_factory=list)
    decided: bool = False

    @property
    def n_labels(self) -> int:
        return len(self.labels)

    @property
    def disagrees(self) -> bool:
        return len({(label.background, label.category) for label in self.labels}) > 1

    @property
    def open_disagreement(self) -> bool:
        return self.disagrees and not self.decided


# Whether annotators disagree (or a reviewer settled it) is for reviewers only: shown to an
# annotator, it tells them another label differs from theirs, which breaks blind double labelling.
REVIEWER_ONLY_FILTERS = {"disagreement"}


def filters_for(user: User) -> dict[str, str]:
    """The filters ``user`` may use (``FILTERS`` less the reviewers' own for annotators)."""
    return {key: name for key, name in FILTERS.items()
            if user.is_reviewer_role or key not in REVIEWER_ONLY_FILTERS}


def clean_filter(value: str | None, user: User) -> str:
    return value if value in filters_for(user) else "all"


def labelling_rows(product: Product, user: User, which: str = "all", category: str | None = None) -> list[ListRow]:
    images = (Image.objects.filter(LABELLABLE, product=product)
              .select_related("product__dataset"))
    by_image: dict[int, list[Label]] = defaultdict(list)
    for label in Label.objects.filter(image__product=product).select_related("annotator"):
        by_image[label.image_id].append(label)
    decided = set(ReviewDecision.objects.filter(image__product=product).values_list("image_id", flat=True))
    rows = []
    for image in images.order_by("path"):
        labels = by_image.get(image.pk, [])
        row = ListRow(image=image, labels=labels, decided=image.pk in decided,
                      mine=next((label for label in labels if label.annotator_id == user.pk), None))
        if which == "mine" and row.mine is None:
            continue
        if which == "unlabelled" and row.mine is not None:
            continue
        if which == "disagreement" and not row.open_disagreement:
            continue
        if category:
            pool = labels if user.is_reviewer_role else ([row.mine] if row.mine else [])
            if not any(label.category == category for label in pool):
                continue
        rows.append(row)
    return rows
