"""Celery tasks of the annotator: thin wrappers over services (``upload_jobs``, ``references``)."""
from celery import shared_task
from django.db import close_old_connections

from annotator.services import references, upload_jobs


@shared_task(name="annotator.import_upload", acks_late=True, reject_on_worker_lost=True, time_limit=6 * 3600)
def import_upload(job_id: int) -> str:
    """Import an uploaded zip (idempotent: a finished job is left alone)."""
    close_old_connections()
    return upload_jobs.run_job(job_id)


@shared_task(name="annotator.compute_references", acks_late=True, reject_on_worker_lost=True, time_limit=1800)
def compute_references(product_id: int) -> str:
    """Nearest defect-free reference of every anomalous image of a product (idempotent)."""
    close_old_connections()
    return references.compute_references(product_id)
