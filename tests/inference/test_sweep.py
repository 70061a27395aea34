"""The one sweep of jobs whose worker stopped responding, and cancel in every state, for every job
kind: benchmark runs, inspection batches, dataset imports, nearest-reference indexes.

Rows are made directly (no engine, no images): these tests are about the life of a job.
"""
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

import pytest
from django.urls import reverse
from django.utils import timezone

from annotator.models import BackgroundStatus, Dataset, ImportJob, Product, ReferenceIndex
from annotator.services import upload_jobs
from annotator.services.background import Heartbeat, NothingToCancel
from inference import tasks
from inference.models import ACTIVE_STATUSES, BenchmarkRun, Deployment, InspectionJob, ProductRun, Status
from inference.services import deploy, runs

pytestmark = pytest.mark.django_db

STALE = 30


@pytest.fixture(autouse=True)
def _stale_window(settings):
    settings.BENCHMARK_STALE_SECONDS = STALE


def _ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def _stopped_at(when) -> str:
    return f"stopped responding at {timezone.localtime(when):%Y-%m-%d %H:%M:%S}"


@pytest.fixture
def product(tmp_path):
    dataset = Dataset.objects.create(name="parts", layout="folder", root=str(tmp_path / "data"))
    return Product.objects.create(dataset=dataset, name="widget")


@dataclass
class Kind:
    """How a test makes, cancels and reads one job kind."""

    name: str
    make: Callable  # (product, status, heartbeat_at, cancel_requested) -> row
    statuses: type  # its status vocabulary
    cancel: Callable | None  # (row, admin) -> row
    error_of: Callable  # row -> the text a user reads
    leftovers: Callable = lambda row: []  # files the job leaves while it runs, gone once it ended

    def read(self, row):
        row.refresh_from_db()
        return row


def _run(product, status, heartbeat_at, cancel_requested=False):
    run = BenchmarkRun.objects.create(dataset=product.dataset, model="padim", status=status, started_at=heartbeat_at,
                                      heartbeat_at=heartbeat_at, cancel_requested=cancel_requested)
    ProductRun.objects.create(run=run, product=product, status=status, started_at=heartbeat_at,
                              heartbeat_at=heartbeat_at)
    return run


def _deployment(product) -> Deployment:
    part = _run(product, Status.SUCCEEDED, timezone.now()).product_runs.get()
    return Deployment.objects.create(product=product, product_run=part, technique="f1")


def _inspection(product, status, heartbeat_at, cancel_requested=False):
    job = InspectionJob.objects.create(product=product, deployment=_deployment(product),
                                       kind=InspectionJob.Kind.BATCH, status=status, started_at=heartbeat_at,
                                       heartbeat_at=heartbeat_at, cancel_requested=cancel_requested, total=1)
    job.artifacts_path = f"inspections/{job.pk}"
    job.source = str(job.artifacts_root / "input")
    job.save()
    (job.artifacts_root / "input").mkdir(parents=True)
    (job.artifacts_root / "input" / "new.png").write_bytes(b"png")
    return job


def _import(product, status, heartbeat_at, cancel_requested=False, unpacked: Path | None = None):
    from django.conf import settings

    media = Path(settings.MEDIA_ROOT)
    zip_path = media / "uploads" / f"{uuid.uuid4().hex}.zip"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    zip_path.write_bytes(b"PK")
    unpacked = unpacked or media / "datasets" / uuid.uuid4().hex
    (unpacked / "bottle" / "train").mkdir(parents=True, exist_ok=True)
    (unpacked / "bottle" / "train" / "000.png").write_bytes(b"png")
    return ImportJob.objects.create(status=status, heartbeat_at=heartbeat_at, started_at=heartbeat_at,
                                    cancel_requested=cancel_requested, upload_path=str(zip_path),
                                    unpacked_path=str(unpacked), file_name="bottle.zip")


