"""Celery tasks of the annotator: thin wrappers over its services.

``import_upload`` runs an admin zip upload as a job (``annotator.services.upload_jobs``);
``compute_references`` finds each anomalous image's nearest defect-free reference
(``annotator.services.references``); ``measure_alignment`` measures how aligned a product's
defect-free images are (``annotator.services.alignment``); ``refresh_statistics`` and
``refresh_suggestions`` (category suggestions: features and classifier, ``annotator.services.suggestions``)
are periodic (Celery beat; see ``CELERY_BEAT_SCHEDULE``).
"""
from celery import shared_task
from django.db import close_old_connections

from annotator.services import alignment, references, statistics, suggestions, upload_jobs


@shared_task(name="annotator.import_upload", acks_late=True, reject_on_worker_lost=True, time_limit=6 * 3600)
def import_upload(job_id: int) -> str:
    """Import an uploaded zip (idempotent: a finished job is left alone)."""
    close_old_connections()
    return upload_jobs.run_job(job_id)


@shared_task(name="annotator.refresh_statistics", ignore_result=True, expires=60)
def refresh_statistics() -> int:
    """Renew the reviewer statistics of datasets whose labels changed (idempotent)."""
    return statistics.refresh()


@shared_task(name="annotator.compute_references", acks_late=True, reject_on_worker_lost=True, time_limit=1800)
def compute_references(product_id: int) -> str:
    """Nearest defect-free reference of every anomalous image of a product (idempotent)."""
    close_old_connections()
    return references.compute_references(product_id)


@shared_task(name="annotator.measure_alignment", acks_late=True, reject_on_worker_lost=True, time_limit=600)
def measure_alignment(product_id: int) -> str:
    """How aligned a product's defect-free images are (idempotent)."""
    close_old_connections()
    return alignment.measure_alignment(product_id)


@shared_task(name="annotator.refresh_suggestions", ignore_result=True, expires=120, time_limit=900)
def refresh_suggestions() -> int:
    """Missing suggestion features (bounded) and a refit of each dataset's classifier whose labels
    changed, for the datasets that offer suggestions (idempotent)."""
    close_old_connections()
    return suggestions.refresh()
