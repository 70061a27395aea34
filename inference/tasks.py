"""Celery tasks of benchmark runs: thin wrappers over ``inference.services.execution``.

Both are idempotent (a finished part or run is never redone), ``acks_late`` with
``reject_on_worker_lost`` (a message whose worker dies goes back to the broker) and bounded by
the soft/hard limits in settings (``BENCHMARK_SOFT_TIME_LIMIT`` / ``BENCHMARK_HARD_TIME_LIMIT``).
"""
from celery import shared_task
from django.conf import settings
from django.db import close_old_connections

from inference.services import execution


@shared_task(
    bind=True,
    name="inference.run_product",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.BENCHMARK_SOFT_TIME_LIMIT,
    time_limit=settings.BENCHMARK_HARD_TIME_LIMIT,
)
def run_product(self, product_run_id: int, finalize: bool = False) -> str:
    """Benchmark one product of a run; with ``finalize`` also settle the run (single-product runs)."""
    close_old_connections()
    return execution.execute_product_run(product_run_id, task_id=self.request.id, finalize=finalize)


@shared_task(name="inference.finalize_run", acks_late=True, reject_on_worker_lost=True, time_limit=600)
def finalize_run(run_id: int) -> str | None:
    """Chord callback of a multi-product run: aggregate the products' reports into the run."""
    close_old_connections()
    return execution.finalize_run(run_id)


@shared_task(name="inference.sweep_stale_jobs", ignore_result=True, expires=60)
def sweep_stale_jobs() -> dict:
    """Periodic (Celery beat, see ``CELERY_BEAT_SCHEDULE``): end the jobs of every kind whose
    worker stopped beating (``services.sweep``). Idempotent: a job that has ended is left alone.
    (Celery's Django fix-up recycles connections.)"""
    from inference.services import sweep

    return sweep.sweep_stale_jobs()


@shared_task(name="inference.inspect_batch", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=settings.BENCHMARK_SOFT_TIME_LIMIT, time_limit=settings.BENCHMARK_HARD_TIME_LIMIT)
def inspect_batch(job_id: int) -> str:
    """Inspect a batch of new images with a product's deployed model (see ``services.deploy``)."""
    from inference.services import deploy

    close_old_connections()
    return deploy.execute_batch(job_id)
