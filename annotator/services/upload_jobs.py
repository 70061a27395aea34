"""Zip uploads imported as Celery jobs: the web request only stores the zip and queues a job.

The ``ImportJob`` row holds the state a user sees (stage, files done of total, status, the
summary or every problem), the cancel flag the job reads between files and the heartbeat its
worker writes. The import itself is ``importing.import_saved_zip``: all or nothing, so a failed
or cancelled job writes nothing. A job whose worker died is ended by the periodic sweep
(``inference.services.sweep``) or by a cancel: failed or cancelled, its zip and its partly
unpacked folder removed.
"""
from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotator.models import ACTIVE_BACKGROUND_STATUSES, ImportJob
from annotator.services.background import (
    Heartbeat, is_stale, nothing_to_cancel, stale_before, stale_filter, worker_lost,
)
from annotator.services.importing import (
    ImportCancelled,
    ImportFailed,
    check_upload_name,
    dataset_unpacked_in,
    discard_unpacked,
    import_saved_zip,
    new_unpack_folder,
    save_upload,
)

# The job's row is written at most this often while it runs (and at every stage change).
PROGRESS_EVERY_S = 0.5


def start_upload(uploaded_file, *, layout: str = "auto", name: str | None = None,
                 skip_invalid: bool = False, created_by=None) -> ImportJob:
    """Store the zip, create the job and queue it once the transaction commits.

    ImportFailed at once (nothing stored) for a name already taken or a zip above the limit.
    """
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


def run_job(job_id: int) -> str:
    """Import the job's zip; idempotent (a finished job is left alone). Returns the status."""
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job_id)
        if job.finished:
            return job.status
        if job.cancel_requested:
            finish_import_job(job, ImportJob.Status.CANCELLED, ["Cancelled before it started; nothing was imported."])
            return ImportJob.Status.CANCELLED
        if job.status == ImportJob.Status.RUNNING:  # redelivered: its worker died before the sweep saw it
            if dataset_unpacked_in(job.unpacked_path) is not None:  # ... after its import committed
                _end_dead_job(job)
                return ImportJob.objects.get(pk=job.pk).status
            discard_unpacked(job.unpacked_path)
        job.status = ImportJob.Status.RUNNING
        job.started_at = job.heartbeat_at = timezone.now()
        job.unpacked_path = str(new_unpack_folder().resolve())
        job.save(update_fields=["status", "started_at", "heartbeat_at", "unpacked_path"])
    # A thread beats while one step takes long (unpacking a large file, checking a large image).
    with Heartbeat(_import_beat(job.pk), f"import-{job.pk}"):
        return _import(job)


def _import(job: ImportJob) -> str:
    last = [0.0]

    def stage(name: str) -> None:
        ImportJob.objects.filter(pk=job.pk).update(stage=name, done=0, total=0, heartbeat_at=timezone.now())
        last[0] = 0.0

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY_S and done < total:
            return
        last[0] = now
        ImportJob.objects.filter(pk=job.pk).update(done=done, total=total, heartbeat_at=timezone.now())
        if _stop_asked(job.pk):
            raise ImportCancelled()

    options = job.options
    try:
        report = import_saved_zip(
            Path(job.upload_path), job.file_name, layout=options.get("layout", "auto"), name=options.get("name"),
            created_by=job.created_by, progress=progress, stage=stage,
            skip_invalid=bool(options.get("skip_invalid")), unpack_to=Path(job.unpacked_path),
        )
    except ImportCancelled:
        finish_import_job(job, ImportJob.Status.CANCELLED, ["Cancelled; nothing was imported."])
        return ImportJob.Status.CANCELLED
    except ImportFailed as failure:
        finish_import_job(job, ImportJob.Status.FAILED, failure.errors)
        return ImportJob.Status.FAILED
    except Exception as error:  # noqa: BLE001 - the row must not stay "running"
        finish_import_job(job, ImportJob.Status.FAILED, [f"The import stopped unexpectedly: {error}"])
        raise
    finish_import_job(job, ImportJob.Status.DONE, report.summary_lines(), dataset=report.dataset)
    return ImportJob.Status.DONE


