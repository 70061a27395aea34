"""Deploying a run's model as a product's inspector, and inspecting new images with it.

* :func:`deploy` records a decision (run + threshold technique), :func:`rollback` repeats an
  earlier one; the history is the product's ``Deployment`` rows, newest first.
* :func:`inspect_uploads` checks uploaded images (bytes and pixel limits, readable) and inspects
  them at once; :func:`start_batch` / :func:`execute_batch` do a folder or zip as a Celery job.
  Both keep one ``InspectionJob`` row with per-image results and PNGs (the input, the anomaly map
  as 8-bit grey over ``[map_low, map_high]`` and the predicted mask, all three at the map's size:
  the model's for a ``squash`` package, the image's own for ``keep_aspect`` and ``tiles``).
* The loaded package is cached per process (loading builds the backbone: about a second).
"""
from __future__ import annotations

import csv
import io
import logging
import shutil
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotator.models import Product
from annotator.paths import without_server_paths
from annotator.services.background import (
    Heartbeat, is_stale, nothing_to_cancel, stale_before, stale_filter, worker_lost,
)
from inference.models import (
    ACTIVE_STATUSES, Deployment, InspectionJob, InspectionVerdict, ProductRun, Status, TERMINAL_STATUSES,
)

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_UPLOAD_IMAGES = 32  # per API call / page drop; a batch job takes folders and zips of any size
MAX_BATCH_IMAGES = 10_000
CACHE_SIZE = 2
INPUT_FOLDER = "input"  # a zip batch's images, unpacked inside the job's folder
CSV_FIELDS = ("image", "verdict", "score", "image_threshold", "technique", "pixel_threshold",
              "defect_area_fraction", "components", "largest_component_bbox", "peak", "inference_ms")


class DeployRefused(Exception):
    """A deployment, rollback or inspection that cannot be done; ``messages`` say why."""

    def __init__(self, *messages: str):
        super().__init__(" ".join(messages))
        self.messages = list(messages)


# ---- deployments ---------------------------------------------------------------------------------

def package_root(part: ProductRun) -> Path | None:
    return Path(settings.MEDIA_ROOT) / part.package_path if part.package_path else None


def package_manifest(part: ProductRun) -> dict | None:
    from inference.engine.package import PackageError, read_manifest

    root = package_root(part)
    if root is None:
        return None
    try:
        return read_manifest(root)
    except PackageError:
        return None


def deployable_techniques(part: ProductRun) -> dict[str, float]:
    manifest = package_manifest(part)
    if manifest is None:
        return {}
    return {name: entry["value"] for name, entry in manifest["thresholds"]["pixel"].items()}


def deploy(part: ProductRun, technique: str, user, note: str = "", rollback_of: Deployment | None = None) -> Deployment:
    if part.status != Status.SUCCEEDED:
        raise DeployRefused(f"Run {part.run_id} did not succeed on {part.product.name}; only a succeeded run can be deployed.")
    if not part.package_path:
        raise DeployRefused(f"Run {part.run_id} kept no fitted model for {part.product.name} (made before model "
                            "packages existed, or it fitted no image threshold); retry the run to get one.")
    techniques = deployable_techniques(part)
    if not techniques:
        raise DeployRefused(f"The model package of run {part.run_id} cannot be read; retry the run.")
    if technique not in techniques:
        raise DeployRefused(f"Run {part.run_id} has no fitted {technique!r} threshold; it has "
                            f"{', '.join(sorted(techniques))}.")
    return Deployment.objects.create(product=part.product, product_run=part, technique=technique,
                                     deployed_by=user, note=note[:500], rollback_of=rollback_of)


def current(product: Product) -> Deployment | None:
    return (Deployment.objects.filter(product=product).select_related("product_run__run", "deployed_by")
            .order_by("-deployed_at", "-id").first())


def history(product: Product):
    return Deployment.objects.filter(product=product).select_related("product_run__run", "deployed_by", "rollback_of")


