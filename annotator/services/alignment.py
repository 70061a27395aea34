"""Whether a product's defect-free images are aligned, for the launch form and the pre-run advice.

Measured in the background (Celery task ``annotator.measure_alignment``, a second or two: see
``inference.engine.alignment``) and kept in a ``ProductAlignment`` row with the digest of the
image set it was measured on. A page only reads the row; ``ensure_alignment`` queues the
measurement once when the row is missing, measured on another set of images (a re-import), or
left queued/running past the stale window (its worker died: the job itself takes seconds).
"""
from __future__ import annotations

import hashlib
import logging

from django.db import transaction
from django.utils import timezone

from annotator.models import ACTIVE_BACKGROUND_STATUSES, Product, ProductAlignment
from annotator.services.background import stale_before
from annotator.services.references import good_train_images

logger = logging.getLogger(__name__)


def images_digest(product_id: int) -> str:
    paths = good_train_images(product_id).values_list("path", flat=True)
    return hashlib.sha256("\n".join(paths).encode()).hexdigest()


def _needs_measuring(row: ProductAlignment, digest: str) -> bool:
    if row.status in ACTIVE_BACKGROUND_STATUSES:
        return row.updated_at < stale_before()
    # A failed measurement (an unreadable file) is tried again once the stale window has passed.
    return row.images_digest != digest or (row.status != ProductAlignment.Status.DONE and row.updated_at < stale_before())


def ensure_alignment(product: Product) -> ProductAlignment:
    """The product's row, with a measurement queued when it has none for its current images."""
    digest = images_digest(product.pk)
    row, created = ProductAlignment.objects.get_or_create(product=product, defaults={"images_digest": digest})
    if created or _needs_measuring(row, digest):
        if not created:
            ProductAlignment.objects.filter(pk=row.pk).update(status=ProductAlignment.Status.QUEUED,
                                                              updated_at=timezone.now())
            row.status = ProductAlignment.Status.QUEUED
        from annotator import tasks

        def send():
            try:
                tasks.measure_alignment.delay(product.pk)
            except Exception:  # no broker now: the next read queues it again
                logger.exception("could not queue the alignment of product %s", product.pk)
                ProductAlignment.objects.filter(pk=row.pk).update(status=ProductAlignment.Status.FAILED,
                                                                  error="could not be queued")

        transaction.on_commit(send)
    return row


def measure_alignment(product_id: int) -> str:
    """Measure and store (idempotent: a row done on the current images is left as it is)."""
    from inference.engine.alignment import measure_paths

    digest = images_digest(product_id)
    row, _ = ProductAlignment.objects.get_or_create(product_id=product_id)
    if row.status == ProductAlignment.Status.DONE and row.images_digest == digest:
        return row.status
    ProductAlignment.objects.filter(pk=row.pk).update(status=ProductAlignment.Status.RUNNING, error="")
    try:
        images = list(good_train_images(product_id).select_related("product__dataset"))
        measured = measure_paths([str(image.file_path) for image in images])
        values = {"status": ProductAlignment.Status.DONE, "aligned_share": measured.aligned_share,
                  "layout": measured.layout, "pairs": measured.pairs}
    except Exception as error:  # a missing or unreadable file: said on the row, measured again later
        logger.exception("alignment of product %s failed", product_id)
        values = {"status": ProductAlignment.Status.FAILED, "error": f"{type(error).__name__}: {error}"}
    ProductAlignment.objects.filter(pk=row.pk).update(images_digest=digest, updated_at=timezone.now(), **values)
    return values["status"]


def alignment_of(product: Product) -> dict:
    """What the pages show: {"status", "aligned" (True/False/None), "aligned_share", "layout", "pairs"}."""
    from inference.engine.alignment import Alignment

    row = ensure_alignment(product)
    if row.status != ProductAlignment.Status.DONE:
        return {"status": row.status, "aligned": None, "aligned_share": None, "layout": None, "pairs": 0}
    return {"status": row.status, **Alignment(row.aligned_share, row.layout, row.pairs).as_dict()}