# ---- the job's life: every change of an import job's status goes through these ----------------

def finish_import_job(job: ImportJob, status: str, messages: list[str], *, dataset=None,
                      if_still_silent: bool = False) -> bool:
    """End a queued or running job as ``status`` with ``messages``; a job that has ended already is
    left as it is. Its stored zip is removed, and unless it is done the folder it unpacked into.
    ``if_still_silent``: only if its heartbeat is still the one read into ``job`` (a worker that
    beat since is alive after all). Returns whether this call ended it."""
    rows = ImportJob.objects.filter(pk=job.pk, status__in=ACTIVE_BACKGROUND_STATUSES)
    if if_still_silent:
        rows = rows.filter(status=ImportJob.Status.RUNNING, heartbeat_at=job.heartbeat_at)
    ended = bool(rows.update(
        status=status, messages=messages, dataset=dataset, finished_at=timezone.now(),
        stage="done" if status == ImportJob.Status.DONE else "",
    ))
    if ended:
        zip_path = Path(job.upload_path)
        if zip_path.resolve().is_relative_to((Path(settings.MEDIA_ROOT) / "uploads").resolve()):
            zip_path.unlink(missing_ok=True)
        if status != ImportJob.Status.DONE:
            discard_unpacked(job.unpacked_path)
    return ended


def _import_beat(job_id: int):
    def beat(now):
        ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.RUNNING).update(heartbeat_at=now)
    return beat


def _stop_asked(job_id: int) -> bool:
    """Cancel was asked, or the job was ended meanwhile (by the sweep or a cancel that took it for dead)."""
    return ImportJob.objects.filter(pk=job_id).filter(
        Q(cancel_requested=True) | ~Q(status=ImportJob.Status.RUNNING)).exists()


def _end_dead_job(job: ImportJob) -> bool:
    """A running job whose worker stopped responding: failed (cancelled if that was asked) with its
    partly unpacked files removed; done if its import had committed before the worker died."""
    lost = worker_lost(job.heartbeat_at)
    imported = dataset_unpacked_in(job.unpacked_path)
    if imported is not None:
        return finish_import_job(job, ImportJob.Status.DONE, [
            f"Dataset '{imported.name}' was imported; its summary was lost with the worker. {lost}"],
            dataset=imported, if_still_silent=True)
    status = ImportJob.Status.CANCELLED if job.cancel_requested else ImportJob.Status.FAILED
    return finish_import_job(job, status, [lost, "Nothing was imported; its partly unpacked files were removed."],
                             if_still_silent=True)


def cancel_import(job: ImportJob) -> ImportJob:
    """Queued: cancelled at once. Running: stops at its next file, or at once when its worker
    stopped responding. Ended: ``NothingToCancel`` saying how it ended."""
    job.refresh_from_db()
    if job.finished:
        raise nothing_to_cancel(f"The import of {job.file_name}", job.get_status_display())
    ImportJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    job.refresh_from_db()
    if job.status == ImportJob.Status.QUEUED:
        finish_import_job(job, ImportJob.Status.CANCELLED, ["Cancelled before it started; nothing was imported."])
    elif job.status == ImportJob.Status.RUNNING and is_stale(job.heartbeat_at):
        _end_dead_job(job)
    job.refresh_from_db()
    return job


def settle_stale_imports(now=None) -> int:
    """End every running job whose heartbeat is older than the stale window (the periodic sweep)."""
    stale = ImportJob.objects.filter(stale_filter(stale_before(now)), status=ImportJob.Status.RUNNING)
    return sum(_end_dead_job(job) for job in stale)


def job_state(job: ImportJob) -> dict:
    """What the job page shows, as JSON."""
    return {
        "id": job.pk, "status": job.status, "stage": job.stage, "done": job.done, "total": job.total,
        "finished": job.finished, "cancel_requested": job.cancel_requested, "messages": job.messages,
        "dataset": job.dataset_id, "file_name": job.file_name,
    }