def rollback(product: Product, earlier_id: int, user) -> Deployment:
    earlier = Deployment.objects.filter(product=product, pk=earlier_id).select_related("product_run").first()
    if earlier is None:
        raise DeployRefused(f"No deployment {earlier_id} of {product.name} to roll back to.")
    now = current(product)
    if now is not None and now.pk == earlier.pk:
        raise DeployRefused(f"Deployment {earlier_id} is the one in use already.")
    return deploy(earlier.product_run, earlier.technique, user,
                  note=f"rolled back to deployment {earlier.pk}", rollback_of=earlier)


# ---- the loaded model ------------------------------------------------------------------------------

_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()


def inspector_for(deployment: Deployment):
    """The loaded package of a deployment (cached per process); DeployRefused if it cannot be loaded."""
    return inspector_of(deployment.product_run, what="deployed")


def inspector_of(part: ProductRun, what: str = "deployed"):
    """The loaded package a run kept (cached per process); DeployRefused if it cannot be loaded.
    ``what`` names the model in messages ("deployed", "run 12's")."""
    from inference.engine.package import PackageError, load_package

    root = package_root(part)
    if root is None:
        raise DeployRefused(f"The {what} run kept no model package.")
    key = str(root)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        try:
            inspector = load_package(root, device="cpu")
        except PackageError as error:
            # Reviewers read this: the package's files by their place in the data roots only.
            logger.warning("Run %s on %s: cannot load %s: %s", part.run_id, part.product_id, root, error)
            raise DeployRefused(f"The {what} model cannot be loaded: {without_server_paths(str(error))}") from error
        _cache[key] = inspector
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return inspector


# ---- inspection ------------------------------------------------------------------------------------

@dataclass
class Upload:
    """An image to inspect: its name and where its bytes are (bytes, a path, or a binary file such
    as a Django upload, which stays where the upload handler put it: Pillow reads it a chunk at a
    time, so a large upload is never copied into memory whole)."""
    name: str
    source: object


def read_uploads(files) -> list[Upload]:
    """Uploaded files (``.name``, ``.size``, read by Pillow in place) as :class:`Upload`; any file
    over the upload limit is refused before a byte of it is read."""
    limit = settings.DEFECTBENCH_MAX_UPLOAD_BYTES
    big = [f"{f.name}: {f.size:,} bytes, more than the limit of {limit:,} (DEFECTBENCH_MAX_UPLOAD_BYTES)"
           for f in files if f.size > limit]
    if big:
        raise DeployRefused(*big)
    if len(files) > MAX_UPLOAD_IMAGES:
        raise DeployRefused(f"{len(files)} images at once; at most {MAX_UPLOAD_IMAGES} (use a batch job for more).")
    return [Upload(f.name, f) for f in files]


def _png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path, optimize=False)


def _write_result(job: InspectionJob, index: int, prepared: np.ndarray, result) -> dict:
    """PNGs of one inspected image and its JSON entry (paths relative to the job's folder)."""
    folder = job.artifacts_root
    folder.mkdir(parents=True, exist_ok=True)
    amap = result.anomaly_map
    low, high = float(amap.min()), float(amap.max())
    grey = np.zeros(amap.shape, np.uint8) if high <= low else np.round(
        (amap - low) / (high - low) * 255.0).astype(np.uint8)
    files = result_files(index)
    _png(prepared, folder / files["image"])
    _png(grey, folder / files["map"])
    _png((result.predicted_mask * 255).astype(np.uint8), folder / files["mask"])
    entry = result.to_json()
    entry.update(index=index, map_low=low, map_high=high, files=files)
    return entry


def result_files(index: int) -> dict[str, str]:
    """The PNGs kept for the job's image at ``index``, relative to the job's folder: the input at
    the model's size, the anomaly map, the predicted mask."""
    stem = f"{index:05d}"
    return {"image": f"{stem}_image.png", "map": f"{stem}_map.png", "mask": f"{stem}_mask.png"}


