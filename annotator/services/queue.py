"""The labelling queue: which anomalous test image an annotator gets next.

Rules
-----
* Only anomalous test images are labelled (``split="test", is_anomalous=True``).
* Each image needs ``Dataset.label_overlap`` distinct annotators. An image is *open* for a user
  when the user has not labelled it and ``labels + fresh claims by others < overlap``.
* Handing out an image creates a :class:`~annotator.models.Claim`; a claim older than
  ``DEFECTBENCH_CLAIM_TIMEOUT_SECONDS`` (default 600) is abandoned and frees the slot.
* A user who already holds a fresh claim gets that image back (reloading the page does not
  claim a second image).
* A skipped image is offered to the same user again only when nothing else is open for them.

Concurrency
-----------
On PostgreSQL each candidate image row is locked with ``SELECT ... FOR UPDATE SKIP LOCKED`` and
the slot count is re-read *after* the lock is held (a fresh statement under READ COMMITTED sees
every committed claim), so two transactions can never both take the last slot of an image; a
transaction that finds the row locked moves on to the next candidate instead of waiting.
SQLite has no row locks: there the transaction's first statement is a write, which takes SQLite's database-wide RESERVED lock, so queue transactions run one at a
time (others wait up to the connection's busy timeout) and the same re-check is exact.
Submitting a label takes the same lock on the image row, so a label can never exceed the overlap.
"""
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from annotator.models import Claim, Image, Label, Product, Skip, User
from annotator.services.labels import save_label

CANDIDATE_BATCH = 50


class QueueError(Exception):
    """The image cannot be labelled by this user (already fully labelled by others, not anomalous)."""


def claim_timeout() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "DEFECTBENCH_CLAIM_TIMEOUT_SECONDS", 600)))


def _fresh_after():
    return timezone.now() - claim_timeout()


def labellable_images(*, dataset=None, product=None):
    images = Image.objects.filter(split=Image.Split.TEST, is_anomalous=True)
    if product is not None:
        images = images.filter(product=product)
    elif dataset is not None:
        images = images.filter(product__dataset=dataset)
    return images


def _start_serialised_transaction() -> None:
    """SQLite: make the first statement a write so the transaction holds the RESERVED lock.

    Abandoned claims are dropped on the way (elsewhere they are simply ignored: only fresh claims
    count, and re-claiming updates the stale row). On PostgreSQL nothing happens here: row locks
    do the work, and concurrent deletes of the same rows could deadlock.
    """
    if connection.vendor == "sqlite":
        # An UPDATE that matches nothing still opens a write transaction (no read before it, so
        # no SHARED-to-RESERVED upgrade that SQLite would refuse as a deadlock).
        Claim.objects.filter(pk=-1).update(claimed_at=timezone.now())
        Claim.objects.filter(claimed_at__lt=_fresh_after()).delete()


def _lock_image(image_id: int, *, skip_locked: bool) -> Image | None:
    queryset = Image.objects.filter(pk=image_id)
    if connection.features.has_select_for_update:
        if skip_locked and connection.features.has_select_for_update_skip_locked:
            queryset = queryset.select_for_update(skip_locked=True)
        else:
            queryset = queryset.select_for_update()
    return queryset.select_related("product__dataset").first()


def _slots_taken(image: Image, user: User) -> int:
    """Labels plus fresh claims by other users (read after the image row is locked)."""
    labels = Label.objects.filter(image=image).count()
    claims = Claim.objects.filter(image=image, claimed_at__gte=_fresh_after()).exclude(annotator=user).count()
    return labels + claims


def _open_for(image: Image, user: User) -> bool:
    if Label.objects.filter(image=image, annotator=user).exists():
        return False
    return _slots_taken(image, user) < image.product.dataset.label_overlap


def _candidates(user: User, *, dataset, product, skipped: bool):
    fresh_after = _fresh_after()
    images = labellable_images(dataset=dataset, product=product).exclude(labels__annotator=user)
    skipped_ids = Skip.objects.filter(annotator=user).values("image_id")
    images = images.filter(pk__in=skipped_ids) if skipped else images.exclude(pk__in=skipped_ids)
    images = images.annotate(
        n_labels=Count("labels", distinct=True),
        n_claims=Count(
            "claims",
            filter=Q(claims__claimed_at__gte=fresh_after) & ~Q(claims__annotator=user),
            distinct=True,
        ),
    ).order_by("product__dataset__name", "product__name", "defect_type", "path")
    for row in images.values("pk", "n_labels", "n_claims", "product__dataset__label_overlap"):
        if row["n_labels"] + row["n_claims"] < row["product__dataset__label_overlap"]:
            yield row["pk"]


def next_image(user: User, *, dataset=None, product=None) -> Image | None:
    """Claim and return the next image ``user`` should label, or None when nothing is left.

    A candidate whose row another transaction has locked is skipped, not waited for; if nothing
    else was free, the attempt is repeated in a fresh transaction (that other transaction may
    leave a slot free, e.g. with an overlap above 1), so None really means nothing is left.
    """
    for attempt in range(100):
        image, saw_locked = _try_next_image(user, dataset=dataset, product=product)
        if image is not None or not saw_locked:
            return image
        time.sleep(min(0.2, 0.01 * (attempt + 1)))
    return None


