"""Celery tasks of the annotator: a thin wrapper over ``annotator.services.upload_jobs``."""
from celery import shared_task
from django.db import close_old_connections

from annotator.services import upload_jobs


@shared_task(name="annotator.import_upload", acks_late=True, reject_on_worker_lost=True, time_limit=6 * 3600)
def import_upload(job_id: int) -> str:
    """Import an uploaded zip (idempotent: a finished job is left alone)."""
    close_old_connections()
    return upload_jobs.run_job(job_id)
