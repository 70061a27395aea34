"""What every kind of background job shares: a heartbeat while it runs, the test for a worker that
stopped beating, and the words that say so.

The job kinds are benchmark runs (and their product parts), inspection batches, dataset imports
and nearest-reference indexes. Each keeps its own state transitions in its own service; the one
periodic sweep (``inference.services.sweep``, a Celery beat task) asks each to settle the rows
whose worker stopped responding, and each kind's cancel settles a row whose worker is dead at once.

Here, below both apps, so that the labelling side's jobs need nothing from ``inference``.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Callable

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

logger = logging.getLogger(__name__)


class NothingToCancel(Exception):
    """The job has ended already; the message says how, for the person who asked."""


def nothing_to_cancel(what: str, status_label: str) -> NothingToCancel:
    return NothingToCancel(f"{what} has already ended ({status_label.lower()}); there is nothing to cancel.")


def stale_seconds() -> int:
    """A running job whose heartbeat is older than this is taken for dead (every job kind)."""
    return int(settings.BENCHMARK_STALE_SECONDS)


def stale_before(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(seconds=stale_seconds())


def stale_filter(before: datetime) -> Q:
    """Rows whose last heartbeat is older than ``before`` (none at all: a row left over from before
    heartbeats, or one whose worker died before its first)."""
    return Q(heartbeat_at__lt=before) | Q(heartbeat_at__isnull=True)


def is_stale(heartbeat_at: datetime | None, now: datetime | None = None) -> bool:
    return heartbeat_at is None or heartbeat_at < stale_before(now)


def worker_lost(heartbeat_at: datetime | None) -> str:
    """The error a job gets when the sweep (or a cancel) finds its worker dead."""
    when = (f"at {timezone.localtime(heartbeat_at):%Y-%m-%d %H:%M:%S %Z}" if heartbeat_at
            else "before its first heartbeat")
    return (f"Worker lost: the worker stopped responding {when} (no heartbeat for more than "
            f"{stale_seconds()} s; its process was killed or crashed).")


class Heartbeat:
    """Calls ``beat(now)`` every ``BENCHMARK_HEARTBEAT_SECONDS`` on a thread of its own while a job
    works, so that one long step (loading a model, checking a large image, a CFLOW epoch) never
    looks like a dead worker. A context manager; an interval of 0 beats nowhere but the job's own
    progress writes (in-process tests, whose SQLite transaction a second connection cannot see).
    """

    def __init__(self, beat: Callable[[datetime], object], name: str, interval: float | None = None):
        self.beat, self.name = beat, name
        self.interval = settings.BENCHMARK_HEARTBEAT_SECONDS if interval is None else interval
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def _run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                try:
                    self.beat(timezone.now())
                except Exception:  # a locked SQLite file now and then: try again next beat
                    logger.exception("heartbeat of %s failed", self.name)
        finally:
            connection.close()

    def __enter__(self) -> "Heartbeat":
        if self.interval > 0:
            self.thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-{self.name}")
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