def _index(product, status, heartbeat_at, cancel_requested=False):
    own = Product.objects.create(dataset=product.dataset, name=f"part-{uuid.uuid4().hex[:8]}")  # one index each
    return ReferenceIndex.objects.create(product=own, status=status, heartbeat_at=heartbeat_at)


KINDS = {
    "benchmark": Kind("benchmark", _run, Status, lambda run, admin: runs.cancel_run(run, admin),
                      error_of=lambda run: run.error),
    "inspection": Kind("inspection", _inspection, Status, lambda job, admin: deploy.cancel_job(job),
                       error_of=lambda job: job.error, leftovers=lambda job: [job.artifacts_root / "input"]),
    "import": Kind("import", _import, BackgroundStatus, lambda job, admin: upload_jobs.cancel_import(job),
                   error_of=lambda job: "\n".join(job.messages),
                   leftovers=lambda job: [Path(job.upload_path), Path(job.unpacked_path)]),
    "references": Kind("references", _index, BackgroundStatus, None, error_of=lambda index: index.error),
}
CANCELLABLE = [name for name, kind in KINDS.items() if kind.cancel]


@pytest.mark.parametrize("name", KINDS)
def test_sweep_fails_a_running_job_whose_worker_stopped_responding(name, product):
    kind = KINDS[name]
    last_beat = _ago(STALE + 1)
    dead = kind.make(product, kind.statuses.RUNNING, last_beat)
    leftovers = kind.leftovers(dead)
    assert all(path.exists() for path in leftovers)
    alive = kind.make(product, kind.statuses.RUNNING, _ago(STALE - 5))
    waiting = kind.make(product, kind.statuses.QUEUED, None)

    tasks.sweep_stale_jobs.apply()  # what Celery beat runs every third of the stale window

    dead = kind.read(dead)
    assert dead.status == kind.statuses.FAILED
    assert "Worker lost" in kind.error_of(dead) and _stopped_at(last_beat) in kind.error_of(dead)
    assert not any(path.exists() for path in leftovers)  # partly unpacked inputs are removed
    assert kind.read(alive).status == kind.statuses.RUNNING and all(p.exists() for p in kind.leftovers(alive))
    assert kind.read(waiting).status == kind.statuses.QUEUED  # a long queue is no dead worker
    tasks.sweep_stale_jobs.apply()  # idempotent
    assert kind.read(dead).status == kind.statuses.FAILED


def test_sweep_fails_the_benchmark_parts_and_settles_their_run(product):
    run = _run(product, Status.RUNNING, _ago(STALE + 1))
    tasks.sweep_stale_jobs.apply()
    run.refresh_from_db()
    part = run.product_runs.get()
    assert part.status == Status.FAILED and "stopped responding" in part.error
    assert run.status == Status.FAILED and run.error.startswith("widget: Worker lost") and run.finished_at


def test_sweep_ends_a_job_that_never_beat(product):
    """Started by code from before heartbeats, or killed before its first beat."""
    job = _inspection(product, Status.RUNNING, None)
    tasks.sweep_stale_jobs.apply()
    job.refresh_from_db()
    assert job.status == Status.FAILED and "stopped responding before its first heartbeat" in job.error


@pytest.mark.parametrize("name", CANCELLABLE)
def test_sweep_ends_a_dead_job_whose_cancel_was_asked_cancelled(name, product):
    kind = KINDS[name]
    dead = kind.make(product, kind.statuses.RUNNING, _ago(STALE + 1), cancel_requested=True)
    leftovers = kind.leftovers(dead)
    tasks.sweep_stale_jobs.apply()
    assert kind.read(dead).status == kind.statuses.CANCELLED
    assert not any(path.exists() for path in leftovers)