def _try_next_image(user: User, *, dataset, product) -> tuple[Image | None, bool]:
    saw_locked = False
    with transaction.atomic():
        _start_serialised_transaction()
        mine = (
            Claim.objects.filter(annotator=user, claimed_at__gte=_fresh_after())
            .filter(image__in=labellable_images(dataset=dataset, product=product))
            .exclude(image__labels__annotator=user)
            .order_by("-claimed_at")
            .first()
        )
        if mine is not None:
            mine.claimed_at = timezone.now()
            mine.save(update_fields=["claimed_at"])
            return mine.image, False
        for skipped in (False, True):
            for image_id in _candidates(user, dataset=dataset, product=product, skipped=skipped):
                image = _lock_image(image_id, skip_locked=True)
                if image is None:
                    saw_locked = True
                    continue
                if not _open_for(image, user):
                    continue
                Claim.objects.update_or_create(
                    image=image, annotator=user, defaults={"claimed_at": timezone.now()}
                )
                return image, False
    return None, saw_locked


def skip_image(user: User, image: Image) -> None:
    """Record the skip and release the user's claim so someone else may take the image."""
    with transaction.atomic():
        Skip.objects.update_or_create(image=image, annotator=user, defaults={"skipped_at": timezone.now()})
        Claim.objects.filter(image=image, annotator=user).delete()


def release_claim(user: User, image: Image) -> None:
    Claim.objects.filter(image=image, annotator=user).delete()


def submit_label(*, user: User, image: Image, background: bool, category: str, source: str = "workspace") -> Label:
    """Save ``user``'s label of ``image`` if the overlap allows it; drop the claim and any skip.

    Changing one's own existing label is always allowed. A new label is refused (QueueError) when
    the image already has as many labels and fresh claims by others as the overlap asks for,
    unless ``user`` holds a fresh claim on it.
    """
    if not (image.split == Image.Split.TEST and image.is_anomalous):
        raise QueueError("Only anomalous test images are labelled.")
    with transaction.atomic():
        _start_serialised_transaction()
        locked = _lock_image(image.pk, skip_locked=False)
        if locked is None:
            raise QueueError("The image no longer exists.")
        own_label = Label.objects.filter(image=locked, annotator=user).exists()
        own_claim = Claim.objects.filter(image=locked, annotator=user, claimed_at__gte=_fresh_after()).exists()
        if not own_label and not own_claim and not _open_for(locked, user):
            raise QueueError("This image already has all the labels it needs.")
        if not own_label and own_claim:
            # A fresh claim reserved a slot; labels alone must still fit within the overlap.
            if Label.objects.filter(image=locked).count() >= locked.product.dataset.label_overlap:
                raise QueueError("This image already has all the labels it needs.")
        label = save_label(image=locked, annotator=user, background=background, category=category, source=source)
        Claim.objects.filter(image=locked, annotator=user).delete()
        Skip.objects.filter(image=locked, annotator=user).delete()
        return label


@dataclass
class Progress:
    done: int
    total: int

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100

    def as_dict(self) -> dict:
        return {"done": self.done, "total": self.total, "percent": self.percent}


def product_progress(product: Product) -> Progress:
    """Images of ``product`` with all the labels the overlap asks for (or a review decision)."""
    overlap = product.dataset.label_overlap
    images = labellable_images(product=product).annotate(n=Count("labels"))
    total = images.count()
    done = images.filter(Q(n__gte=overlap) | Q(review_decision__isnull=False)).count()
    return Progress(done, total)


def user_progress(user: User, product: Product) -> Progress:
    """Images ``user`` labelled in ``product`` out of those they labelled plus those still open to them."""
    overlap = product.dataset.label_overlap
    images = labellable_images(product=product)
    done = images.filter(labels__annotator=user).count()
    fresh_after = _fresh_after()
    still_open = (
        images.exclude(labels__annotator=user)
        .annotate(
            n_labels=Count("labels", distinct=True),
            n_claims=Count(
                "claims",
                filter=Q(claims__claimed_at__gte=fresh_after) & ~Q(claims__annotator=user),
                distinct=True,
            ),
        )
        .values_list("n_labels", "n_claims")
    )
    remaining = sum(1 for n_labels, n_claims in still_open if n_labels + n_claims < overlap)
    return Progress(done, done + remaining)


def peek(user: User, *, product=None, dataset=None, exclude=(), count: int = 2) -> list[int]:
    """Ids of images ``user`` would probably get next, without claiming them (for prefetching)."""
    result = []
    for image_id in _candidates(user, dataset=dataset, product=product, skipped=False):
        if image_id in exclude:
            continue
        result.append(image_id)
        if len(result) >= count:
            break
    return result
