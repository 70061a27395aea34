"""What a worker does for one product of a run, and how a run's parts are settled into one result.

``execute_product_run`` is idempotent: a finished part (succeeded, failed, cancelled) is never
redone; a part found "running" is a redelivered message whose worker died, so it restarts
cleanly (artifacts wiped, ``attempts`` + 1). It never raises: whatever goes wrong (the engine,
a missing file, ``SoftTimeLimitExceeded``) leaves the part failed with the error text.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import traceback
from dataclasses import fields as dataclass_fields
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Avg
from django.utils import timezone

from annotator.services.background import Heartbeat, stale_before, stale_filter, worker_lost
from inference.models import ACTIVE_STATUSES, TERMINAL_STATUSES, BenchmarkRun, ProductRun, RunSample, Status

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5  # seconds between progress writes
CANCEL_INTERVAL = 0.25  # seconds between reads of the cancel flag
PACKAGE_FOLDER = "model"  # the fitted model's package, inside the part's artifact folder


def engine_config(run: BenchmarkRun):
    from inference.engine import BenchmarkConfig

    known = {f.name for f in dataclass_fields(BenchmarkConfig)}
    values = {k: v for k, v in (run.config or {}).items() if k in known}
    values.setdefault("num_threads", settings.BENCHMARK_THREADS)
    if values.get("layers") is not None:
        values["layers"] = tuple(values["layers"])
    return BenchmarkConfig(model=run.model, seed=run.seed, techniques=tuple(run.techniques), **values)


def engine_samples(part: ProductRun):
    from inference.engine import Sample

    train, test = [], []
    for row in part.samples.order_by("role", "id"):
        sample = Sample(
            image_path=row.path,
            mask_path=row.mask_path or None,
            defect_type=row.defect_type if row.is_anomalous else "good",
            category=row.category or None,
            background=row.background,
            key=str(row.image_id) if row.image_id else row.path,
            category_shares=row.category_shares,
            background_shares=({text == "true": share for text, share in row.background_shares.items()}
                               if row.background_shares is not None else None),
        )
        (train if row.role == RunSample.Role.TRAIN else test).append(sample)
    return train, test


def _beat(part_id: int, run_id: int):
    """The heartbeat of one part: its row and its run's (see ``annotator.services.background``)."""
    def beat(now):
        ProductRun.objects.filter(pk=part_id, status=Status.RUNNING).update(heartbeat_at=now)
        BenchmarkRun.objects.filter(pk=run_id, status=Status.RUNNING).update(heartbeat_at=now)
    return beat


