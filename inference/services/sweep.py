"""The one periodic sweep of every background job kind whose worker stopped responding.

A worker killed mid-job (``kill -9``, out of memory, a lost machine) leaves its row "running";
the broker hands the message on only much later (Redis: after ``visibility_timeout``, hours), if
ever. So Celery beat runs ``inference.sweep_stale_jobs`` every third of ``BENCHMARK_STALE_SECONDS``
and each job kind ends its running rows whose heartbeat is older than that, through its own
service (where all of its state changes live):

* benchmark parts and runs: ``execution.settle_stale_runs``
* inspection batches (and uploads inspected in a web request): ``deploy.settle_stale_inspections``
* dataset zip imports: ``upload_jobs.settle_stale_imports`` (also removes the partly unpacked folder)
* nearest-reference indexes: ``references.settle_stale_indexes``

Each row ends failed with "the worker stopped responding at <time>", or cancelled when a cancel
was asked. Idempotent and safe beside a live worker: a row is ended only if its heartbeat is still
the stale one read. Pages and the API only read.
"""
from __future__ import annotations

from django.utils import timezone

from annotator.services import references, upload_jobs
from inference.services import deploy, execution


def sweep_stale_jobs(now=None) -> dict[str, int]:
    """End every job whose worker stopped responding; how many of each kind were ended."""
    now = now or timezone.now()
    return {
        "benchmark": execution.settle_stale_runs(now),
        "inspection": deploy.settle_stale_inspections(now),
        "import": upload_jobs.settle_stale_imports(now),
        "references": references.settle_stale_indexes(now),
    }
