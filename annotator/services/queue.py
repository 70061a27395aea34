"""The labelling queue: which anomalous test image an annotator gets next.

Rules
-----
* Only anomalous test images with a mask are labelled (``models.LABELLABLE``): a category is
  read off the defect's outline. One without a mask waits until it gets one
  (``annotator.services.masks.save_drawn_mask``), then enters the queue like any other.
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
from django.db.models import Count, Q
from django.utils import timezone

from annotator.models import LABELLABLE, AnnotatorProgress, Claim, Image, Label, Product, Skip, User
from annotator.services.labels import save_label

class QueueError(Exception):
    """The image cannot be labelled by this user (already fully labelled by others, not anomalous)."""


def claim_timeout() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "DEFECTBENCH_CLAIM_TIMEOUT_SECONDS", 600)))


def _fresh_after():
    return timezone.now() - claim_timeout()


def labellable_images(*, dataset=None, product=None):
    images = Image.objects.filter(LABELLABLE)
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
    """The image row, locked until the transaction ends (None: gone, or locked by another
    transaction when ``skip_locked``)."""
    # Unordered and of the image row only: Image's default ordering joins product and dataset,
    # and FOR UPDATE over that join would lock the product row too, serialising (or, with SKIP
    # LOCKED, hiding) every image of the product while one transaction holds it.
    queryset = Image.objects.filter(pk=image_id).order_by()
    if connection.features.has_select_for_update:
        if skip_locked and connection.features.has_select_for_update_skip_locked:
            queryset = queryset.select_for_update(skip_locked=True, of=("self",))
        else:
            queryset = queryset.select_for_update(of=("self",))
    return queryset.first()


@dataclass(frozen=True)
class Slots:
    """Who holds an image's label slots, read in one statement after its row is locked."""

    labels: int  # labels of the image, the user's included
    own_label: bool
    own_claim: bool  # the user's fresh claim
    others_claims: int  # fresh claims by other users

    def open_to_user(self, overlap: int) -> bool:
        """The user has not labelled the image and a slot is free beside others' labels and claims."""
        return not self.own_label and self.labels + self.others_claims < overlap


def _slots(image_id: int, user: User) -> Slots:
    """Label and claim counts of one image as one statement (four index probes).

    A fresh statement after the row lock: under READ COMMITTED it sees every claim and label
    committed by the transactions that held the lock before.
    """
    label, claim = Label._meta.db_table, Claim._meta.db_table
    fresh_after = connection.ops.adapt_datetimefield_value(_fresh_after())
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT COUNT(*) FROM {label} WHERE image_id = %s),"
            f" (SELECT COUNT(*) FROM {label} WHERE image_id = %s AND annotator_id = %s),"
            f" (SELECT COUNT(*) FROM {claim} WHERE image_id = %s AND annotator_id = %s AND claimed_at >= %s),"
            f" (SELECT COUNT(*) FROM {claim} WHERE image_id = %s AND annotator_id <> %s AND claimed_at >= %s)",
            [image_id, image_id, user.pk, image_id, user.pk, fresh_after, image_id, user.pk, fresh_after],
        )
        labels, own_label, own_claim, others_claims = cursor.fetchone()
    return Slots(labels, bool(own_label), bool(own_claim), others_claims)


def _scope_products(*, dataset, product) -> list[Product]:
    """The products the queue walks, in order (by dataset name, then product name)."""
    if product is not None:
        if dataset is not None and product.dataset_id != dataset.pk:
            raise QueueError(f"Product {product.name} does not belong to dataset {dataset.name}.")
        return [product]
    products = Product.objects.select_related("dataset").order_by("dataset__name", "name")
    return list(products.filter(dataset=dataset) if dataset is not None else products)