def _inspect_file(job: InspectionJob, inspector, index: int, name: str, source) -> dict:
    """Decode one image (checked, upright, 8-bit RGB, as uploads and dataset imports are), resize
    it to the model's size (``squash``; ``keep_aspect`` and ``tiles`` keep it at its own size, the
    size their maps come back at), let the decoded picture go, then score it and write its PNGs.

    Only one full-size picture is ever alive: a request or batch costs the memory of its largest
    image, not of all of them. The file is read a block at a time (no Pillow verify, which reads a
    PNG chunk whole: one chunk can be the whole upload). CheckError when it cannot be read.
    """
    from annotator.services.image_checks import _open_checked
    from inference.engine.package import prepare_image

    picture = _open_checked(source, settings.DEFECTBENCH_MAX_IMAGE_PIXELS, verify=False)
    prepared, size = prepare_image(picture, inspector.prepare_size)
    del picture
    result = inspector.inspect_prepared(prepared[None], [size], [name], technique=job.deployment.technique)[0]
    entry = _write_result(job, index, prepared, result)
    # What made this verdict, for the audit trail (InspectionVerdict), as it was at this moment.
    entry.update(package_sha256=inspector.package_sha256, engine_version=inspector.engine_version,
                 inspected_at=timezone.now().isoformat())
    return entry


def _check_uploads(uploads: list[Upload]) -> None:
    """Refuse a request before anything is decoded: each file's header (read lazily by Pillow)
    against the per-image pixel limit, the sum against the per-request pixel budget."""
    from annotator.services.image_checks import CheckError, probe_image

    problems, pixels = [], 0
    for upload in uploads:
        try:
            width, height = probe_image(upload.source, settings.DEFECTBENCH_MAX_IMAGE_PIXELS, verify=False)
        except CheckError as error:
            problems.append(f"{upload.name}: {error}")
            continue
        pixels += width * height
    if problems:
        raise DeployRefused(*problems)
    budget = settings.DEFECTBENCH_INSPECT_MAX_PIXELS_PER_REQUEST
    if pixels > budget:
        count = f"{len(uploads)} image{'s' if len(uploads) != 1 else ''}"
        raise DeployRefused(f"{count} of {pixels:,} pixels in all, more than the limit of {budget:,} "
                            "pixels per request (DEFECTBENCH_INSPECT_MAX_PIXELS_PER_REQUEST): send fewer or "
                            "smaller images at once, or use a batch job.")


def inspect_uploads(product: Product, uploads: list[Upload], user) -> InspectionJob:
    """Inspect uploaded images with the product's deployed model, one image at a time; every
    header is checked first (pixel limits, readable), so a refused request decodes nothing, and
    nothing is kept on refusal."""
    deployment = current(product)
    if deployment is None:
        raise DeployRefused(f"No model is deployed for {product.name}: an admin deploys one from the product's "
                            "benchmark page first.")
    if not uploads:
        raise DeployRefused("No images were sent.")
    if len(uploads) > MAX_UPLOAD_IMAGES:
        raise DeployRefused(f"{len(uploads)} images at once; at most {MAX_UPLOAD_IMAGES} (use a batch job for more).")
    from annotator.services.image_checks import CheckError, pillow_limits

    with pillow_limits(settings.DEFECTBENCH_MAX_IMAGE_PIXELS):
        _check_uploads(uploads)
        inspector = inspector_for(deployment)
        now = timezone.now()
        job = InspectionJob.objects.create(product=product, deployment=deployment, kind=InspectionJob.Kind.UPLOAD,
                                           created_by=user, status=Status.RUNNING, total=len(uploads),
                                           started_at=now, heartbeat_at=now)
        job.artifacts_path = f"inspections/{job.pk}"
        results, problems = [], []
        try:
            with Heartbeat(_inspection_beat(job.pk), f"inspection-{job.pk}"):
                for index, upload in enumerate(uploads):
                    try:
                        results.append(_inspect_file(job, inspector, index, upload.name, upload.source))
                    except CheckError as error:  # a file whose header was fine but whose pixels are not
                        problems.append(f"{upload.name}: {error}")
            if problems:
                raise DeployRefused(*problems)
        except Exception:
            shutil.rmtree(job.artifacts_root, ignore_errors=True)
            job.delete()
            raise
    finish_inspection_job(job, Status.SUCCEEDED, artifacts_path=job.artifacts_path, results=results, progress=100.0,
                          inference_ms_per_image=float(np.mean([r["inference_ms"] for r in results])))
    job.refresh_from_db()
    return job


