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
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotator.models import AnnotatorProgress, Claim, Image, Label, Product, Skip, User
from annotator.services.labels import save_label

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


def _scope_products(*, dataset, product) -> list[Product]:
    """The products the queue walks, in order (by dataset name, then product name)."""
    if product is not None:
        if dataset is not None and product.dataset_id != dataset.pk:
            raise QueueError(f"Product {product.name} does not belong to dataset {dataset.name}.")
        return [product]
    products = Product.objects.select_related("dataset").order_by("dataset__name", "name")
    return list(products.filter(dataset=dataset) if dataset is not None else products)


def _open_images(user: User, product: Product, *, skipped: bool, fresh_after):
    """The product's images still open to ``user``, in queue order, as one indexed query.

    It walks the partial index ``image_queue_open`` (anomalous test images whose label count is
    below the overlap) and drops, per row, images ``user`` labelled or (not) skipped and images
    whose fresh claims by others fill the remaining slots: each check is an index probe, so the
    cost does not grow with the size of the dataset.
    """
    overlap = product.dataset.label_overlap
    others_claims = Claim.objects.filter(image=OuterRef("pk"), claimed_at__gte=fresh_after).exclude(annotator=user)
    images = Image.objects.filter(
        product=product, split=Image.Split.TEST, is_anomalous=True, needs_labels=True,
    ).exclude(Exists(Label.objects.filter(image=OuterRef("pk"), annotator=user)))
    skips = Exists(Skip.objects.filter(image=OuterRef("pk"), annotator=user))
    images = images.filter(skips) if skipped else images.exclude(skips)
    if overlap <= 1:
        images = images.exclude(Exists(others_claims))
    else:
        claims = Subquery(
            others_claims.order_by().values("image").annotate(n=Count("id")).values("n"),
            output_field=IntegerField(),
        )
        images = images.annotate(n_claims=Coalesce(claims, 0)).filter(
            n_claims__lt=overlap - F("label_count")
        )
    return images.order_by("defect_type", "path")


def _candidate_ids(user: User, *, dataset, product, skipped: bool, limit: int, exclude=()):
    """Up to ``limit`` ids of open images, without locking (for peeking)."""
    fresh_after = _fresh_after()
    result: list[int] = []
    for scoped in _scope_products(dataset=dataset, product=product):
        images = _open_images(user, scoped, skipped=skipped, fresh_after=fresh_after)
        if exclude:
            images = images.exclude(pk__in=list(exclude))
        result += list(images.values_list("pk", flat=True)[: limit - len(result)])
        if len(result) >= limit:
            break
    return result


def _lock_user(user: User) -> None:
    """Serialise one user's queue calls (parallel requests must not claim several images)."""
    if connection.features.has_select_for_update:
        User.objects.select_for_update().filter(pk=user.pk).values_list("pk", flat=True).first()


def _claim_next(user: User, products: list[Product], *, skipped: bool) -> tuple[Image | None, bool]:
    """Lock and claim the first open image (``SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1``)."""
    saw_locked = False
    fresh_after = _fresh_after()
    for scoped in products:
        tried: list[int] = []
        while True:
            images = _open_images(user, scoped, skipped=skipped, fresh_after=fresh_after)
            if tried:
                images = images.exclude(pk__in=tried)
            if connection.features.has_select_for_update_skip_locked:
                # Rows another transaction holds are passed over, not waited for.
                image = images.select_related("product__dataset").select_for_update(
                    skip_locked=True, of=("self",)
                ).first()
            else:
                image = images.select_related("product__dataset").first()
            if image is None:
                # Could a locked row have hidden an open image? Only if the plain query sees one.
                if connection.features.has_select_for_update_skip_locked and images.exists():
                    saw_locked = True
                break
            if not _open_for(image, user):  # re-read after the lock: committed claims count now
                tried.append(image.pk)
                continue
            Claim.objects.filter(annotator=user).delete()
            Claim.objects.create(image=image, annotator=user, claimed_at=timezone.now())
            return image, False
    return None, saw_locked