@pytest.mark.parametrize("name", ["inspection", "import"])
def test_sweep_spares_a_worker_that_beat_after_the_sweep_looked(name, product, monkeypatch):
    kind = KINDS[name]
    job = kind.make(product, kind.statuses.RUNNING, _ago(STALE + 1))
    service = deploy if name == "inspection" else upload_jobs
    real_end = service._end_dead_job

    def beat_first(stale_job):  # the worker's heartbeat lands between the sweep's read and its write
        type(job).objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())
        return real_end(stale_job)

    monkeypatch.setattr(service, "_end_dead_job", beat_first)
    tasks.sweep_stale_jobs.apply()
    assert kind.read(job).status == kind.statuses.RUNNING
    assert all(path.exists() for path in kind.leftovers(job))


def test_sweep_keeps_an_import_that_committed_before_its_worker_died(product):
    job = _import(product, BackgroundStatus.RUNNING, _ago(STALE + 1))
    dataset = Dataset.objects.create(name="bottle", layout="mvtec", root=str(Path(job.unpacked_path) / "bottle"))
    tasks.sweep_stale_jobs.apply()
    job.refresh_from_db()
    assert job.status == BackgroundStatus.DONE and job.dataset == dataset
    assert "was imported" in job.messages[0] and "stopped responding" in job.messages[0]
    assert dataset.root_path.is_dir()  # the dataset's images stay
    assert not Path(job.upload_path).exists()


def test_sweep_never_removes_a_folder_outside_the_unpacked_uploads(product, tmp_path):
    """A job row naming a folder of the data roots (or anything else) never has it removed."""
    users_data = tmp_path / "data" / "bottle-original"
    job = _import(product, BackgroundStatus.RUNNING, _ago(STALE + 1), unpacked=users_data)
    tasks.sweep_stale_jobs.apply()
    assert ImportJob.objects.get(pk=job.pk).status == BackgroundStatus.FAILED
    assert (users_data / "bottle" / "train" / "000.png").is_file()


STATES = ["queued", "running", "running, worker dead", "succeeded", "failed", "cancelled"]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("name", CANCELLABLE)
def test_cancel_settles_a_job_in_any_state(name, state, product, admin_account):
    kind = KINDS[name]
    statuses = kind.statuses
    status = {"queued": statuses.QUEUED, "succeeded": getattr(statuses, "SUCCEEDED", None) or statuses.DONE,
              "failed": statuses.FAILED, "cancelled": statuses.CANCELLED}.get(state, statuses.RUNNING)
    heartbeat = _ago(STALE + 1) if state == "running, worker dead" else timezone.now()
    job = kind.make(product, status, None if status == statuses.QUEUED else heartbeat)
    leftovers = kind.leftovers(job)

    if state in ("succeeded", "failed", "cancelled"):
        with pytest.raises(NothingToCancel, match=f"has already ended \\({status.label.lower()}\\); there is nothing"):
            kind.cancel(job, admin_account)
        assert kind.read(job).status == status  # nothing changed
        return
    kind.cancel(job, admin_account)
    job = kind.read(job)
    assert job.cancel_requested
    if state == "running":  # the worker notices at its next step (tests below and with a real worker)
        assert job.status == statuses.RUNNING and all(path.exists() for path in leftovers)
    else:  # queued, or nobody left to notice: cancelled at once
        assert job.status == statuses.CANCELLED and job.finished_at
        assert not any(path.exists() for path in leftovers)


def test_cancel_of_a_run_whose_worker_died_settles_its_parts(product, admin_account):
    run = _run(product, Status.RUNNING, _ago(STALE + 1))
    assert runs.cancel_run(run, admin_account).status == Status.CANCELLED
    assert run.product_runs.get().status == Status.CANCELLED


