"""A run executed in-process (no worker): metrics stored, results page, downloads, files, fan-in."""
import csv
import io
import json

import pytest
from django.urls import reverse

from annotator.services.labels import save_label
from inference.engine.thresholds import TECHNIQUES
from inference.models import BenchmarkRun, ProductRun, RunSample, Status
from inference.services import recommendation
from inference.services.execution import execute_product_run, finalize_run
from inference.services.runs import launch_run
from tests.inference.conftest import SMALL

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished_run(padim_part):
    return padim_part.run


def test_run_metrics_artifacts_snapshot_page_and_recommendation(finished_run, bench_demo, make_user, client,
                                                                annotator_account):
    run = finished_run
    assert run.status == Status.SUCCEEDED and run.progress == 100.0
    assert run.started_at and run.finished_at and run.finished_at >= run.started_at
    agg = run.metrics["aggregate"]
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert 0.0 <= agg["whole_folder"][key] <= 1.0
    assert agg["whole_folder"]["image_auroc"] > 0.7  # the demo's defects are easy to see
    assert set(agg["techniques"]) == set(TECHNIQUES)  # every technique by default
    part = run.product_runs.get()
    breakdowns = part.report["breakdowns"]
    assert {"structural", "surface", "contamination", "combined"} <= set(breakdowns["by_category"])
    assert set(breakdowns["by_background"]) == {"True"}
    assert part.attempts == 1 and len(part.report["per_image"]) > 0
    # The worker's thread setting is what the run used and recorded (issue 12); the sub-steps of
    # the stages are cleared once the run is done.
    from django.conf import settings

    assert part.report["threads"] == settings.BENCHMARK_THREADS >= 1
    assert run.detail is None
    root = part.artifacts_root
    assert root.is_relative_to(run.artifacts_root)
    assert (root / "report.json").is_file() and list((root / "images").glob("*.png"))
    assert part.report["curves"] and all((root / c).is_file() for c in part.report["curves"].values())
    overlay = part.report["per_image"][0]["artifacts"]["overlay"]
    assert not overlay.startswith("/") and (root / overlay).is_file()

    # Relabelling afterwards does not change what the run recorded.
    snapshot = RunSample.objects.filter(product_run=part, is_anomalous=True).first()
    before = (snapshot.category, snapshot.background)
    save_label(image=snapshot.image, annotator=make_user("late"), background=False, category="surface")
    snapshot.refresh_from_db()
    assert (snapshot.category, snapshot.background) == before

    # One run serves the page/download/file/recommendation checks too (each run costs seconds).
    _results_page_downloads_and_files(run, client, make_user("rev", role="reviewer"))
    _annotators_see_aggregates_not_labels_image_by_image(run, client, annotator_account)
    _recommendation_prefers_measured_results(run, bench_demo)


def _annotators_see_aggregates_not_labels_image_by_image(run, client, annotator_account):
    """Per-image results show other annotators' labels: an annotator gets the aggregates only."""
    from rest_framework.test import APIClient

    part = run.product_runs.get()
    client.force_login(annotator_account)
    html = client.get(reverse("benchmark-detail", args=[run.pk])).content.decode()
    assert "Image AUROC" in html and "Per defect category" in html
    overlay = part.report["per_image"][0]["artifacts"]["overlay"]
    assert overlay not in html  # no gallery entries
    data = json.loads(client.get(reverse("benchmark-download", args=[run.pk, "json"])).content)
    assert "per_image" not in data["products"]["widget"] and "whole_folder" in data["products"]["widget"]
    prefix = part.artifacts_root.relative_to(run.artifacts_root).as_posix()
    for rel in (f"{prefix}/report.json", f"{prefix}/{overlay}"):
        assert client.get(reverse("benchmark-file", args=[run.pk, rel])).status_code == 403, rel
    curve = sorted(part.report["curves"].values())[0]
    assert client.get(reverse("benchmark-file", args=[run.pk, f"{prefix}/{curve}"])).status_code == 200
    api = APIClient()
    api.force_authenticate(annotator_account)
    artifacts = api.get(f"/api/benchmarks/runs/{run.pk}/").json()["artifacts"]
    assert artifacts and all("/curves/" in url for url in artifacts)
    client.logout()