class _Reporter:
    """Throttled progress writes and cancel-flag reads for one part."""

    def __init__(self, part: ProductRun, multi: bool):
        self.part, self.multi = part, multi
        self.last_write = 0.0
        self.last_cancel_check = 0.0
        self.cancelled = False
        self.last_stage = None
        self.detail: dict | None = None

    def on_detail(self, detail: dict) -> None:
        """Kept until the next progress write (the engine calls progress right after)."""
        self.detail = {**detail, "product": self.part.product.name}

    def progress(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        if stage == self.last_stage and now - self.last_write < PROGRESS_INTERVAL and fraction < 1.0:
            return
        self.last_stage, self.last_write = stage, now
        percent = max(0.0, min(100.0, float(fraction) * 100.0))
        stamp = timezone.now()
        detail = self.detail if self.detail and self.detail.get("stage") == stage else None
        ProductRun.objects.filter(pk=self.part.pk).update(
            stage=stage[:64], progress=percent, heartbeat_at=stamp, detail=detail)
        run_stage = f"{self.part.product.name}: {stage}" if self.multi else stage
        run_progress = (
            ProductRun.objects.filter(run_id=self.part.run_id).aggregate(p=Avg("progress"))["p"] or 0.0
            if self.multi else percent
        )
        BenchmarkRun.objects.filter(pk=self.part.run_id, status=Status.RUNNING).update(
            stage=run_stage[:64], progress=run_progress, heartbeat_at=stamp, detail=detail
        )

    def should_cancel(self) -> bool:
        if self.cancelled:
            return True
        now = time.monotonic()
        if now - self.last_cancel_check < CANCEL_INTERVAL:
            return False
        self.last_cancel_check = now
        self.cancelled = bool(
            BenchmarkRun.objects.filter(pk=self.part.run_id).values_list("cancel_requested", flat=True).first()
        )
        return self.cancelled


def _claim(part_id: int, task_id: str | None) -> ProductRun | None:
    """Mark the part running (restarting a redelivered one); None when there is nothing to do."""
    now = timezone.now()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    with transaction.atomic():
        part = ProductRun.objects.select_for_update().select_related("run", "product").filter(pk=part_id).first()
        if part is None:
            logger.warning("product run %s no longer exists", part_id)
            return None
        run = part.run
        if part.status in TERMINAL_STATUSES:
            logger.info("product run %s is already %s; not redoing it", part_id, part.status)
            return None
        if run.cancel_requested or run.status == Status.CANCELLED:
            part.status, part.stage, part.finished_at = Status.CANCELLED, "cancelled", now
            part.save(update_fields=["status", "stage", "finished_at"])
            return None
        if part.status == Status.RUNNING:
            logger.warning("product run %s was left running (redelivered after a lost worker): restarting", part_id)
        part.status, part.stage, part.progress, part.error = Status.RUNNING, "starting", 0.0, ""
        part.started_at, part.finished_at, part.heartbeat_at = now, None, now
        part.attempts += 1
        part.worker = worker
        part.report = None
        if task_id:
            part.celery_task_id = task_id
        part.save()
        BenchmarkRun.objects.filter(pk=run.pk, status=Status.QUEUED).update(status=Status.RUNNING, started_at=now)
        BenchmarkRun.objects.filter(pk=run.pk, status=Status.RUNNING).update(heartbeat_at=now, stage="starting")
    return part


def _finish_part(part_id: int, status: str, *, error: str = "", report=None, stage: str | None = None,
                 package_path: str = "") -> None:
    values = {"status": status, "finished_at": timezone.now(), "error": error, "stage": stage or status,
              "package_path": package_path}
    if status == Status.SUCCEEDED:
        values["progress"] = 100.0
    if report is not None:
        values["report"] = report
    ProductRun.objects.filter(pk=part_id, status=Status.RUNNING).update(**values)


def _finish_part_after_db_error(part_id: int, message: str, attempts: int = 3) -> None:
    """Mark the part failed with ``message``, on a fresh connection if the old one broke."""
    for attempt in range(attempts):
        try:
            _finish_part(part_id, Status.FAILED, error=message[:4000], stage="failed")
            return
        except DatabaseError:
            logger.exception("could not record the failure of product run %s (attempt %d)", part_id, attempt + 1)
            connection.close()
            time.sleep(0.5 * (attempt + 1))


def execute_product_run(part_id: int, *, task_id: str | None = None, finalize: bool = False) -> str:
    """Run the engine on one product of a run. Returns the part's final status."""
    part = _claim(part_id, task_id)
    if part is None:
        status = ProductRun.objects.filter(pk=part_id).values_list("status", flat=True).first() or "missing"
        if finalize:
            run_id = ProductRun.objects.filter(pk=part_id).values_list("run_id", flat=True).first()
            if run_id:
                finalize_run(run_id)
        return status
    run = part.run
    multi = run.product_runs.count() > 1
    root = part.artifacts_root
    if root.exists():
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    # A thread beats even while the engine is busy in one long step; 0 disables it (in-process tests).
    with Heartbeat(_beat(part.pk, run.pk), f"product-run-{part.pk}"):
        _run_engine(part, root, multi)
    if finalize:
        finalize_run(run.pk)
    return ProductRun.objects.filter(pk=part.pk).values_list("status", flat=True).first()


def _run_engine(part: ProductRun, root: Path, multi: bool) -> None:
    """The engine on the part's samples; the part ends succeeded, cancelled or failed (never raises)."""
    from inference.engine import BenchmarkCancelled, run_benchmark

    run = part.run
    reporter = _Reporter(part, multi)
    package = {}

    def save_model(model, report):
        """Keep the fitted model as a package (a run that cannot give one still succeeds)."""
        from inference.engine.package import PackageError, save_package

        source = {"run": run.pk, "product_run": part.pk, "dataset": run.dataset.name, "product": part.product.name}
        try:
            path = save_package(model, report, root / PACKAGE_FOLDER, source=source)
        except PackageError as error:
            logger.warning("product run %s keeps no model package: %s", part.pk, error)
        else:
            package["path"] = path.relative_to(settings.MEDIA_ROOT).as_posix()

    try:
        train, test = engine_samples(part)
        config = engine_config(run)
        report = run_benchmark(
            train, test, config,
            progress=reporter.progress, should_cancel=reporter.should_cancel, artifacts_dir=root,
            save_model=save_model,
            on_detail=reporter.on_detail,
        )
        report["source"] = {"dataset": part.run.dataset.name, "product": part.product.name}
        (root / "report.json").write_text(json.dumps(report, indent=2))
        try:
            _finish_part(part.pk, Status.SUCCEEDED, report=report, stage="done",
                         package_path=package.get("path", ""))
        except DatabaseError as error:
            # The results exist (report.json) but could not be stored: say so, not "worker lost".
            message = f"Database error while saving the results: {type(error).__name__}: {error}".strip()
            logger.error("product run %s: %s\n%s", part.pk, message, traceback.format_exc())
            _finish_part_after_db_error(part.pk, message)
    except BenchmarkCancelled:
        _finish_part(part.pk, Status.CANCELLED, stage="cancelled")
    except Exception as error:  # includes SoftTimeLimitExceeded
        from celery.exceptions import SoftTimeLimitExceeded

        if isinstance(error, SoftTimeLimitExceeded):
            message = (f"Time limit exceeded: the run took longer than {settings.BENCHMARK_SOFT_TIME_LIMIT} s "
                       "(BENCHMARK_SOFT_TIME_LIMIT).")
        else:
            message = f"{type(error).__name__}: {error}"
        logger.error("product run %s failed: %s\n%s", part.pk, message, traceback.format_exc())
        _finish_part_after_db_error(part.pk, message)


def finalize_run(run_id: int) -> str | None:
    """Settle a run from its parts (idempotent): status, error text, aggregate metrics."""
    from inference.services.reports import aggregate_metrics

    with transaction.atomic():
        run = BenchmarkRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return None
        if run.status in TERMINAL_STATUSES and run.metrics is not None:
            return run.status
        parts = list(run.product_runs.select_related("product"))
        statuses = {p.status for p in parts}
        if statuses & set(ACTIVE_STATUSES):
            return run.status  # not all parts are done yet
        failed = [p for p in parts if p.status == Status.FAILED]
        if failed:
            status = Status.FAILED
            run.error = "\n".join(f"{p.product.name}: {p.error}" for p in failed)
        elif Status.CANCELLED in statuses or run.cancel_requested:
            status = Status.CANCELLED
        else:
            status = Status.SUCCEEDED
        succeeded = [p for p in parts if p.status == Status.SUCCEEDED and p.report]
        if succeeded:
            run.metrics = aggregate_metrics({p.product.name: p.report for p in succeeded})
            Path(run.artifacts_root).mkdir(parents=True, exist_ok=True)
            (run.artifacts_root / "metrics.json").write_text(json.dumps(run.metrics, indent=2))
        elif run.metrics is None:
            run.metrics = {}
        if run.status not in TERMINAL_STATUSES:
            run.status = status
            run.finished_at = timezone.now()
            run.stage = {"succeeded": "done"}.get(status, status)
            if status == Status.SUCCEEDED:
                run.progress = 100.0
        run.save()
    return run.status


def settle_dead_parts(parts, now=None) -> int:
    """Settle running ``parts`` whose worker is dead: cancelled when their run's cancel was asked,
    else failed with the time the worker stopped responding. Conditional on the heartbeat read, so
    a part whose worker beats in between is left alone. Returns how many were settled."""
    now = now or timezone.now()
    settled = 0
    for part in parts.filter(status=Status.RUNNING).select_related("run"):
        if part.run.cancel_requested:
            values = {"status": Status.CANCELLED, "stage": "cancelled", "error": ""}
        else:
            values = {"status": Status.FAILED, "stage": "failed", "error": worker_lost(part.heartbeat_at)}
        settled += ProductRun.objects.filter(
            pk=part.pk, status=Status.RUNNING, heartbeat_at=part.heartbeat_at).update(finished_at=now, **values)
    return settled


def settle_stale_runs(now=None) -> int:
    """Settle running parts whose heartbeat is older than the stale window (``settle_dead_parts``),
    then every active run whose parts have all ended (its chord callback was lost with a worker).

    Parts still queued are left alone: they wait for a worker, and a queue may legitimately be long.
    """
    now = now or timezone.now()
    changed = settle_dead_parts(ProductRun.objects.filter(stale_filter(stale_before(now))), now)
    for run in BenchmarkRun.objects.filter(status__in=ACTIVE_STATUSES):
        statuses = set(run.product_runs.values_list("status", flat=True))
        if statuses and not statuses & set(ACTIVE_STATUSES):
            finalize_run(run.pk)
            changed += 1
    return changed