# The product's images still open to a user, in queue order. Written as SQL because it runs on
# every hand-out and building it through the ORM cost more than running it (1.7 ms against 1 ms).
# It walks the partial index ``image_queue_open_masked`` (anomalous test images with a mask short of
# labels: the first four conditions are its condition, as written there) and drops, per row, images the user
# labelled or (not) skipped and images whose fresh claims by others fill the remaining slots; each
# check is an index probe, so the cost does not grow with the size of the dataset.
_OPEN_IMAGES_SQL = """
    SELECT i.id FROM {image} i
    WHERE i.split = 'test' AND i.is_anomalous AND NOT (i.mask_path = '') AND i.needs_labels
      AND i.product_id = %(product)s
      AND NOT EXISTS (SELECT 1 FROM {label} l WHERE l.image_id = i.id AND l.annotator_id = %(user)s)
      AND {skipped} EXISTS (SELECT 1 FROM {skip} s WHERE s.image_id = i.id AND s.annotator_id = %(user)s)
      AND (SELECT COUNT(*) FROM {claim} c WHERE c.image_id = i.id AND c.annotator_id <> %(user)s
                                             AND c.claimed_at >= %(fresh_after)s) < %(overlap)s - i.label_count
      {exclude}
    ORDER BY i.defect_type, i.path
    LIMIT %(limit)s
"""


def _open_image_ids(user: User, product: Product, *, skipped: bool, fresh_after, limit: int, exclude=()) -> list[int]:
    """Up to ``limit`` ids of ``product``'s images open to ``user`` (skipped ones only, or none of
    them), in queue order, leaving out ``exclude``."""
    exclude = [int(pk) for pk in exclude]
    sql = _OPEN_IMAGES_SQL.format(
        image=Image._meta.db_table, label=Label._meta.db_table, skip=Skip._meta.db_table,
        claim=Claim._meta.db_table, skipped="" if skipped else "NOT",
        exclude="AND i.id NOT IN (" + ", ".join(f"%(exclude{n})s" for n in range(len(exclude))) + ")" if exclude else "",
    )
    params = {"product": product.pk, "user": user.pk, "overlap": product.dataset.label_overlap, "limit": limit,
              "fresh_after": connection.ops.adapt_datetimefield_value(fresh_after)}
    params.update({f"exclude{n}": pk for n, pk in enumerate(exclude)})
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def _candidate_ids(user: User, *, dataset, product, skipped: bool, limit: int, exclude=()):
    """Up to ``limit`` ids of open images, without locking (for peeking)."""
    fresh_after = _fresh_after()
    result: list[int] = []
    for scoped in _scope_products(dataset=dataset, product=product):
        result += _open_image_ids(user, scoped, skipped=skipped, fresh_after=fresh_after,
                                  limit=limit - len(result), exclude=exclude)
        if len(result) >= limit:
            break
    return result


def _lock_user_and_read_claim(user: User) -> int | None:
    """Serialise one user's queue calls (parallel requests must not claim several images) and
    read, in the same statement, the image of the user's fresh claim, if any."""
    lock = " FOR UPDATE OF u" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.image_id FROM {User._meta.db_table} u LEFT JOIN {Claim._meta.db_table} c"
            f" ON c.annotator_id = u.id AND c.claimed_at >= %s WHERE u.id = %s{lock}",
            [connection.ops.adapt_datetimefield_value(_fresh_after()), user.pk],
        )
        row = cursor.fetchone()
    return row[0] if row else None


# Candidates read per query when claiming: the first that is still open is claimed, the others
# are the images the user will probably get next (the workspace prefetches them).
CANDIDATES = 3


@dataclass
class Handout:
    """What the queue hands a user: the claimed image and the ids it would probably hand next."""

    image: Image | None
    upcoming: list[int]


def _claim(user: User, image: Image) -> None:
    """The user's one claim now points at ``image`` (an upsert on the one-claim-per-user key)."""
    Claim.objects.bulk_create(
        [Claim(image=image, annotator=user, claimed_at=timezone.now())],
        update_conflicts=True, unique_fields=["annotator"], update_fields=["image", "claimed_at"],
    )