def _results_page_downloads_and_files(run, client, annotator_account):
    page_url = reverse("benchmark-detail", args=[run.pk])
    assert client.get(page_url).status_code == 302  # login first
    client.force_login(annotator_account)
    html = client.get(page_url).content.decode()
    for text in ("Image AUROC", "IoU curve", "Per defect category", "structural", "with background",
                 "Worst IoU", "Recommendation for widget", "Cross-validated IoU", "How many anomalous images",
                 "Image decision", "95 % bootstrap interval",
                 # issue 12: both IoUs named apart, thresholds as percentiles, threads, file names
                 "IoU, pooled over pixels", "IoU, mean per image", "of good pixels", "torch thread(s)",
                 'class="file-name"'):
        assert text in html, text
    good_tiles = html[html.index("Defect-free, highest anomaly scores"):]
    good_tiles = good_tiles[:good_tiles.index("</ul>")]
    assert "IoU" not in good_tiles and "score" in good_tiles  # a defect-free tile has no IoU to show

    data = json.loads(client.get(reverse("benchmark-download", args=[run.pk, "json"])).content)
    assert data["run"]["id"] == run.pk and "widget" in data["products"]
    rows = list(csv.DictReader(io.StringIO(client.get(reverse("benchmark-download", args=[run.pk, "csv"])).content.decode())))
    assert {r["technique"] for r in rows} >= {"iou_curve", "f1"}
    assert any(r["subset"] == "category:structural" for r in rows)

    part = run.product_runs.get()
    rel = f"{part.artifacts_root.relative_to(run.artifacts_root).as_posix()}/report.json"
    url = reverse("benchmark-file", args=[run.pk, rel])
    response = client.get(url)
    assert response.status_code == 200 and b"test_part" in b"".join(response.streaming_content)
    for evil in ("../../../../etc/passwd", "%2e%2e/%2e%2e/secret", "/etc/passwd"):
        assert client.get(f"/benchmarks/{run.pk}/files/{evil}").status_code == 404
    client.logout()
    assert client.get(url).status_code == 302


def _recommendation_prefers_measured_results(finished_run, bench_demo):
    widget = bench_demo.products.get(name="widget")
    rec = recommendation.recommend(widget)
    assert rec["source"] == "runs" and rec["model"] == "padim"
    # Chosen on the validation part, like the run's own recommended technique; the test-part IoU
    # is reported as the held-out estimate.
    summary = finished_run.metrics["aggregate"]
    assert rec["technique"] == summary["recommended_technique"]
    assert rec["best"]["iou"]["value"] == pytest.approx(summary["techniques"][rec["technique"]]["iou"])
    assert "cross-validated IoU" in rec["reason"] and "held-out test IoU" in rec["reason"]
    assert "Runner-up" in rec["reason"] and "Paired on the same test images" in rec["reason"]
    low, high = rec["difference"]["low"], rec["difference"]["high"]
    assert low <= rec["difference"]["value"] <= high
    assert rec["excluded"] == []


def test_recommendation_compares_only_runs_on_the_same_evidence(bench_demo, admin_account, client):
    """Runs at another image size, or on another label subset, are listed as not compared, with why."""
    widget = bench_demo.products.get(name="widget")
    runs = [launch_run(admin_account, bench_demo, [widget], model="padim", config={**SMALL, **extra}, seed=1,
                       categories=categories, techniques=["iou_curve", "normal_max"])
            for extra, categories in (({}, []), ({}, []), ({"image_size": 96}, []), ({}, ["structural", "combined"]))]
    for run in runs:
        assert execute_product_run(run.product_runs.get().pk, finalize=True) == Status.SUCCEEDED
    rec = recommendation.recommend(widget)
    assert {c["run"] for c in rec["evidence"]} == {runs[0].pk, runs[1].pk}
    reasons = {e["run"]: e["reason"] for e in rec["excluded"]}
    assert "image size 96 px, not 64 px" in reasons[runs[2].pk]
    assert "other test images" in reasons[runs[3].pk]
    assert "2 run(s) were not compared" in rec["reason"]
    # the same model, seed and images twice: the paired difference of the two identical runs is 0
    same = [c for c in rec["evidence"] if c["technique"] == rec["technique"]]
    assert len(same) == 2 and same[0]["iou"] == same[1]["iou"]
    client.force_login(admin_account)
    html = client.get(f"/benchmarks/compare/?runs={runs[0].pk}&runs={runs[1].pk}").content.decode()
    assert "Paired on the same test images" in html and "0.000 <span" in html and "not distinguishable" in html
    html = client.get(f"/benchmarks/compare/?runs={runs[0].pk}&runs={runs[2].pk}").content.decode()
    assert "Not compared pairwise: the runs do not share the same test images" in html


