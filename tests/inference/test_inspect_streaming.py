"""Inspection holds one image at a time and leaves nothing of its inputs behind.

* The inspect API checks every file's header against the per-image and per-request pixel limits
  before it decodes anything, reads uploads a block at a time, and decodes, scores and lets go of
  each image before the next.
* A batch job's unpacked zip is deleted when the job ends, however it ends; its results stay.
"""
import io
import struct
import weakref
import zipfile
import zlib

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image
from rest_framework.test import APIClient

from annotator.services import image_checks
from inference.models import InspectionJob, Status
from inference.services import deploy

pytestmark = pytest.mark.django_db


def _png_bytes(width: int, height: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, "PNG")
    return buffer.getvalue()


def _one_chunk_png(width: int, height: int, seed: int) -> bytes:
    """A PNG whose pixels are one IDAT chunk (as large as the file): whoever reads a chunk whole
    reads the whole upload."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = np.random.default_rng(seed).integers(0, 256, (height, width * 3), dtype=np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 1))
            + chunk(b"IEND", b""))


class BlockReader(io.BytesIO):
    """An uploaded file that remembers the largest single read of it."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name, self.size, self.largest_read = name, len(data), 0

    def read(self, size=-1):
        data = super().read(size)
        self.largest_read = max(self.largest_read, len(data))
        return data


def _files(images: dict[str, bytes]) -> list:
    files = []
    for name, data in images.items():
        handle = io.BytesIO(data)
        handle.name = name
        files.append(handle)
    return files


def test_inspection_streams_and_leaves_no_inputs(padim_part, admin_account, reviewer_account, settings,
                                                monkeypatch, tmp_path, client):
    """One fitted model serves both checks (a fit costs seconds)."""
    deploy.deploy(padim_part, padim_part.report["selection"]["chosen"], admin_account)
    _upload_streams_within_a_pixel_budget(padim_part, reviewer_account, settings, monkeypatch)
    _zip_inputs_are_deleted_however_the_job_ends(padim_part, reviewer_account, tmp_path, client, monkeypatch)


def _upload_streams_within_a_pixel_budget(padim_part, reviewer_account, settings, monkeypatch):
    api = APIClient()
    api.force_authenticate(reviewer_account)
    url = reverse("api-inspect", args=[padim_part.product_id])
    images = {f"part-{k}.png": _png_bytes(300, 200, k) for k in range(4)}  # 60,000 pixels each

    decoded, alive_at_each_decode, sources = [], [], []
    real_decode = image_checks.decode_image

    def tracked_decode(source):
        alive_at_each_decode.append(sum(ref() is not None for ref in decoded))
        sources.append(type(source).__name__)
        picture = real_decode(source)
        decoded.append(weakref.ref(picture))
        return picture

    monkeypatch.setattr(image_checks, "decode_image", tracked_decode)

    # Over the per-request budget: refused from the headers alone, naming the limit; nothing decoded or kept.
    settings.DEFECTBENCH_INSPECT_MAX_PIXELS_PER_REQUEST = 3 * 60_000 + 1
    refused = api.post(url, {"images": _files(images)}, format="multipart")
    assert refused.status_code == 400, refused.content
    detail = refused.json()["detail"]
    assert "4 images of 240,000 pixels in all" in detail and "limit of 180,001" in detail
    assert "DEFECTBENCH_INSPECT_MAX_PIXELS_PER_REQUEST" in detail
    assert decoded == [] and not InspectionJob.objects.exists()

    # Within it: every image decoded after the one before was let go. (The uploads lie in Django's
    # temporary files, as those of any request over FILE_UPLOAD_MAX_MEMORY_SIZE do.)
    settings.DEFECTBENCH_INSPECT_MAX_PIXELS_PER_REQUEST = 4 * 60_000
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    accepted = api.post(url, {"images": _files(images)}, format="multipart")
    assert accepted.status_code == 201, accepted.content
    body = accepted.json()
    assert [r["name"] for r in body["results"]] == list(images)
    assert all(r["width"] == 300 and r["height"] == 200 for r in body["results"])
    assert len(decoded) == 4 and alive_at_each_decode == [0, 0, 0, 0]
    assert sources == ["TemporaryUploadedFile"] * 4

    # An upload is read where it lies, a block at a time: never whole, even when its pixels are
    # a single PNG chunk as large as the file.
    monkeypatch.setattr(image_checks, "decode_image", real_decode)
    settings.DEFECTBENCH_INSPECT_MAX_PIXELS_PER_REQUEST = 1_200_000
    upload = BlockReader(_one_chunk_png(1200, 1000, 7), "one-chunk.png")
    assert upload.size > 3_000_000
    job = deploy.inspect_uploads(padim_part.product, deploy.read_uploads([upload]), reviewer_account)
    assert job.status == Status.SUCCEEDED and job.results[0]["width"] == 1200
    assert upload.largest_read <= 1 << 20