def resolve_job_file(job: InspectionJob, relpath: str) -> Path | None:
    """A file inside the job's folder (links resolved, nothing outside), or None."""
    if not relpath or relpath.startswith(("/", "\\")) or ".." in Path(relpath).parts or "\x00" in relpath:
        return None
    base = job.artifacts_root.resolve()
    target = (base / relpath).resolve()
    return target if target.is_relative_to(base) and target.is_file() else None


# ---- batch jobs ------------------------------------------------------------------------------------

def _batch_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and p.resolve().is_relative_to(folder))


def start_batch(product: Product, user, *, folder: str | None = None, zip_file=None) -> InspectionJob:
    """A batch job over a folder inside the data roots or an uploaded zip; queued for a worker."""
    from annotator.services.importing import ImportFailed, _extract, _plan_extraction, resolve_dataset_root

    deployment = current(product)
    if deployment is None:
        raise DeployRefused(f"No model is deployed for {product.name}.")
    if bool(folder) == bool(zip_file):
        raise DeployRefused("Give either a folder or a zip file.")
    job = InspectionJob(product=product, deployment=deployment, kind=InspectionJob.Kind.BATCH, created_by=user)
    if folder:
        try:
            root = resolve_dataset_root(folder)
        except ImportFailed as error:
            raise DeployRefused(*error.errors) from None
        found = _batch_images(root)
        job.source = str(root)
    with transaction.atomic():
        job.save()
        job.artifacts_path = f"inspections/{job.pk}"
        if zip_file is not None:
            target = inspection_inputs(job)
            try:
                with zipfile.ZipFile(zip_file) as archive:
                    _extract(archive, _plan_extraction(archive, target), target)
            except ImportFailed as error:
                shutil.rmtree(job.artifacts_root, ignore_errors=True)
                raise DeployRefused(*error.errors) from None
            except zipfile.BadZipFile:
                shutil.rmtree(job.artifacts_root, ignore_errors=True)
                raise DeployRefused("The file is not a zip archive.") from None
            found = _batch_images(target.resolve())
            job.source = str(target.resolve())
        if not found:
            shutil.rmtree(job.artifacts_root, ignore_errors=True)
            raise DeployRefused(f"No images ({', '.join(IMAGE_SUFFIXES)}) found in {folder or 'the zip'}.")
        if len(found) > MAX_BATCH_IMAGES:
            shutil.rmtree(job.artifacts_root, ignore_errors=True)
            raise DeployRefused(f"{len(found)} images; a batch takes at most {MAX_BATCH_IMAGES}.")
        job.total = len(found)
        job.save()
        transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id: int) -> None:
    from inference.tasks import inspect_batch

    result = inspect_batch.delay(job_id)
    InspectionJob.objects.filter(pk=job_id).update(celery_task_id=result.id or "")


# ---- the job's life: every change of an inspection job's status goes through these --------------------

def inspection_inputs(job: InspectionJob) -> Path:
    """Where a zip batch's images are unpacked. A folder batch reads its images where they are (in
    the data roots), so nothing of a user's own is ever here."""
    return job.artifacts_root / INPUT_FOLDER


def discard_inspection_inputs(job: InspectionJob) -> None:
    """Delete the images a job was given to inspect (a zip batch's unpacked folder: up to
    DEFECTBENCH_MAX_UNPACKED_BYTES), keeping the result files users download (the per-image PNGs;
    the CSV comes from the row). Called by :func:`finish_inspection_job` whenever a job reaches a
    terminal state, whoever settles it (the worker, a cancel, the sweep of lost workers);
    idempotent, and never follows a link out of the media root."""
    folder = inspection_inputs(job)
    media = Path(settings.MEDIA_ROOT).resolve()
    if folder.is_dir() and not folder.is_symlink() and folder.resolve().is_relative_to(media):
        shutil.rmtree(folder, ignore_errors=True)