def test_running_batch_notices_cancel_at_its_next_group_of_images(product, monkeypatch):
    job = _inspection(product, Status.QUEUED, None)
    for k in range(3 * deploy.BATCH_CHUNK):
        (job.artifacts_root / "input" / f"{k:03d}.png").write_bytes(b"png")
    beats = []

    def inspect_one(job_, inspector, index, name, source):
        if index % deploy.BATCH_CHUNK == 0:
            beats.append(InspectionJob.objects.get(pk=job.pk).heartbeat_at)
        if index == deploy.BATCH_CHUNK + 1:  # a reviewer presses cancel while the second group is inspected
            assert deploy.cancel_job(job_).status == Status.RUNNING
        return {"name": name, "inference_ms": 1.0}

    monkeypatch.setattr(deploy, "inspector_for", lambda deployment: object())
    monkeypatch.setattr(deploy, "_inspect_file", inspect_one)
    assert deploy.execute_batch(job.pk) == Status.CANCELLED
    job.refresh_from_db()
    assert job.status == Status.CANCELLED and len(job.results) == 2 * deploy.BATCH_CHUNK
    assert beats[1] > beats[0]  # each group's progress write is a heartbeat too
    assert not (job.artifacts_root / "input").exists()


def test_cancelling_an_ended_job_says_so(product, admin_account, admin_api, client):
    run = _run(product, Status.SUCCEEDED, timezone.now())
    response = admin_api.post(f"/api/benchmarks/runs/{run.pk}/cancel/")
    assert response.status_code == 409
    assert response.json()["detail"] == f"Run {run.pk} has already ended (succeeded); there is nothing to cancel."
    job = _inspection(product, Status.FAILED, timezone.now())
    response = admin_api.post(reverse("api-inspection-cancel", args=[job.pk]))
    assert response.status_code == 409 and "has already ended (failed)" in response.json()["detail"]
    client.force_login(admin_account)
    page = client.post(reverse("inspection-cancel", args=[job.pk]), follow=True).content.decode()
    assert f"Inspection {job.pk} has already ended (failed); there is nothing to cancel." in page
    imported = _import(product, BackgroundStatus.DONE, timezone.now())
    page = client.post(reverse("admin:annotator_dataset_upload_cancel", args=[imported.pk]), follow=True)
    assert "The import of bottle.zip has already ended (done); there is nothing to cancel." in page.content.decode()


def test_one_beat_task_sweeps_every_kind():
    from config import settings as configured  # as loaded, before this module's stale window

    sweeps = [entry for entry in configured.CELERY_BEAT_SCHEDULE.values() if "stale" in entry["task"]]
    assert [entry["task"] for entry in sweeps] == [tasks.sweep_stale_jobs.name]
    assert sweeps[0]["schedule"] <= configured.BENCHMARK_STALE_SECONDS / 3
    assert set(tasks.sweep_stale_jobs.apply().get()) == set(KINDS)


def test_heartbeat_beats_on_its_own_thread_until_the_job_ends():
    beats, threads = [], set()

    def beat(now):
        beats.append(now)
        threads.add(threading.current_thread().name)

    with Heartbeat(beat, "job-1", interval=0.01):
        while len(beats) < 3:
            threading.Event().wait(0.01)
    count = len(beats)
    threading.Event().wait(0.05)
    assert len(beats) == count and threads == {"heartbeat-job-1"}
    assert beats == sorted(beats)
    with Heartbeat(beat, "job-2", interval=0) as quiet:  # in-process tests: progress writes beat instead
        assert quiet.thread is None


def test_every_active_status_is_swept_or_waiting():
    """The sweep ends running rows and leaves queued ones: the vocabulary has no other active state."""
    assert set(ACTIVE_STATUSES) == {Status.QUEUED, Status.RUNNING}


def test_a_redelivered_import_that_had_committed_is_not_redone(product):
    job = _import(product, BackgroundStatus.RUNNING, _ago(1))
    dataset = Dataset.objects.create(name="bottle", layout="mvtec", root=str(Path(job.unpacked_path) / "bottle"))
    assert upload_jobs.run_job(job.pk) == BackgroundStatus.DONE
    assert ImportJob.objects.get(pk=job.pk).dataset == dataset and dataset.root_path.is_dir()