def _zip_of_images(tmp_path, n: int = 3):
    archive = tmp_path / f"batch-{n}.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for k in range(n):
            z.writestr(f"line/{k}.png", _png_bytes(80, 60, k))
    return archive


def _zip_job(product, user, tmp_path, n: int = 3) -> InspectionJob:
    job = deploy.start_batch(product, user, zip_file=open(_zip_of_images(tmp_path, n), "rb"))
    assert len(list(deploy.inspection_inputs(job).rglob("*.png"))) == n  # unpacked, waiting for the worker
    return job


def _zip_inputs_are_deleted_however_the_job_ends(padim_part, reviewer_account, tmp_path, client, monkeypatch):
    product = padim_part.product
    client.force_login(reviewer_account)

    succeeded = _zip_job(product, reviewer_account, tmp_path)
    assert deploy.execute_batch(succeeded.pk) == Status.SUCCEEDED
    succeeded.refresh_from_db()
    assert not deploy.inspection_inputs(succeeded).exists()
    assert [r["name"] for r in succeeded.results] == ["line/0.png", "line/1.png", "line/2.png"]
    for entry in succeeded.results:  # what users download is still there
        for relpath in entry["files"].values():
            assert client.get(reverse("inspection-file", args=[succeeded.pk, relpath])).status_code == 200
    assert client.get(reverse("inspection-csv", args=[succeeded.pk])).status_code == 200

    cancelled_while_queued = _zip_job(product, reviewer_account, tmp_path)
    deploy.cancel_job(cancelled_while_queued)
    assert deploy.execute_batch(cancelled_while_queued.pk) == Status.CANCELLED
    assert not deploy.inspection_inputs(cancelled_while_queued).exists()

    cancelled_midway = _zip_job(product, reviewer_account, tmp_path, n=deploy.BATCH_CHUNK + 2)
    real_inspect = deploy._inspect_file

    def cancel_after_first(job, *args, **kwargs):
        InspectionJob.objects.filter(pk=job.pk).update(cancel_requested=True)
        return real_inspect(job, *args, **kwargs)

    monkeypatch.setattr(deploy, "_inspect_file", cancel_after_first)
    assert deploy.execute_batch(cancelled_midway.pk) == Status.CANCELLED
    assert not deploy.inspection_inputs(cancelled_midway).exists()
    monkeypatch.setattr(deploy, "_inspect_file", real_inspect)

    failed = _zip_job(product, reviewer_account, tmp_path)

    def model_gone(deployment):
        raise deploy.DeployRefused("The deployed model cannot be loaded: gone")

    monkeypatch.setattr(deploy, "inspector_for", model_gone)
    assert deploy.execute_batch(failed.pk) == Status.FAILED
    failed.refresh_from_db()
    assert "cannot be loaded" in failed.error and not deploy.inspection_inputs(failed).exists()

    # The function other settlers (a cancel of a running job, the sweep of lost workers) call.
    stale = _zip_job(product, reviewer_account, tmp_path)
    deploy.discard_inspection_inputs(stale)
    deploy.discard_inspection_inputs(stale)  # idempotent
    assert not deploy.inspection_inputs(stale).exists()