def finish_inspection_job(job: InspectionJob, status: str, error: str = "", *, if_still_silent: bool = False,
                          **values) -> bool:
    """End a queued or running job as ``status`` (succeeded, failed, cancelled) and discard its
    inputs; a job that has ended already is left as it is. ``if_still_silent``: only if its
    heartbeat is still the one read into ``job`` (a worker that beat since is alive after all).
    Returns whether this call ended it."""
    rows = InspectionJob.objects.filter(pk=job.pk, status__in=ACTIVE_STATUSES)
    if if_still_silent:
        rows = rows.filter(status=Status.RUNNING, heartbeat_at=job.heartbeat_at)
    ended = bool(rows.update(status=status, error=error, finished_at=timezone.now(), **values))
    if ended:
        # The inputs go first: they are the disk a job holds, and must go however the rest fares.
        discard_inspection_inputs(job)
        record_verdicts(job.pk)
    return ended


def record_verdicts(job_id: int) -> int:
    """Write the audit rows of a job's inspected images (those without a read error), once: a
    second call (a redelivered task, the sweep after a cancel) adds nothing. Returns rows added."""
    job = InspectionJob.objects.select_related("created_by").get(pk=job_id)
    from django.utils.dateparse import parse_datetime

    user_name = job.created_by.get_username() if job.created_by else ""
    rows = [InspectionVerdict(
        job=job, index=entry["index"], product_id=job.product_id, deployment_id=job.deployment_id,
        name=entry["name"][:1024], defective=bool(entry["defective"]), score=float(entry["score"]),
        image_threshold=float(entry["image_threshold"]), technique=entry["technique"],
        pixel_threshold=float(entry["pixel_threshold"]), defect_area_fraction=float(entry["defect_area_fraction"]),
        width=int(entry["width"]), height=int(entry["height"]),
        package_sha256=entry.get("package_sha256", ""), engine_version=entry.get("engine_version", ""),
        inspected_by=job.created_by, inspected_by_name=user_name,
        inspected_at=parse_datetime(entry["inspected_at"]) if entry.get("inspected_at") else job.finished_at,
    ) for entry in job.results if "error" not in entry and "index" in entry]
    from inference.services.feedback import count_inspected

    with transaction.atomic():
        # The job's row lock: two settlers of one job (the worker, the sweep) write its rows once.
        InspectionJob.objects.select_for_update().filter(pk=job_id).first()
        before = InspectionVerdict.objects.filter(job=job).count()
        InspectionVerdict.objects.bulk_create(rows, ignore_conflicts=True)
        added = InspectionVerdict.objects.filter(job=job).count() - before
        if added and not before:
            count_inspected(job.deployment_id, rows)
    return added


def _inspection_beat(job_id: int):
    def beat(now):
        InspectionJob.objects.filter(pk=job_id, status=Status.RUNNING).update(heartbeat_at=now)
    return beat


def _end_dead_job(job: InspectionJob) -> bool:
    """A running job whose worker stopped responding: cancelled if that was asked, else failed."""
    if job.cancel_requested:
        return finish_inspection_job(job, Status.CANCELLED, if_still_silent=True)
    return finish_inspection_job(job, Status.FAILED, worker_lost(job.heartbeat_at), if_still_silent=True)


def cancel_job(job: InspectionJob) -> InspectionJob:
    """Queued: cancelled at once. Running: stops after its current group of images, or at once when
    its worker stopped responding. Ended: ``NothingToCancel`` saying how it ended."""
    job.refresh_from_db()
    if job.status in TERMINAL_STATUSES:
        raise nothing_to_cancel(f"Inspection {job.pk}", job.get_status_display())
    InspectionJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    job.refresh_from_db()
    if job.status == Status.QUEUED:
        finish_inspection_job(job, Status.CANCELLED)
    elif job.status == Status.RUNNING and is_stale(job.heartbeat_at):
        _end_dead_job(job)
    job.refresh_from_db()
    return job


BATCH_CHUNK = 8  # images between two looks at the cancel flag (and progress updates)


