"""Every CSV the app serves writes user text that starts like a spreadsheet formula as text.

A cell beginning with ``= + - @``, a tab or a carriage return is run by Excel or LibreOffice as a
formula ("CSV injection"); names of datasets, products, images, annotators and inspected files
are user text. Each export is downloaded the way a user does and no cell may begin with one.
"""
import csv
import io
from pathlib import Path

import pytest
from django.urls import reverse

from annotator.models import Image
from annotator.services.labels import save_label
from inference.engine.report import SCHEMA_VERSION
from inference.models import BenchmarkRun, Deployment, InspectionJob, ProductRun, Status
from tests.api.labelling_factory import make_dataset

pytestmark = pytest.mark.django_db

PREFIXES = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets start a formula with
REPO = Path(__file__).resolve().parents[2]
# Every module that answers with a CSV; a new one fails the last test until it is covered here.
CSV_MODULES = {"annotator/views.py", "api/views.py", "inference/views.py", "inference/deploy_views.py"}


def hostile(prefix: str, what: str) -> str:
    return f"{prefix}HYPERLINK(\"http://evil.example\",\"{what}\")"


def cells(response) -> list[str]:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    return [cell for row in csv.reader(io.StringIO(body.decode(), newline="")) for cell in row]


def assert_neutral(found: list[str], expected: list[str]) -> None:
    live = [cell for cell in found if cell.startswith(PREFIXES)]
    assert not live, f"cells a spreadsheet would run: {live!r}"
    for value in expected:
        assert "'" + value in found, f"{value!r} is not in the CSV as text"


@pytest.mark.parametrize("prefix", PREFIXES, ids=repr)
def test_label_exports_page_and_api(prefix, client, tmp_path, settings, make_user, reviewer_account):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = make_dataset(tmp_path, products=(("widget", "object", 1),), good_train=0)
    # (The dataset's name is in the download's file name too: tests/annotator/test_label_csv.py
    # covers it as a cell.)
    names = {"product": hostile(prefix, "product"), "path": hostile(prefix, "path"),
             "annotator": prefix + "annotator"}
    product = dataset.products.get()
    product.name = names["product"]
    product.save()
    image = Image.objects.filter(product=product, is_anomalous=True).get()
    Image.objects.filter(pk=image.pk).update(path=names["path"], defect_type=hostile(prefix, "defect"))
    save_label(image=image, annotator=make_user(names["annotator"]), background=True, category="surface")
    expected = [names["product"], names["path"], hostile(prefix, "defect")]

    client.force_login(reviewer_account)
    for variant in ("images", "annotations"):
        assert_neutral(cells(client.get(reverse("export-csv", args=[dataset.pk, variant]))), expected)
        api = client.get(reverse("api-export"), {"dataset": dataset.pk, "variant": variant}, HTTP_ACCEPT="text/csv")
        assert_neutral(cells(api), expected)


def _product_block() -> dict:
    """The parts of a current engine report that the run CSV reads."""
    estimate = {"value": 0.5, "low": 0.4, "high": 0.6}
    keys = ("iou", "dice", "precision", "recall", "fpr", "good_image_fpr", "mean_image_iou")
    return {
        "schema_version": SCHEMA_VERSION, "split": {"test": ["a", "b"]},
        "test_part": {k: estimate for k in ("image_auroc", "pixel_auroc", "aupro", "aupimo")},
        "techniques": {"f1": {"threshold": 1.0, "failure": None, "test": {k: estimate for k in keys}}},
        "selection": {"chosen": "f1", "entries": [{"technique": "f1", "cv_iou": 0.5, "folds_scored": 3}]},
        "breakdowns": {"by_category": {}, "by_background": {}, "by_defect_type": {}},
    }


def _inspection_entry(name: str) -> dict:
    return {"name": name, "verdict": "defective", "defective": True, "score": 2.0, "image_threshold": 1.0,
            "technique": "f1", "pixel_threshold": 1.5, "defect_area_fraction": 0.01, "inference_ms": 12.0,
            "components": [{"bbox": [1, 2, 3, 4], "area_fraction": 0.01, "peak": 2.0}]}


def test_benchmark_and_inspection_exports(client, tmp_path, settings, admin_account):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = make_dataset(tmp_path, products=(("widget", "object", 1),), good_train=0)
    product = dataset.products.get()
    products = {hostile(prefix, "product"): _product_block() for prefix in PREFIXES}
    run = BenchmarkRun.objects.create(created_by=admin_account, dataset=dataset, model="padim",
                                      status=Status.SUCCEEDED,
                                      metrics={"n_products": len(products), "products": products})
    deployment = Deployment.objects.create(
        product=product, technique="f1", deployed_by=admin_account,
        product_run=ProductRun.objects.create(run=run, product=product, status=Status.SUCCEEDED))
    files = [hostile(prefix, "image.png") for prefix in PREFIXES]
    unreadable = [hostile(prefix, "broken.png") for prefix in PREFIXES]
    job = InspectionJob.objects.create(
        product=product, deployment=deployment, kind=InspectionJob.Kind.BATCH, status=Status.SUCCEEDED,
        results=[_inspection_entry(name) for name in files]
        + [{"name": name, "error": hostile("=", "error")} for name in unreadable])

    client.force_login(admin_account)
    assert_neutral(cells(client.get(reverse("benchmark-download", args=[run.pk, "csv"]))), list(products))
    assert_neutral(cells(client.get(reverse("inspection-csv", args=[job.pk]))),
                   files + unreadable + [hostile("=", "error")])


def test_every_csv_export_is_covered_here():
    serving = {str(path.relative_to(REPO)) for app in ("annotator", "api", "inference", "frontend", "config")
               for path in (REPO / app).rglob("*.py") if 'content_type="text/csv' in path.read_text()}
    serving |= {str(path.relative_to(REPO)) for path in (REPO / "api").rglob("*.py")
                if 'media_type = "text/csv"' in path.read_text()}
    assert serving == CSV_MODULES
