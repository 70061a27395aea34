"""Benchmark runs on a real Celery worker process: success through the API, worker killed, cancel."""
import os
import signal

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from inference.models import BenchmarkRun
from tests.inference.conftest import SMALL, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TERMINAL = {"succeeded", "failed", "cancelled"}


def _token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def _launch(api, dataset, product_names, **extra):
    products = [p.pk for p in dataset.products.filter(name__in=product_names)]
    body = {"dataset": dataset.pk, "products": products, "model": "padim", "config": dict(SMALL), **extra}
    response = api.post("/api/benchmarks/runs/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _poll(api, run_id, until, timeout, worker=None):
    def check():
        if worker is not None and worker.process.poll() is not None:
            raise AssertionError(f"worker died:\n{worker.log_path.read_text()}")
        data = api.get(f"/api/benchmarks/runs/{run_id}/").json()
        return data if until(data) else None

    try:
        return wait_for(check, timeout, interval=0.3, message=f"run {run_id}")
    except AssertionError:
        log = worker.log_path.read_text()[-4000:] if worker and worker.log_path.exists() else ""
        print(api.get(f"/api/benchmarks/runs/{run_id}/").json(), log)
        raise


def test_run_launched_through_api_succeeds_on_worker(bench_demo, celery_worker_process, admin_account, client):
    """Two products: one task per product (a chord) and the aggregate callback, on the real worker."""
    api = _token_client(admin_account)
    launched = _launch(api, bench_demo, ["widget", "fabric"], categories=["structural", "contamination", "combined"])
    assert launched["status"] == "queued"
    seen_progress = set()

    def finished(data):
        seen_progress.add(round(data["progress"]))
        return data["status"] in TERMINAL

    data = _poll(api, launched["id"], finished, timeout=180, worker=celery_worker_process)
    assert data["status"] == "succeeded", data["error"]
    assert data["progress"] == 100 and data["duration_seconds"] > 0
    assert [p["status"] for p in data["parts"]] == ["succeeded", "succeeded"]
    assert all(p["attempts"] == 1 for p in data["parts"])
    assert data["metrics"]["n_products"] == 2 and set(data["metrics"]["products"]) == {"widget", "fabric"}

    agg = data["metrics"]["aggregate"]
    products = data["metrics"]["products"]
    assert set(products["widget"]["breakdowns"]["by_background"]) == {"True"}  # widget has a backdrop
    assert set(products["fabric"]["breakdowns"]["by_background"]) == {"False"}  # fabric does not
    assert set(agg["whole_folder"]) >= {"image_auroc", "pixel_auroc", "aupro"}
    assert 0.6 < agg["whole_folder"]["image_auroc"] <= 1.0
    assert 0.5 < agg["whole_folder"]["pixel_auroc"] <= 1.0
    categories = set()
    for report in products.values():
        categories |= set(report["breakdowns"]["by_category"])
    assert categories == {"structural", "contamination", "combined"}
    for technique in ("iou_curve", "f1", "roc", "normal_fpr", "normal_max", "synthetic"):
        values = agg["techniques"][technique]
        assert "failure" in values or 0.0 <= values["iou"] <= 1.0
    assert agg["recommended_technique"] in agg["techniques"]
    assert agg["timing"]["total_seconds"] > 0

    # Artifacts exist on disk under MEDIA_ROOT/benchmarks/<id>/ and are served to logged-in users only.
    run = BenchmarkRun.objects.get(pk=launched["id"])
    assert run.artifacts_root.is_dir() and (run.artifacts_root / "metrics.json").is_file()
    for part in run.product_runs.all():
        assert any(part.artifacts_root.rglob("*_overlay.png")) and (part.artifacts_root / "report.json").is_file()
    overlay = next(url for url in data["artifacts"] if url.endswith("_overlay.png"))
    assert client.get(overlay).status_code == 302  # anonymous: to the login page
    client.force_login(admin_account)
    response = client.get(overlay)
    assert response.status_code == 200 and b"".join(response.streaming_content)[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(reverse("benchmark-detail", args=[run.pk])).status_code == 200


def test_killed_worker_leaves_run_failed_not_running(bench_demo, celery_worker_process, admin_account, settings):
    settings.BENCHMARK_STALE_SECONDS = 5
    api = _token_client(admin_account)
    launched = _launch(api, bench_demo, ["widget"], config={"image_size": 128, "batch_size": 2})

    def running_kill(data):
        return data["status"] == "running" or data["status"] in TERMINAL

    data = _poll(api, launched["id"], running_kill, timeout=120, worker=celery_worker_process)
    assert data["status"] == "running", data
    os.killpg(celery_worker_process.process.pid, signal.SIGKILL)
    celery_worker_process.process.wait(timeout=10)

    from inference import tasks

    def ended_kill(data):
        tasks.sweep_stale_jobs.apply()  # what Celery beat does every few seconds
        return data["status"] != "running"

    data = _poll(api, launched["id"], ended_kill, timeout=30)
    assert data["status"] == "failed"
    assert "Worker lost" in data["error"] and "widget" in data["error"]
    assert data["parts"][0]["status"] == "failed"
    # The console shows it failed too.
    listed = api.get("/api/benchmarks/runs/").json()["results"]
    assert next(r for r in listed if r["id"] == launched["id"])["status"] == "failed"


def test_cancel_running_run_ends_cancelled_promptly(bench_demo, celery_worker_process, admin_account):
    import time

    api = _token_client(admin_account)
    launched = _launch(api, bench_demo, ["widget"], config={"image_size": 128, "batch_size": 2})

    def running_cancel(data):
        return (data["status"] == "running" and data["progress"] > 0) or data["status"] in TERMINAL

    data = _poll(api, launched["id"], running_cancel, timeout=120, worker=celery_worker_process)
    assert data["status"] == "running", data
    asked = time.monotonic()
    response = api.post(f"/api/benchmarks/runs/{launched['id']}/cancel/")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True

    def ended_cancel(data):
        return data["status"] in TERMINAL

    data = _poll(api, launched["id"], ended_cancel, timeout=30, worker=celery_worker_process)
    assert data["status"] == "cancelled"
    assert time.monotonic() - asked < 15
    assert data["parts"][0]["status"] == "cancelled"
