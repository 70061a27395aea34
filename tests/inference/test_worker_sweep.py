"""Jobs on a real Celery worker whose process is killed (``kill -9``) end failed within the stale
window, swept by Celery beat in a second worker; cancel stops a running job.

One worker runs the jobs and beats every half second; the other embeds beat and runs the sweep
every third of a stale window of a few seconds (both as an operator would configure them, through
the environment). The test process only reads the rows, as the pages do.
"""
import io
import os
import signal
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image as PILImage

from annotator.models import Dataset, ImportJob
from annotator.services import upload_jobs
from inference.models import InspectionJob, Status
from inference.services import deploy
from tests.conftest import new_test_queue, start_celery_process
from tests.inference.conftest import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

STALE = 5  # seconds without a heartbeat before a job is taken for dead
HEARTBEAT = 0.5
SWEEP = STALE / 3  # Celery beat's interval for the sweep (settings: a third of the window)


@pytest.fixture
def workers(transactional_db, settings, tmp_path):
    """``.worker`` runs the jobs this test sends; ``.sweeper`` runs beat and its sweeps. Started,
    not waited for: ``.ready()`` waits (so they start up while the test fits its model)."""
    from config.celery import app

    settings.BENCHMARK_STALE_SECONDS = STALE  # what a cancel from this process compares with
    env = {"DEFECTBENCH_BENCHMARK_STALE_SECONDS": str(STALE),
           "DEFECTBENCH_BENCHMARK_HEARTBEAT_SECONDS": str(HEARTBEAT)}
    queue = new_test_queue("jobs")
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    previous_queue, app.conf.task_default_queue = app.conf.task_default_queue, queue
    worker = start_celery_process(settings, tmp_path / "worker.log", queue, env)
    # Beat sends the sweep to the sweeper's own queue, so the job worker's death cannot stop it.
    sweeper = start_celery_process(settings, tmp_path / "sweeper.log", new_test_queue("sweep"), env,
                                   args=("--beat", f"--schedule={tmp_path / 'beat-schedule'}"))

    def ready():
        worker.wait_until_ready()
        sweeper.wait_until_ready()

    try:
        yield SimpleNamespace(worker=worker, sweeper=sweeper, ready=ready)
    finally:
        worker.stop(9)
        sweeper.stop(9)
        app.conf.task_default_queue = previous_queue


def _png(size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, (120, 60, 135)).save(buffer, format="PNG")
    return buffer.getvalue()


def _until(model, pk, condition, timeout, handle=None, what="job"):
    def check():
        if handle is not None and handle.process.poll() is not None:
            raise AssertionError(f"worker died:\n{handle.log_path.read_text()[-4000:]}")
        row = model.objects.get(pk=pk)
        return row if condition(row) else None

    try:
        return wait_for(check, timeout, interval=0.05, message=what)
    except AssertionError:
        for handle_ in filter(None, [handle]):
            print(handle_.log_path.read_text()[-4000:])
        raise


def _gone(*paths: Path) -> bool:
    """The files a job leaves are removed just after its row says it ended: wait a moment for them."""
    return bool(wait_for(lambda: not any(path.exists() for path in paths), 5, message=f"{paths} to be removed"))


def _kill(handle) -> float:
    os.killpg(handle.process.pid, signal.SIGKILL)
    handle.process.wait(timeout=10)
    return time.monotonic()