def test_starting_advice_without_runs(bench_demo):
    fabric = bench_demo.products.get(name="fabric")
    rec = recommendation.recommend(fabric)
    assert rec["source"] == "advice" and rec["model"] == "padim" and rec["technique"] == "iou_curve"
    # Relabel most of fabric's defects as surface: CFLOW becomes the starting advice.
    from annotator.models import Label

    for label in Label.objects.filter(image__product=fabric).select_related("image", "annotator")[:12]:
        save_label(image=label.image, annotator=label.annotator, background=False, category="surface")
    rec = recommendation.recommend(fabric)
    assert rec["model"] == "cflow" and "Surface defects dominate" in rec["reason"]


def test_multi_product_run_aggregates_and_compares(bench_demo, admin_account, client):
    products = list(bench_demo.products.all())
    run = launch_run(admin_account, bench_demo, products, categories=["structural", "contamination"],
                     model="padim", config=SMALL, techniques=["iou_curve", "normal_max"])
    parts = list(run.product_runs.all())
    assert len(parts) == 2
    assert execute_product_run(parts[0].pk) == Status.SUCCEEDED
    assert finalize_run(run.pk) == Status.RUNNING  # one part still queued
    # The second part was left "running" by a worker that died mid-way; its message is redelivered.
    ProductRun.objects.filter(pk=parts[1].pk).update(status=Status.RUNNING, attempts=1, progress=40.0)
    junk = parts[1].artifacts_root / "images" / "half-written.png"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"partial")
    assert execute_product_run(parts[1].pk) == Status.SUCCEEDED
    restarted = ProductRun.objects.get(pk=parts[1].pk)
    assert restarted.attempts == 2 and not junk.exists()  # restarted cleanly
    assert finalize_run(run.pk) == Status.SUCCEEDED
    run = BenchmarkRun.objects.get(pk=run.pk)
    assert run.metrics["n_products"] == 2 and set(run.metrics["products"]) == {"widget", "fabric"}
    fabric = run.metrics["products"]["fabric"]["breakdowns"]
    assert set(fabric["by_category"]) <= {"structural", "contamination"}
    assert set(run.metrics["aggregate"]["techniques"]) == {"iou_curve", "normal_max"}
    _aggregate_leaves_out_a_technique_that_failed_somewhere(run)
    # A finished part is never redone.
    assert execute_product_run(parts[0].pk) == Status.SUCCEEDED
    assert run.product_runs.get(pk=parts[0].pk).attempts == 1

    # Side by side with another run (a copy with one metric changed stands in for a second run).
    other = BenchmarkRun.objects.get(pk=run.pk)
    other.pk, other.id = None, None
    other.metrics["aggregate"]["test_part"]["image_auroc"] = 0.5
    other.save()
    for product in products:  # the same products: compared in one group
        ProductRun.objects.create(run=other, product=product, status=Status.SUCCEEDED)
    client.force_login(admin_account)
    html = client.get(f"/benchmarks/compare/?runs={run.pk}&runs={other.pk}").content.decode()
    assert f"#{run.pk} PaDiM" in html and f"#{other.pk} PaDiM" in html and "best-cell" in html
    assert html.count('class="card flush compare-group"') == 1
    assert "Image AUROC" in html and "iou_curve · IoU, pooled over pixels" in html and "Fit time (s)" in html


def test_recommendation_api_and_product_page(bench_demo, admin_api, client, annotator_account):
    widget = bench_demo.products.get(name="widget")
    data = admin_api.get(f"/api/benchmarks/products/{widget.pk}/recommendation/").json()
    assert data["source"] == "advice" and data["model"] == "padim" and data["technique"] == "iou_curve"
    assert data["defect_mix"] == {"structural": 4, "surface": 4, "contamination": 4, "combined": 4}
    client.force_login(annotator_account)
    html = client.get(f"/benchmarks/products/{widget.pk}/").content.decode()
    assert "Recommendation for widget" in html and "starting advice" in html


@pytest.mark.parametrize("error, expected", [
    ("soft", "Time limit exceeded"),
    ("boom", "RuntimeError: image 3 is unreadable"),
])
def test_failures_leave_the_run_failed_with_the_error(bench_demo, admin_account, monkeypatch, error, expected):
    from celery.exceptions import SoftTimeLimitExceeded

    import inference.engine

    def failing(*args, **kwargs):
        kwargs["progress"]("fit", 0.2)
        raise SoftTimeLimitExceeded() if error == "soft" else RuntimeError("image 3 is unreadable")

    monkeypatch.setattr(inference.engine, "run_benchmark", failing)
    run = launch_run(admin_account, bench_demo, [bench_demo.products.get(name="widget")], config=SMALL)
    assert execute_product_run(run.product_runs.get().pk, finalize=True) == Status.FAILED
    run.refresh_from_db()
    assert run.status == Status.FAILED and expected in run.error and run.error.startswith("widget: ")
    assert run.finished_at is not None and run.metrics == {}


