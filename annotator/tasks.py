"""Periodic tasks of the labelling domain (Celery beat; see ``CELERY_BEAT_SCHEDULE``)."""
from celery import shared_task

from annotator.services import statistics


@shared_task(name="annotator.refresh_statistics", ignore_result=True, expires=60)
def refresh_statistics() -> int:
    """Renew the reviewer statistics of datasets whose labels changed (idempotent)."""
    return statistics.refresh()
