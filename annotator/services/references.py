"""Nearest defect-free references: computed once per product in the background (Celery task
``annotator.compute_references``), read by the workspace and the review page.

``ensure_references(product)`` queues the task once (a ``ReferenceIndex`` row holds the state, so
a second call while queued/running/done does nothing); ``compute_references(product_id)`` is
idempotent (it replaces the product's rows); ``nearest_reference(image)`` falls back to the
product's first defect-free training image until the task is done.
"""
from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from annotator.models import Image, NearestReference, Product, ReferenceIndex
from annotator.services.background import Heartbeat, stale_before, stale_filter, worker_lost

logger = logging.getLogger(__name__)


def good_train_images(product_id: int):
    """The product's defect-free training images, by path: the reference candidates."""
    return Image.objects.filter(product_id=product_id, split=Image.Split.TRAIN, is_anomalous=False).order_by("path")


def ensure_references(product: Product) -> ReferenceIndex:
    index, created = ReferenceIndex.objects.get_or_create(product=product)
    if created:
        from annotator import tasks

        def send():
            try:
                tasks.compute_references.delay(product.pk)
            except Exception:  # no broker now: the fallback reference stays; retried by the next ensure
                logger.exception("could not queue nearest references of product %s", product.pk)
                ReferenceIndex.objects.filter(product=product).delete()

        transaction.on_commit(send)
    return index


def compute_references(product_id: int) -> str:
    index, _ = ReferenceIndex.objects.get_or_create(product_id=product_id)
    if index.status == ReferenceIndex.Status.DONE:
        return index.status
    ReferenceIndex.objects.filter(pk=index.pk).update(status=ReferenceIndex.Status.RUNNING, error="",
                                                      heartbeat_at=timezone.now())
    try:
        from inference.engine.similarity import nearest_references

        refs = list(good_train_images(product_id).select_related("product__dataset"))
        queries = list(Image.objects.filter(product_id=product_id, split=Image.Split.TEST, is_anomalous=True)
                       .select_related("product__dataset"))
        # One long call (backbone features of every image): a thread beats meanwhile.
        with Heartbeat(_index_beat(index.pk), f"references-{product_id}"):
            found, weights = nearest_references([str(r.file_path) for r in refs], [str(q.file_path) for q in queries])
        with transaction.atomic():
            NearestReference.objects.filter(image__product_id=product_id).delete()
            NearestReference.objects.bulk_create([
                NearestReference(image=q, reference=refs[i], distance=d) for q, (i, d) in zip(queries, found)
            ])
            _finish_index(index, ReferenceIndex.Status.DONE, weights=weights)
    except Exception as error:  # a missing file, no weights at all: the fallback reference stays
        logger.exception("nearest references of product %s failed", product_id)
        _finish_index(index, ReferenceIndex.Status.FAILED, error=f"{type(error).__name__}: {error}")
    return ReferenceIndex.objects.get(pk=index.pk).status


def _finish_index(index: ReferenceIndex, status: str, *, if_still_silent: bool = False, **values) -> bool:
    """The one way a computation ends (done or failed); one that has ended already is left as it is.
    ``if_still_silent``: only if its heartbeat is still the one read into ``index``."""
    rows = ReferenceIndex.objects.filter(pk=index.pk, status=ReferenceIndex.Status.RUNNING)
    if if_still_silent:
        rows = rows.filter(heartbeat_at=index.heartbeat_at)
    return bool(rows.update(status=status, **values))


def _index_beat(index_id: int):
    def beat(now):
        ReferenceIndex.objects.filter(pk=index_id, status=ReferenceIndex.Status.RUNNING).update(heartbeat_at=now)
    return beat


def settle_stale_indexes(now=None) -> int:
    """Fail every running computation whose heartbeat is older than the stale window (the periodic
    sweep); the workspace keeps showing the fallback reference."""
    stale = ReferenceIndex.objects.filter(stale_filter(stale_before(now)), status=ReferenceIndex.Status.RUNNING)
    return sum(_finish_index(index, ReferenceIndex.Status.FAILED, error=worker_lost(index.heartbeat_at),
                             if_still_silent=True) for index in stale)


def computed_nearest_reference(image: Image) -> Image | None:
    """The nearest defect-free image once the product's references are computed, else None."""
    row = NearestReference.objects.filter(image=image).select_related("reference").first()
    return row.reference if row else None


def nearest_reference(image: Image) -> Image | None:
    return computed_nearest_reference(image) or good_train_images(image.product_id).first()
