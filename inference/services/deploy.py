"""Deploying a run's model as a product's inspector, and inspecting new images with it.

* :func:`deploy` records a decision (run + threshold technique), :func:`rollback` repeats an
  earlier one; the history is the product's ``Deployment`` rows, newest first.
* :func:`inspect_uploads` checks uploaded images (bytes and pixel limits, readable) and inspects
  them at once; :func:`start_batch` / :func:`execute_batch` do a folder or zip as a Celery job.
  Both keep one ``InspectionJob`` row with per-image results and PNGs (the input at the model's
  size, the anomaly map as 8-bit grey over ``[map_low, map_high]``, the predicted mask).
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
from inference.models import Deployment, InspectionJob, ProductRun, Status, TERMINAL_STATUSES

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_UPLOAD_IMAGES = 32  # per API call / page drop; a batch job takes folders and zips of any size
MAX_BATCH_IMAGES = 10_000
CACHE_SIZE = 2
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
    from inference.engine.package import PackageError, load_package

    root = package_root(deployment.product_run)
    if root is None:
        raise DeployRefused("The deployed run kept no model package.")
    key = str(root)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        try:
            inspector = load_package(root, device="cpu")
        except PackageError as error:
            # Reviewers read this: the package's files by their place in the data roots only.
            logger.warning("Deployment %s: cannot load %s: %s", deployment.pk, root, error)
            raise DeployRefused(f"The deployed model cannot be loaded: {without_server_paths(str(error))}") from error
        _cache[key] = inspector
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return inspector


# ---- inspection ------------------------------------------------------------------------------------

@dataclass
class Upload:
    name: str
    data: bytes


def read_uploads(files) -> list[Upload]:
    """Uploaded files (``.name``, ``.size``, ``.read()``) as :class:`Upload`; any file over the
    upload limit is refused before a byte of it is read."""
    limit = settings.DEFECTBENCH_MAX_UPLOAD_BYTES
    big = [f"{f.name}: {f.size:,} bytes, more than the limit of {limit:,} (DEFECTBENCH_MAX_UPLOAD_BYTES)"
           for f in files if f.size > limit]
    if big:
        raise DeployRefused(*big)
    if len(files) > MAX_UPLOAD_IMAGES:
        raise DeployRefused(f"{len(files)} images at once; at most {MAX_UPLOAD_IMAGES} (use a batch job for more).")
    return [Upload(f.name, f.read()) for f in files]


def _decode(name: str, data: bytes):
    from annotator.services.image_checks import CheckError, _open_checked

    try:
        return _open_checked(data, settings.DEFECTBENCH_MAX_IMAGE_PIXELS)
    except CheckError as error:
        raise DeployRefused(f"{name}: {error}") from None


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
    stem = f"{index:05d}"
    _png(prepared, folder / f"{stem}_image.png")
    _png(grey, folder / f"{stem}_map.png")
    _png((result.predicted_mask * 255).astype(np.uint8), folder / f"{stem}_mask.png")
    entry = result.to_json()
    entry.update(index=index, map_low=low, map_high=high, files={
        "image": f"{stem}_image.png", "map": f"{stem}_map.png", "mask": f"{stem}_mask.png"})
    return entry


def _inspect_images(job: InspectionJob, inspector, named_images, offset: int = 0) -> list[dict]:
    from inference.engine.package import prepare_image

    names = [n for n, _ in named_images]
    results = inspector.inspect([im for _, im in named_images], names=names, technique=job.deployment.technique)
    return [_write_result(job, offset + k, prepare_image(im, inspector.image_size)[0], r)
            for k, ((_, im), r) in enumerate(zip(named_images, results))]


def inspect_uploads(product: Product, uploads: list[Upload], user) -> InspectionJob:
    """Inspect uploaded images at once with the product's deployed model; nothing is kept on refusal."""
    deployment = current(product)
    if deployment is None:
        raise DeployRefused(f"No model is deployed for {product.name}: an admin deploys one from the product's "
                            "benchmark page first.")
    if not uploads:
        raise DeployRefused("No images were sent.")
    if len(uploads) > MAX_UPLOAD_IMAGES:
        raise DeployRefused(f"{len(uploads)} images at once; at most {MAX_UPLOAD_IMAGES} (use a batch job for more).")
    from annotator.services.image_checks import pillow_limits

    problems, images = [], []
    with pillow_limits(settings.DEFECTBENCH_MAX_IMAGE_PIXELS):
        for upload in uploads:
            if len(upload.data) > settings.DEFECTBENCH_MAX_UPLOAD_BYTES:
                problems.append(f"{upload.name}: {len(upload.data):,} bytes, more than the limit of "
                                f"{settings.DEFECTBENCH_MAX_UPLOAD_BYTES:,}")
                continue
            try:
                images.append((upload.name, _decode(upload.name, upload.data)))
            except DeployRefused as error:
                problems += error.messages
    if problems:
        raise DeployRefused(*problems)
    inspector = inspector_for(deployment)
    job = InspectionJob.objects.create(product=product, deployment=deployment, kind=InspectionJob.Kind.UPLOAD,
                                       created_by=user, status=Status.RUNNING, total=len(images))
    job.artifacts_path = f"inspections/{job.pk}"
    try:
        results = _inspect_images(job, inspector, images)
    except Exception:
        shutil.rmtree(job.artifacts_root, ignore_errors=True)
        job.delete()
        raise
    job.results = results
    job.inference_ms_per_image = float(np.mean([r["inference_ms"] for r in results]))
    job.status, job.progress, job.finished_at = Status.SUCCEEDED, 100.0, timezone.now()
    job.save()
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
            target = job.artifacts_root / "input"
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


