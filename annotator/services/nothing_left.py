"""Why the queue has nothing for a user: the page says so instead of a bare "Nothing left to label".

After ``import_labels`` with overlap 1 every image already has its label, so an annotator's queue
is empty from the start; the page says that, how many images and what overlap, and who can raise
the overlap (admins, on the dataset's settings).
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Q
from django.utils import timezone

from annotator.models import NEEDS_MASK, Claim, Dataset, Image, Label, Product, User
from annotator.services.queue import claim_timeout, labellable_images


@dataclass(frozen=True)
class NothingLeft:
    images: int      # anomalous test images in scope
    complete: int    # of those, with all the labels the overlap asks for
    mine: int        # of those, labelled by the user
    held: int        # short of labels, but held by others' fresh claims
    overlap: int
    needs_mask: int = 0  # anomalous test images in scope without a mask (not labelled until they get one)

    @property
    def every_image_complete(self) -> bool:
        return self.images > 0 and self.complete == self.images


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def nothing_left(user: User, *, dataset: Dataset, product: Product | None = None) -> NothingLeft:
    images = labellable_images(product=product) if product is not None else labellable_images(dataset=dataset)
    counts = images.aggregate(images=Count("pk"), complete=Count("pk", filter=Q(needs_labels=False)))
    mine = Label.objects.filter(annotator=user, image__in=images).count()
    held = (Claim.objects.filter(image__in=images.filter(needs_labels=True), claimed_at__gte=timezone.now() - claim_timeout())
            .exclude(annotator=user).count())
    scope = Image.objects.filter(product=product) if product is not None else Image.objects.filter(product__dataset=dataset)
    needs_mask = scope.filter(NEEDS_MASK, split=Image.Split.TEST).count()
    return NothingLeft(counts["images"], counts["complete"], mine, held, dataset.label_overlap, needs_mask)


def reasons(state: NothingLeft) -> list[str]:
    """The sentences the page shows, most telling first."""
    waiting = ([f"{_plural(state.needs_mask, 'anomalous image')} without a mask "
                f"{'is' if state.needs_mask == 1 else 'are'} not labelled until a mask is drawn (a category "
                "is read off the defect's outline)."] if state.needs_mask else [])
    if state.images == 0:
        return waiting or ["There are no anomalous test images here: only those are labelled."]
    per_image = _plural(state.overlap, "label")
    if state.every_image_complete:
        said = [f"Every one of the {_plural(state.images, 'image')} already has the {per_image} "
                f"the overlap asks for (overlap {state.overlap})"
                + (f"; {state.mine} of them are yours." if state.mine else ", all given by others or imported.")]
    else:
        said = []
        if state.mine:
            said.append(f"You have labelled {state.mine} of the {_plural(state.images, 'image')}; "
                        f"the others already have their {per_image} (overlap {state.overlap})"
                        + (" or are being labelled by someone else." if state.held else "."))
        if state.held:
            said.append(f"{_plural(state.held, 'image')} short of labels "
                        f"{'is' if state.held == 1 else 'are'} being labelled by someone else right now; "
                        "one that is not submitted comes back to the queue after a while.")
    said += waiting
    said.append("More labels per image need a higher overlap (annotators per image), which an admin "
                "sets on the dataset's settings.")
    return said