def _claim_next(user: User, products: list[Product], *, skipped: bool) -> tuple[Handout | None, bool]:
    """Claim the first open image: a few candidates in queue order (one indexed query), then each
    candidate's row locked with ``SELECT ... FOR UPDATE SKIP LOCKED`` and its slots re-read."""
    saw_locked = False
    fresh_after = _fresh_after()
    for scoped in products:
        overlap = scoped.dataset.label_overlap
        tried: list[int] = []
        while True:
            candidates = _open_image_ids(user, scoped, skipped=skipped, fresh_after=fresh_after,
                                         limit=CANDIDATES, exclude=tried)
            if not candidates:
                break
            for image_id in candidates:
                tried.append(image_id)
                image = _lock_image(image_id, skip_locked=True)
                if image is None:  # another transaction holds the row: passed over, not waited for
                    saw_locked = True
                    continue
                if not _slots(image_id, user).open_to_user(overlap):  # committed claims count now
                    continue
                _claim(user, image)
                image.product = scoped
                return Handout(image, [c for c in candidates if c not in tried]), False
    return None, saw_locked


def hand_out(user: User, *, dataset=None, product=None) -> Handout:
    """Claim the next image ``user`` should label (``Handout.image`` None when nothing is left),
    with the ids of the images the user will probably get after it.

    ``product`` must belong to ``dataset`` when both are given (QueueError otherwise). A
    candidate whose row another transaction has locked is skipped, not waited for; if nothing
    else was free, the attempt is repeated in a fresh transaction (that other transaction may
    leave a slot free, e.g. with an overlap above 1), so None really means nothing is left.
    """
    products = _scope_products(dataset=dataset, product=product)
    for attempt in range(100):
        handout, saw_locked = _try_hand_out(user, products)
        if handout is not None:
            return handout
        if not saw_locked:
            break
        time.sleep(min(0.2, 0.01 * (attempt + 1)))
    return Handout(None, [])


def next_image(user: User, *, dataset=None, product=None) -> Image | None:
    """Claim and return the next image ``user`` should label, or None when nothing is left."""
    return hand_out(user, dataset=dataset, product=product).image


def _try_hand_out(user: User, products: list[Product]) -> tuple[Handout | None, bool]:
    with transaction.atomic():
        _start_serialised_transaction()
        claimed = _lock_user_and_read_claim(user)
        # The user's fresh claim is handed back (a reload claims nothing new) while it is in scope
        # and not labelled yet; otherwise the next image replaces it.
        image = claimed and (
            Image.objects.filter(LABELLABLE, pk=claimed, product__in=products)
            .exclude(labels__annotator=user).select_related("product__dataset").order_by().first()
        )
        if image:
            Claim.objects.filter(annotator=user).update(claimed_at=timezone.now())
            return Handout(image, peek(user, product=image.product, exclude={image.pk})), False
        saw_locked = False
        for skipped in (False, True):
            handout, locked = _claim_next(user, products, skipped=skipped)
            saw_locked = saw_locked or locked
            if handout is not None:
                return handout, False
    return None, saw_locked


def skip_image(user: User, image: Image) -> None:
    """Record the skip and release the user's claim so someone else may take the image."""
    if not image.is_labellable:
        raise QueueError("Only anomalous test images with a mask are labelled, so only they can be skipped.")
    with transaction.atomic():
        Skip.objects.update_or_create(image=image, annotator=user, defaults={"skipped_at": timezone.now()})
        Claim.objects.filter(image=image, annotator=user).delete()


def release_claim(user: User, image: Image) -> None:
    Claim.objects.filter(image=image, annotator=user).delete()