def test_cancelled_before_start_is_not_run(bench_demo, admin_account, monkeypatch):
    import inference.engine

    monkeypatch.setattr(inference.engine, "run_benchmark", lambda *a, **k: pytest.fail("must not run"))
    run = launch_run(admin_account, bench_demo, [bench_demo.products.get(name="widget")], config=SMALL)
    BenchmarkRun.objects.filter(pk=run.pk).update(cancel_requested=True)
    assert execute_product_run(run.product_runs.get().pk, finalize=True) == Status.CANCELLED
    assert BenchmarkRun.objects.get(pk=run.pk).status == Status.CANCELLED


def _aggregate_leaves_out_a_technique_that_failed_somewhere(run):
    """A technique that failed on one product is not averaged over the others (that would
    compare it on easier evidence); its row names the product instead."""
    import copy

    from inference.services.reports import aggregate_metrics

    reports = {name: copy.deepcopy(r) for name, r in run.metrics["products"].items()}
    reports["fabric"]["techniques"]["iou_curve"].update(
        failure={"reason": "no_anomalous_validation_images", "message": "no anomalous image"}, test=None)
    aggregate = aggregate_metrics(reports)["aggregate"]
    assert aggregate["techniques"]["iou_curve"] == {"failure": "not fitted on fabric: left out of the mean"}
    assert aggregate["techniques"]["normal_max"]["iou"] == pytest.approx(
        sum(r["techniques"]["normal_max"]["test"]["iou"]["value"] for r in reports.values()) / 2)
    assert aggregate["recommended_technique"] == "normal_max"


def test_a_database_error_when_saving_results_says_so(bench_demo, admin_account, monkeypatch):
    from django.db import OperationalError

    import inference.engine
    from inference.services import execution

    monkeypatch.setattr(inference.engine, "run_benchmark", lambda *a, **k: {"threshold_free": {}})
    real_finish = execution._finish_part

    def finish(part_id, status, **kwargs):
        if status == Status.SUCCEEDED:
            raise OperationalError("server closed the connection unexpectedly")
        return real_finish(part_id, status, **kwargs)

    monkeypatch.setattr(execution, "_finish_part", finish)
    run = launch_run(admin_account, bench_demo, [bench_demo.products.get(name="widget")], config=SMALL)
    assert execute_product_run(run.product_runs.get().pk, finalize=True) == Status.FAILED
    run.refresh_from_db()
    assert "Database error while saving the results" in run.error and "server closed" in run.error
    assert "Worker lost" not in run.error


def test_worker_threads_wait_passively():
    """Idle OpenMP threads must sleep, not spin, on a shared CPU: set before torch is imported."""
    import os
    import subprocess
    import sys

    code = ("import config, os, sys; assert 'torch' not in sys.modules; print(os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"


def test_gallery_tile_of_a_defect_free_image_shows_no_iou():
    """A defect-free image has no defect to overlap: its tile showed "IoU 0.000"."""
    from types import SimpleNamespace

    from inference.services.reports import gallery

    per_image = [
        {"key": "1", "anomalous": True, "iou": {"f1": 0.5}, "score": 3.0, "defect_type": "crack"},
        {"key": "2", "anomalous": False, "iou": {"f1": 0.0}, "score": 2.0, "defect_type": "good"},
    ]
    tiles = gallery(SimpleNamespace(report={"artifact_technique": "f1", "per_image": per_image}))
    assert tiles["good"][0]["iou"] is None and tiles["good"][0]["score"] == 2.0
    assert tiles["worst"][0]["iou"] == 0.5


def test_subset_with_no_test_image_shows_the_reports_note(finished_run, client, annotator_account):
    """Issue 12: such a subset read "combined · ? images · —" instead of saying why it has no numbers."""
    part = finished_run.product_runs.get()
    report = part.report
    whole = report["whole_folder"]
    report["breakdowns"]["by_category"]["combined"] = {
        "n_anomalous_test": 0, "n_anomalous_validation": 2, "threshold_free": None, "whole_folder": whole,
        "segmentation": {}, "note": "all 2 anomalous image(s) of this subset are in the validation part"}
    part.report = report
    part.save(update_fields=["report"])
    client.force_login(annotator_account)
    html = client.get(reverse("benchmark-detail", args=[finished_run.pk])).content.decode()
    assert "Test part: all 2 anomalous image(s) of this subset are in the validation part." in html
    assert "0 anomalous test images (2 in validation)" in html
    assert "? images" not in html