def cancel_job(job: InspectionJob) -> InspectionJob:
    if job.status in TERMINAL_STATUSES:
        return job
    InspectionJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    InspectionJob.objects.filter(pk=job.pk, status=Status.QUEUED).update(
        status=Status.CANCELLED, finished_at=timezone.now())
    job.refresh_from_db()
    return job


BATCH_CHUNK = 8


def execute_batch(job_id: int) -> str:
    """Inspect a batch job's images (idempotent: a finished job is left alone, a restarted one redone)."""
    with transaction.atomic():
        job = InspectionJob.objects.select_for_update().select_related("deployment__product_run").filter(pk=job_id).first()
        if job is None:
            return "missing"
        if job.status in TERMINAL_STATUSES:
            return job.status
        if job.cancel_requested:
            job.status, job.finished_at = Status.CANCELLED, timezone.now()
            job.save(update_fields=["status", "finished_at"])
            return job.status
        job.status, job.progress, job.results, job.error = Status.RUNNING, 0.0, [], ""
        job.save(update_fields=["status", "progress", "results", "error"])
    root = Path(job.source)
    paths = _batch_images(root)
    results: list[dict] = []
    try:
        from annotator.services.image_checks import CheckError, _open_checked, pillow_limits

        inspector = inspector_for(job.deployment)
        with pillow_limits(settings.DEFECTBENCH_MAX_IMAGE_PIXELS):
            for start in range(0, len(paths), BATCH_CHUNK):
                if InspectionJob.objects.filter(pk=job.pk, cancel_requested=True).exists():
                    InspectionJob.objects.filter(pk=job.pk).update(
                        status=Status.CANCELLED, finished_at=timezone.now(), results=results)
                    return Status.CANCELLED
                named, failed = [], []
                for p in paths[start:start + BATCH_CHUNK]:
                    name = p.relative_to(root).as_posix()
                    try:  # checked and decoded (upright, 8-bit RGB) as uploads and dataset imports are
                        named.append((name, _open_checked(p.read_bytes(), settings.DEFECTBENCH_MAX_IMAGE_PIXELS)))
                    except (CheckError, OSError) as error:
                        failed.append({"name": name, "error": str(error)})
                results += _inspect_images(job, inspector, named, offset=len(results) + len(failed))
                results += failed
                InspectionJob.objects.filter(pk=job.pk).update(
                    progress=100.0 * min(start + BATCH_CHUNK, len(paths)) / len(paths), results=results)
    except Exception as error:  # noqa: BLE001 - the job is failed with the reason, never left running
        logger.exception("inspection job %s failed", job.pk)
        InspectionJob.objects.filter(pk=job.pk).update(status=Status.FAILED, error=f"{type(error).__name__}: {error}",
                                                      finished_at=timezone.now(), results=results)
        return Status.FAILED
    times = [r["inference_ms"] for r in results if "inference_ms" in r]
    InspectionJob.objects.filter(pk=job.pk).update(
        status=Status.SUCCEEDED, progress=100.0, finished_at=timezone.now(), results=results,
        inference_ms_per_image=float(np.mean(times)) if times else None)
    return Status.SUCCEEDED


def results_csv(job: InspectionJob) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS + ("error",))
    for r in job.results:
        if "error" in r:
            writer.writerow([r["name"]] + [""] * (len(CSV_FIELDS) - 1) + [r["error"]])
            continue
        largest = r["components"][0] if r["components"] else None
        writer.writerow([r["name"], r["verdict"], f"{r['score']:.6g}", f"{r['image_threshold']:.6g}", r["technique"],
                         f"{r['pixel_threshold']:.6g}", f"{r['defect_area_fraction']:.6f}", len(r["components"]),
                         " ".join(map(str, largest["bbox"])) if largest else "",
                         f"{largest['peak']:.6g}" if largest else "", f"{r['inference_ms']:.1f}", ""])
    return out.getvalue()
