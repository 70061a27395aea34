"""Zip uploads imported as Celery jobs: the web request only stores the zip and queues a job.

The ``ImportJob`` row holds the state a user sees (stage, files done of total, status, the
summary or every problem) and the cancel flag the job reads between files. The import itself is
``importing.import_saved_zip``: all or nothing, so a failed or cancelled job writes nothing.
"""
from __future__ import annotations

import time

from django.db import transaction
from django.utils import timezone

from annotator.models import ImportJob
from annotator.services.importing import (
    ImportCancelled,
    ImportFailed,
    check_upload_name,
    import_saved_zip,
    save_upload,
)

# The job's row is written at most this often while it runs (and at every stage change).
PROGRESS_EVERY_S = 0.5


def start_upload(uploaded_file, *, layout: str = "auto", name: str | None = None,
                 skip_invalid: bool = False, created_by=None) -> ImportJob:
    """Store the zip, create the job and queue it once the transaction commits.

    ImportFailed at once (nothing stored) for a name already taken or a zip above the limit.
    """
    from pathlib import Path

    file_name = Path(getattr(uploaded_file, "name", "") or "upload.zip").name
    name = (name or "").strip() or Path(file_name).stem or "upload"
    check_upload_name(name)
    zip_path, file_name = save_upload(uploaded_file)
    job = ImportJob.objects.create(
        upload_path=str(zip_path), file_name=file_name, created_by=created_by,
        options={"layout": layout, "name": name, "skip_invalid": skip_invalid},
    )
    transaction.on_commit(lambda: enqueue(job.pk))
    return job


def enqueue(job_id: int) -> None:
    from annotator import tasks

    tasks.import_upload.delay(job_id)


def request_cancel(job: ImportJob) -> None:
    ImportJob.objects.filter(pk=job.pk).update(cancel_requested=True)


def run_job(job_id: int) -> str:
    """Import the job's zip; idempotent (a finished job is left alone). Returns the status."""
    from pathlib import Path

    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job_id)
        if job.finished:
            return job.status
        if job.cancel_requested:
            return _finish(job, ImportJob.Status.CANCELLED, ["Cancelled before it started; nothing was imported."])
        job.status = ImportJob.Status.RUNNING
        job.save(update_fields=["status"])
    last = [0.0]

    def stage(name: str) -> None:
        ImportJob.objects.filter(pk=job_id).update(stage=name, done=0, total=0)
        last[0] = 0.0

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY_S and done < total:
            return
        last[0] = now
        ImportJob.objects.filter(pk=job_id).update(done=done, total=total)
        if ImportJob.objects.filter(pk=job_id, cancel_requested=True).exists():
            raise ImportCancelled()

    options = job.options
    zip_path = Path(job.upload_path)
    try:
        report = import_saved_zip(
            zip_path, job.file_name, layout=options.get("layout", "auto"), name=options.get("name"),
            created_by=job.created_by, progress=progress, stage=stage,
            skip_invalid=bool(options.get("skip_invalid")),
        )
    except ImportCancelled:
        return _finish(job, ImportJob.Status.CANCELLED, ["Cancelled; nothing was imported."])
    except ImportFailed as failure:
        return _finish(job, ImportJob.Status.FAILED, failure.errors)
    except Exception as error:  # noqa: BLE001 - the row must not stay "running"
        _finish(job, ImportJob.Status.FAILED, [f"The import stopped unexpectedly: {error}"])
        raise
    finally:
        zip_path.unlink(missing_ok=True)
    job.dataset = report.dataset
    return _finish(job, ImportJob.Status.DONE, report.summary_lines())


def _finish(job: ImportJob, status: str, messages: list[str]) -> str:
    ImportJob.objects.filter(pk=job.pk).update(
        status=status, messages=messages, dataset=job.dataset, finished_at=timezone.now(),
        stage="" if status != ImportJob.Status.DONE else "done",
    )
    return status


def job_state(job: ImportJob) -> dict:
    """What the job page shows, as JSON."""
    return {
        "id": job.pk, "status": job.status, "stage": job.stage, "done": job.done, "total": job.total,
        "finished": job.finished, "cancel_requested": job.cancel_requested, "messages": job.messages,
        "dataset": job.dataset_id, "file_name": job.file_name,
    }
