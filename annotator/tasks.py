"""Celery tasks of the labelling domain: thin wrappers over services."""
from celery import shared_task
from django.db import close_old_connections

from annotator.services import references


@shared_task(name="annotator.compute_references", acks_late=True, reject_on_worker_lost=True, time_limit=1800)
def compute_references(product_id: int) -> str:
    """Nearest defect-free reference of every anomalous image of a product (idempotent)."""
    close_old_connections()
    return references.compute_references(product_id)
