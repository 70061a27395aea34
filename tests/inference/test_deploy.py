"""Deploying a run's model and inspecting new images with it: packages kept by runs, roles,
history and rollback, the inspect API (limits, files), batch jobs and their CSV."""
import csv
import io
import zipfile

import pytest
from django.urls import reverse
from PIL import Image
from rest_framework.test import APIClient

from inference.models import InspectionJob, Status
from inference.services import deploy

pytestmark = pytest.mark.django_db


def _client(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def _report_images(part, n=3):
    """The first ``n`` anomalous and one good test-part image of the run: (path, per-image entry)."""
    by_key = {str(s.image_id): s.path for s in part.samples.all()}
    entries = part.report["per_image"]
    chosen = [e for e in entries if e["anomalous"]][: n - 1] + [e for e in entries if not e["anomalous"]][:1]
    return [(by_key[e["key"]], e) for e in chosen]


def test_deploy_inspect_and_batch(padim_part, admin_account, reviewer_account, annotator_account, settings, client,
                                  tmp_path):
    """One run serves every check (each run costs tens of seconds)."""
    none = _client(reviewer_account).post(reverse("api-inspect", args=[padim_part.product_id]),
                                          {"images": [open(_report_images(padim_part)[0][0], "rb")]}, format="multipart")
    assert none.status_code == 400 and "No model is deployed" in none.json()["detail"]
    _deploy_then_roll_back(padim_part, admin_account, reviewer_account, annotator_account)
    _inspect_api(padim_part, admin_account, reviewer_account, annotator_account, settings, client)
    _batch_job(padim_part, admin_account, reviewer_account, client, tmp_path, settings)
    _pages(padim_part, admin_account, reviewer_account, annotator_account, client)


def _pages(part, admin_account, reviewer_account, annotator_account, client):
    inspect_page = reverse("inspect-page", args=[part.product_id])
    deploy_url = reverse("benchmark-deploy", args=[part.product_id])
    client.force_login(annotator_account)
    assert client.get(inspect_page).status_code == 403
    assert client.post(deploy_url, {"run": part.run_id, "technique": "f1"}).status_code == 403
    client.force_login(reviewer_account)
    html = client.get(inspect_page).content.decode()
    assert "Deployed:" in html and "Deployment history" in html and "Roll back to this" not in html
    assert client.post(deploy_url, {"run": part.run_id, "technique": "f1"}).status_code == 403
    client.force_login(admin_account)
    assert "Deploy this run" in client.get(reverse("benchmark-detail", args=[part.run_id])).content.decode()
    assert "Deploy this recommendation" in client.get(reverse("benchmark-product", args=[part.product_id])).content.decode()
    before = deploy.current(part.product)
    response = client.post(deploy_url, {"run": part.run_id, "technique": "f1", "note": "from the page"})
    assert response.status_code == 302 and response["Location"] == inspect_page
    now = deploy.current(part.product)
    assert now.pk != before.pk and now.technique == "f1" and now.note == "from the page"
    html = client.get(inspect_page).content.decode()
    assert "Roll back to this" in html
    client.post(reverse("deployment-rollback", args=[part.product_id, before.pk]))
    assert deploy.current(part.product).rollback_of_id == before.pk


def _deploy_then_roll_back(padim_part, admin_account, reviewer_account, annotator_account):
    part = padim_part
    assert part.package_path and (deploy.package_root(part) / "manifest.json").is_file()
    manifest = deploy.package_manifest(part)
    assert manifest["source"]["run"] == part.run_id and manifest["model"]["name"] == "padim"
    url = reverse("api-deployments", args=[part.product_id])
    chosen = part.report["selection"]["chosen"]

    assert _client(reviewer_account).post(url, {"run": part.run_id}, format="json").status_code == 403
    assert _client(annotator_account).post(url, {"run": part.run_id}, format="json").status_code == 403
    refused = _client(admin_account).post(url, {"run": part.run_id + 100}, format="json")
    assert refused.status_code == 400 and "did not cover widget" in str(refused.json())
    with pytest.raises(deploy.DeployRefused, match="has no fitted 'bogus' threshold"):
        deploy.deploy(part, "bogus", admin_account)

    first = _client(admin_account).post(url, {"run": part.run_id}, format="json")
    assert first.status_code == 201, first.content
    assert first.json()["current"]["technique"] == chosen and first.json()["current"]["deployed_by"] == "ada"
    other = next(t for t in deploy.deployable_techniques(part) if t != chosen)
    second = _client(admin_account).post(url, {"run": part.run_id, "technique": other}, format="json").json()
    assert second["current"]["technique"] == other and len(second["history"]) == 2

    first_id = first.json()["current"]["id"]
    back = _client(admin_account).post(reverse("api-deployment-rollback", args=[part.product_id, first_id]))
    assert back.status_code == 201
    body = back.json()
    assert body["current"]["technique"] == chosen and body["current"]["rollback_of"] == first_id
    assert len(body["history"]) == 3  # nothing is rewritten: the rollback is a new row
    again = _client(admin_account).post(reverse("api-deployment-rollback", args=[part.product_id, body["current"]["id"]]))
    assert again.status_code == 400 and "in use already" in again.json()["detail"]
    assert _client(annotator_account).get(url).json()["current"]["id"] == body["current"]["id"]


def _inspect_api(padim_part, admin_account, reviewer_account, annotator_account, settings, client):
    part = padim_part
    inspect_url = reverse("api-inspect", args=[part.product_id])
    images = _report_images(part)

    def upload():
        return {"images": [open(path, "rb") for path, _ in images]}

    deploy.deploy(part, part.report["selection"]["chosen"], admin_account)

    assert _client(annotator_account).post(inspect_url, upload(), format="multipart").status_code == 403
    assert APIClient().post(inspect_url, upload(), format="multipart").status_code in (401, 403)
    response = _client(reviewer_account).post(inspect_url, upload(), format="multipart")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "succeeded" and body["inference_ms_per_image"] > 0
    for (_, entry), result in zip(images, body["results"]):
        assert result["score"] == pytest.approx(entry["score"], rel=1e-4)
        assert (result["verdict"] == "defective") == entry["predicted_anomalous"]
        assert result["image_threshold"] == part.report["image_decision"]["threshold"]
        for c in result["components"]:
            assert len(c["bbox"]) == 4 and c["peak"] >= result["pixel_threshold"]
    urls = body["results"][0]["urls"]
    client.force_login(reviewer_account)
    map_png = client.get(urls["map"])
    assert map_png.status_code == 200 and Image.open(io.BytesIO(b"".join(map_png.streaming_content))).mode == "L"
    job_id = body["id"]
    assert client.get(reverse("inspection-file", args=[job_id, "../../secret"])).status_code == 404
    client.force_login(annotator_account)
    assert client.get(urls["mask"]).status_code == 403

    # Limits: a too-large image or an unreadable file is refused with the file's name; nothing is kept.
    jobs = InspectionJob.objects.count()
    settings.DEFECTBENCH_MAX_IMAGE_PIXELS = 1000
    big = _client(reviewer_account).post(inspect_url, upload(), format="multipart")
    assert big.status_code == 400 and "decompression bomb" in big.json()["detail"]
    settings.DEFECTBENCH_MAX_IMAGE_PIXELS = 40_000_000
    settings.DEFECTBENCH_MAX_UPLOAD_BYTES = 100
    heavy = _client(reviewer_account).post(inspect_url, upload(), format="multipart")
    assert heavy.status_code == 400 and "more than the limit of 100" in heavy.json()["detail"]
    settings.DEFECTBENCH_MAX_UPLOAD_BYTES = 2 * 1024**3
    junk = io.BytesIO(b"not an image")
    junk.name = "junk.png"
    bad = _client(reviewer_account).post(inspect_url, {"images": [junk]}, format="multipart")
    assert bad.status_code == 400 and "junk.png" in bad.json()["detail"]
    assert InspectionJob.objects.count() == jobs


def _batch_job(padim_part, admin_account, reviewer_account, client, tmp_path, settings):
    part = padim_part
    deploy.deploy(part, part.report["selection"]["chosen"], admin_account)
    folder = tmp_path / "new"
    folder.mkdir()
    images = _report_images(part)
    for k, (path, _) in enumerate(images):
        Image.open(path).save(folder / f"{k}.png")
    (folder / "broken.png").write_bytes(b"nope")
    settings.DEFECTBENCH_DATA_ROOTS = [*settings.DEFECTBENCH_DATA_ROOTS, str(tmp_path)]
    with pytest.raises(deploy.DeployRefused, match="outside the allowed data roots"):
        deploy.start_batch(part.product, reviewer_account, folder="/etc")
    job = deploy.start_batch(part.product, reviewer_account, folder=str(folder))
    assert job.status == Status.QUEUED and job.total == 4
    assert deploy.execute_batch(job.pk) == Status.SUCCEEDED
    assert deploy.execute_batch(job.pk) == Status.SUCCEEDED  # idempotent
    job.refresh_from_db()
    assert job.progress == 100.0
    client.force_login(reviewer_account)
    rows = list(csv.DictReader(io.StringIO(client.get(reverse("inspection-csv", args=[job.pk])).content.decode())))
    assert [r["image"] for r in rows] == ["0.png", "1.png", "2.png", "broken.png"]
    for row, (_, entry) in zip(rows, images):
        assert (row["verdict"] == "defective") == entry["predicted_anomalous"]
        assert float(row["score"]) == pytest.approx(entry["score"], rel=1e-4)
    assert rows[3]["error"] and not rows[3]["verdict"]
    page = client.get(reverse("inspection-detail", args=[job.pk])).content.decode()
    assert "Defective (" in page and "Not inspected (1)" in page and "broken.png" in page

    archive = tmp_path / "new.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for k in range(3):
            z.write(folder / f"{k}.png", f"line-2/{k}.png")
    zipped = deploy.start_batch(part.product, reviewer_account, zip_file=open(archive, "rb"))
    assert deploy.execute_batch(zipped.pk) == Status.SUCCEEDED
    zipped.refresh_from_db()
    assert [r["name"] for r in zipped.results] == ["line-2/0.png", "line-2/1.png", "line-2/2.png"]
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escape.png", b"x")
    with pytest.raises(deploy.DeployRefused, match="escapes"):
        deploy.start_batch(part.product, reviewer_account, zip_file=open(evil, "rb"))

    cancelled = deploy.start_batch(part.product, reviewer_account, folder=str(folder))
    deploy.cancel_job(cancelled)
    assert deploy.execute_batch(cancelled.pk) == Status.CANCELLED