def submit_label(*, user: User, image: Image, background: bool, category: str, source: str = "workspace",
                 background_carried: bool = False, suggested_category: str = "") -> Label:
    """Save ``user``'s label of ``image`` if the overlap allows it; drop the claim and any skip.

    Changing one's own existing label is always allowed. A new label is refused (QueueError) when
    the image already has as many labels and fresh claims by others as the overlap asks for,
    unless ``user`` holds a fresh claim on it.
    """
    if not image.is_labellable:
        raise QueueError("Only anomalous test images with a mask are labelled"
                         + (" (this one needs a mask first)." if image.needs_mask else "."))
    with transaction.atomic():
        _start_serialised_transaction()
        locked = _lock_image(image.pk, skip_locked=False)
        if locked is None:
            raise QueueError("The image no longer exists.")
        overlap = image.product.dataset.label_overlap
        slots = _slots(locked.pk, user)
        if not slots.own_label:
            # A fresh claim reserved a slot (labels alone must still fit within the overlap);
            # without one, others' labels and fresh claims must leave a slot free.
            full = slots.labels >= overlap if slots.own_claim else not slots.open_to_user(overlap)
            if full:
                raise QueueError("This image already has all the labels it needs.")
        locked.product = image.product
        # A suggestion counts only where the dataset offers them (a client cannot claim one elsewhere).
        suggested = suggested_category if image.product.dataset.suggest_categories else ""
        label = save_label(image=locked, annotator=user, background=background, category=category, source=source,
                           background_carried=background_carried, suggested_category=suggested)
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


def _progress_key(product_id: int) -> str:
    return f"queue:product-progress:{product_id}"


def _short_key(product_id: int) -> str:
    # How many of the product's images are short of labels: shared by its annotators and only
    # shown, so counted at most every few seconds (the count walks thousands of index entries in
    # a large product); between counts every label that completes an image (or reopens one)
    # adjusts it, so an annotator's own numbers add up right after a submit.
    return f"queue:product-short:{product_id}"


# The count itself is kept longer than it is trusted: a separate marker says it is fresh. Redis'
# INCR creates a missing key (without expiry) when the count expires between Django's existence
# check and the increment; such a stray value has no marker, so it is recounted, never shown.
SHORT_VALUE_SECONDS = 3600


def _short_of_labels(product: Product) -> int:
    key = _short_key(product.pk)
    found = cache.get_many([key, key + ":fresh"])
    if found.get(key + ":fresh") and found.get(key) is not None:
        return found[key]
    short = labellable_images(product=product).filter(needs_labels=True).count()
    cache.set(key, short, SHORT_VALUE_SECONDS)
    cache.set(key + ":fresh", True, PROGRESS_CACHE_SECONDS)
    return short


def forget_cached_progress(product_ids) -> None:
    """Drop the products' cached figures (after an overlap change reopened or closed many images
    at once): the next reader counts, so no figure is off for the seconds a cached one lives."""
    keys = []
    for product_id in product_ids:
        keys += [_short_key(product_id), _short_key(product_id) + ":fresh", _progress_key(product_id)]
    cache.delete_many(keys)


def images_short_of_labels_changed(product_id: int, delta: int) -> None:
    """An image of the product stopped (-1) or started (+1) needing labels."""
    try:
        cache.incr(_short_key(product_id), delta)
    except ValueError:  # not counted lately: the next reader counts
        pass
    product_completion_changed(product_id)


def product_completion_changed(product_id: int) -> None:
    """An image of the product became fully labelled (or decided by a reviewer), or stopped being.

    The cached product figure is dropped once the change commits (dropped before, a reader in
    between would cache the old count again): the workspace showed "1 / 63" for a run of labels
    while the figure cached after the first one lived."""
    transaction.on_commit(lambda: cache.delete(_progress_key(product_id)))


def product_progress(product: Product, cached: bool = True) -> Progress:
    """Images of ``product`` with all the labels the overlap asks for (or a review decision)."""

    def compute():
        counts = labellable_images(product=product).aggregate(
            total=Count("pk"),
            done=Count("pk", filter=Q(needs_labels=False) | Q(review_decision__isnull=False)),
        )
        return counts["total"], counts["done"]

    total, done = _cached(_progress_key(product.pk), compute) if cached else compute()
    return Progress(done, total)


def user_progress(user: User, product: Product) -> Progress:
    """Images ``user`` labelled in ``product`` out of those plus those still open to them.

    From the counters kept on every label change (``AnnotatorProgress``) and a count over the
    partial index of images short of labels: still open = short of labels, less those ``user``
    labelled already, less those held by others' fresh claims (counted one each).
    """
    row = AnnotatorProgress.objects.filter(annotator=user, product=product).values_list("done", "waiting").first()
    done, waiting = row or (0, 0)
    short = _short_of_labels(product)
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
