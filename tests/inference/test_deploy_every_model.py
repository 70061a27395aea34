"""Every registry model goes the whole way a user takes: a run keeps its fitted model, an admin
deploys it, the inspect page says how its image score is computed, and the inspect API and
``manage.py inspect`` give each test-part image the run's own image score and verdict."""
import csv

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils.html import escape
from rest_framework.test import APIClient

from inference.engine import registry
from inference.models import Status
from inference.services import deploy
from tests.inference.engine.synthetic import SMALL

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("model", sorted(registry.MODELS))
def test_every_model_deploys_and_inspects_as_its_report_says(model, bench_demo, admin_account, reviewer_account,
                                                             client, tmp_path):
    from inference.services.execution import execute_product_run
    from inference.services.runs import launch_run

    widget = bench_demo.products.get(name="widget")
    config = {"image_size": 64, "batch_size": 8, "pretrained": False, **SMALL[model]}
    run = launch_run(admin_account, bench_demo, [widget], model=model, config=config, seed=1,
                     techniques=["iou_curve", "normal_max"])
    part = run.product_runs.get()
    assert execute_product_run(part.pk, finalize=True) == Status.SUCCEEDED
    part.refresh_from_db()
    assert part.package_path, f"{model}: the run kept no model package"
    report = part.report
    chosen = report["selection"]["chosen"]
    deploy.deploy(part, chosen, admin_account)

    client.force_login(reviewer_account)
    page = client.get(reverse("inspect-page", args=[part.product_id])).content.decode()
    assert escape(registry.model_class(model).IMAGE_SCORE) in page

    by_key = {str(s.image_id): s.path for s in part.samples.all()}
    entries = report["per_image"]
    paths = [by_key[e["key"]] for e in entries]
    assert any(e["predicted_anomalous"] for e in entries)
    api = APIClient()
    api.force_authenticate(reviewer_account)
    response = api.post(reverse("api-inspect", args=[part.product_id]),
                        {"images": [open(p, "rb") for p in paths]}, format="multipart")
    assert response.status_code == 201, response.content
    for entry, result in zip(entries, response.json()["results"]):
        assert result["score"] == pytest.approx(entry["score"], rel=1e-6), entry["key"]
        assert (result["verdict"] == "defective") == entry["predicted_anomalous"], entry["key"]

    out = tmp_path / "inspect.csv"
    call_command("inspect", str(deploy.package_root(part)), *paths, "--output", str(out))
    rows = list(csv.DictReader(out.open()))
    assert [r["image"] for r in rows] == paths
    for entry, row in zip(entries, rows):
        assert float(row["score"]) == pytest.approx(entry["score"], rel=1e-5), entry["key"]
        assert (row["verdict"] == "defective") == entry["predicted_anomalous"], entry["key"]
        assert row["technique"] == chosen