def next_image(user: User, *, dataset=None, product=None) -> Image | None:
    """Claim and return the next image ``user`` should label, or None when nothing is left.

    ``product`` must belong to ``dataset`` when both are given (QueueError otherwise). A
    candidate whose row another transaction has locked is skipped, not waited for; if nothing
    else was free, the attempt is repeated in a fresh transaction (that other transaction may
    leave a slot free, e.g. with an overlap above 1), so None really means nothing is left.
    """
    products = _scope_products(dataset=dataset, product=product)
    for attempt in range(100):
        image, saw_locked = _try_next_image(user, products)
        if image is not None or not saw_locked:
            return image
        time.sleep(min(0.2, 0.01 * (attempt + 1)))
    return None


def _try_next_image(user: User, products: list[Product]) -> tuple[Image | None, bool]:
    with transaction.atomic():
        _start_serialised_transaction()
        _lock_user(user)
        mine = (
            Claim.objects.filter(annotator=user, claimed_at__gte=_fresh_after(),
                                 image__product__in=products, image__split=Image.Split.TEST,
                                 image__is_anomalous=True)
            .exclude(image__labels__annotator=user)
            .select_related("image__product__dataset")
            .first()
        )
        if mine is not None:
            mine.claimed_at = timezone.now()
            mine.save(update_fields=["claimed_at"])
            return mine.image, False
        saw_locked = False
        for skipped in (False, True):
            image, locked = _claim_next(user, products, skipped=skipped)
            saw_locked = saw_locked or locked
            if image is not None:
                return image, False
    return None, saw_locked


def skip_image(user: User, image: Image) -> None:
    """Record the skip and release the user's claim so someone else may take the image."""
    if not (image.split == Image.Split.TEST and image.is_anomalous):
        raise QueueError("Only anomalous test images are labelled, so only they can be skipped.")
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


PROGRESS_CACHE_SECONDS = 5


def _cached(key: str, compute):
    """Progress figures are shown, not acted on: each is computed in SQL at most every few seconds."""
    value = cache.get(key)
    if value is None:
        value = compute()
        cache.set(key, value, PROGRESS_CACHE_SECONDS)
    return value


def product_progress(product: Product, cached: bool = True) -> Progress:
    """Images of ``product`` with all the labels the overlap asks for (or a review decision)."""

    def compute():
        counts = labellable_images(product=product).aggregate(
            total=Count("pk"),
            done=Count("pk", filter=Q(needs_labels=False) | Q(review_decision__isnull=False)),
        )
        return counts["total"], counts["done"]

    total, done = _cached(f"queue:product-progress:{product.pk}", compute) if cached else compute()
    return Progress(done, total)


def user_progress(user: User, product: Product) -> Progress:
    """Images ``user`` labelled in ``product`` out of those plus those still open to them.

    From the counters kept on every label change (``AnnotatorProgress``) and a count over the
    partial index of images short of labels: still open = short of labels, less those ``user``
    labelled already, less those held by others' fresh claims (counted one each).
    """
    row = AnnotatorProgress.objects.filter(annotator=user, product=product).values_list("done", "waiting").first()
    done, waiting = row or (0, 0)
    short = labellable_images(product=product).filter(needs_labels=True).count()
    held = Claim.objects.filter(image__product=product, claimed_at__gte=_fresh_after()).exclude(annotator=user).count()
    return Progress(done, done + max(0, short - waiting - held))


def has_work(user: User, *, dataset=None, product=None) -> bool:
    """Whether ``user`` holds a claim or could get an image here (read-only)."""
    products = _scope_products(dataset=dataset, product=product)
    if Claim.objects.filter(annotator=user, claimed_at__gte=_fresh_after(), image__product__in=products).exists():
        return True
    return bool(_candidate_ids(user, dataset=dataset, product=product, skipped=False, limit=1)
                or _candidate_ids(user, dataset=dataset, product=product, skipped=True, limit=1))


def peek(user: User, *, product=None, dataset=None, exclude=(), count: int = 2) -> list[int]:
    """Ids of images ``user`` would probably get next, without claiming them (for prefetching)."""
    return _candidate_ids(user, dataset=dataset, product=product, skipped=False, limit=count, exclude=exclude)