def settle_stale_inspections(now=None) -> int:
    """End every running job whose heartbeat is older than the stale window (the periodic sweep)."""
    stale = InspectionJob.objects.filter(stale_filter(stale_before(now)), status=Status.RUNNING)
    return sum(_end_dead_job(job) for job in stale)


def _stop_asked(job_id: int) -> bool:
    """Cancel was asked, or the job was ended meanwhile (by the sweep or a cancel that took it for dead)."""
    status, cancel = InspectionJob.objects.filter(pk=job_id).values_list("status", "cancel_requested").first()
    return cancel or status != Status.RUNNING


def execute_batch(job_id: int) -> str:
    """Inspect a batch job's images one at a time (idempotent: a finished job is left alone, a
    restarted one redone); the job's inputs are discarded whichever way it ends."""
    with transaction.atomic():
        job = InspectionJob.objects.select_for_update().select_related("deployment__product_run").filter(pk=job_id).first()
        if job is None:
            return "missing"
        if job.status in TERMINAL_STATUSES:
            discard_inspection_inputs(job)  # settled elsewhere (a cancel while queued): nothing left behind
            return job.status
        if job.cancel_requested:
            finish_inspection_job(job, Status.CANCELLED)
            return Status.CANCELLED
        job.status, job.progress, job.results, job.error = Status.RUNNING, 0.0, [], ""
        job.started_at = job.heartbeat_at = timezone.now()
        job.save(update_fields=["status", "progress", "results", "error", "started_at", "heartbeat_at"])
    # A thread beats while one group of images takes long (loading the model, large images).
    with Heartbeat(_inspection_beat(job.pk), f"inspection-{job.pk}"):
        return _run_batch(job)


def _run_batch(job: InspectionJob) -> str:
    root = Path(job.source)
    results: list[dict] = []
    try:
        from annotator.services.image_checks import CheckError, pillow_limits

        paths = _batch_images(root)
        inspector = inspector_for(job.deployment)
        with pillow_limits(settings.DEFECTBENCH_MAX_IMAGE_PIXELS):
            for index, path in enumerate(paths):
                if index % BATCH_CHUNK == 0 and index:
                    InspectionJob.objects.filter(pk=job.pk).update(progress=100.0 * index / len(paths),
                                                                  results=results, heartbeat_at=timezone.now())
                    if _stop_asked(job.pk):
                        finish_inspection_job(job, Status.CANCELLED, results=results)
                        return Status.CANCELLED
                name = path.relative_to(root).as_posix()
                try:
                    results.append(_inspect_file(job, inspector, index, name, path))
                except (CheckError, OSError) as error:
                    results.append({"name": name, "error": str(error)})
    except Exception as error:  # noqa: BLE001 - the job is failed with the reason, never left running
        logger.exception("inspection job %s failed", job.pk)
        finish_inspection_job(job, Status.FAILED, f"{type(error).__name__}: {error}", results=results)
        return Status.FAILED
    times = [r["inference_ms"] for r in results if "inference_ms" in r]
    finish_inspection_job(job, Status.SUCCEEDED, progress=100.0, results=results,
                          inference_ms_per_image=float(np.mean(times)) if times else None)
    return Status.SUCCEEDED


def results_csv(job: InspectionJob) -> str:
    """The job's results, one row per image. File names (and read errors) are user text: a cell a
    spreadsheet would run as a formula is written as text, as in every CSV export."""
    from annotator.services.label_csv import safe_cell

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS + ("error",))
    for r in job.results:
        if "error" in r:
            writer.writerow([safe_cell(r["name"])] + [""] * (len(CSV_FIELDS) - 1) + [safe_cell(r["error"])])
            continue
        largest = r["components"][0] if r["components"] else None
        writer.writerow([safe_cell(r["name"]), r["verdict"], f"{r['score']:.6g}", f"{r['image_threshold']:.6g}",
                         r["technique"], f"{r['pixel_threshold']:.6g}", f"{r['defect_area_fraction']:.6f}",
                         len(r["components"]),
                         " ".join(map(str, largest["bbox"])) if largest else "",
                         f"{largest['peak']:.6g}" if largest else "", f"{r['inference_ms']:.1f}", ""])
    return out.getvalue()