def test_killed_worker_ends_its_inspection_failed_and_cancel_stops_a_running_one(
        padim_part, workers, admin_account, reviewer_account, settings, tmp_path):
    # padim_part first: its run executes in this process before the sweeper's short stale window
    # starts watching, so a slow heartbeat under load cannot end it
    workers.ready()
    deploy.deploy(padim_part, padim_part.report["selection"]["chosen"], admin_account)
    product = padim_part.product
    image = _png()
    archive = tmp_path / "line-3.zip"  # far more images than the test waits for: it never ends by itself
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for k in range(1500):
            z.writestr(f"line-3/{k:04d}.png", image)

    def inspecting(job):
        return job.status != Status.QUEUED and (job.progress > 0 or job.status != Status.RUNNING)

    # Cancel while it runs: the worker stops after its current group of images.
    job = deploy.start_batch(product, reviewer_account, zip_file=open(archive, "rb"))
    job = _until(InspectionJob, job.pk, inspecting, 60, workers.worker, "the first batch to run")
    assert job.status == Status.RUNNING, job.error
    assert deploy.cancel_job(job).status == Status.RUNNING  # asked; the live worker settles it
    job = _until(InspectionJob, job.pk, lambda j: j.status != Status.RUNNING, 10, workers.worker, "the cancel")
    assert job.status == Status.CANCELLED and 0 < len(job.results) < 1500
    assert _gone(job.artifacts_root / "input")

    # Kill the worker mid-batch: beat's sweep ends the job failed within the stale window.
    job = deploy.start_batch(product, reviewer_account, zip_file=open(archive, "rb"))
    job = _until(InspectionJob, job.pk, inspecting, 30, workers.worker, "the second batch to run")
    assert job.status == Status.RUNNING and (job.artifacts_root / "input").is_dir()
    killed = _kill(workers.worker)
    job = _until(InspectionJob, job.pk, lambda j: j.status != Status.RUNNING, STALE + 3 * SWEEP + 5,
                 workers.sweeper, "the sweep")
    assert time.monotonic() - killed <= STALE + 2 * SWEEP + 3  # a heartbeat, the window, the next sweep
    assert job.status == Status.FAILED and "Worker lost: the worker stopped responding at" in job.error
    assert _gone(job.artifacts_root / "input")  # its unpacked inputs went with it


def _bottle_zip(images: int) -> bytes:
    """An MVTec bottle of many large train images (checking them takes seconds), one defect."""
    large, small = _png((1024, 1024)), _png((32, 32))
    mask = io.BytesIO()
    defect = PILImage.new("L", (32, 32), 0)
    defect.paste(255, (8, 8, 16, 16))
    defect.save(mask, format="PNG")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for k in range(images):
            z.writestr(f"bottle/train/good/{k:04d}.png", large)
        z.writestr("bottle/test/good/000.png", small)
        z.writestr("bottle/test/broken/000.png", small)
        z.writestr("bottle/ground_truth/broken/000_mask.png", mask.getvalue())
    return buffer.getvalue()


def test_killed_worker_ends_its_import_failed_and_removes_the_unpacked_files(
        workers, admin_account, client, settings):
    data = _bottle_zip(1200)
    workers.ready()

    def checking(job):
        if job.status == ImportJob.Status.RUNNING:
            return job.stage == "checking images" and job.done > 0
        return job.status != ImportJob.Status.QUEUED

    # Cancel from the job page while the images are checked.
    job = upload_jobs.start_upload(SimpleUploadedFile("bottle.zip", data), created_by=admin_account)
    job = _until(ImportJob, job.pk, checking, 60, workers.worker, "the first import to check images")
    assert job.status == ImportJob.Status.RUNNING, job.messages
    client.force_login(admin_account)
    client.post(reverse("admin:annotator_dataset_upload_cancel", args=[job.pk]))
    job = _until(ImportJob, job.pk, lambda j: j.finished, 10, workers.worker, "the cancel")
    assert job.status == ImportJob.Status.CANCELLED and _gone(Path(job.unpacked_path), Path(job.upload_path))

    # Kill the worker while it checks: the sweep fails the job and removes what it unpacked.
    job = upload_jobs.start_upload(SimpleUploadedFile("bottle.zip", data), created_by=admin_account)
    job = _until(ImportJob, job.pk, checking, 30, workers.worker, "the second import to check images")
    assert job.status == ImportJob.Status.RUNNING and Path(job.unpacked_path).is_dir()
    killed = _kill(workers.worker)
    job = _until(ImportJob, job.pk, lambda j: j.finished, STALE + 3 * SWEEP + 5, workers.sweeper, "the sweep")
    assert time.monotonic() - killed <= STALE + 2 * SWEEP + 3
    assert job.status == ImportJob.Status.FAILED
    assert "Worker lost: the worker stopped responding at" in job.messages[0]
    assert _gone(Path(job.unpacked_path), Path(job.upload_path))
    assert not any((settings.MEDIA_ROOT / "datasets").iterdir()) and Dataset.objects.count() == 0
    state = client.get(reverse("admin:annotator_dataset_upload_status", args=[job.pk])).json()
    assert state["status"] == "failed" and state["finished"]
