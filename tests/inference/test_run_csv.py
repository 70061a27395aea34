"""The run CSV download never carries a live spreadsheet formula from a product name."""
import csv
import io

import pytest

from annotator.models import Dataset
from inference.engine.report import SCHEMA_VERSION
from inference.models import BenchmarkRun


@pytest.mark.django_db
def test_run_csv_neutralises_a_product_name_starting_like_a_formula(client, admin_account, tmp_path):
    dataset = Dataset.objects.create(name="d", layout="mvtec", root=str(tmp_path))
    estimate = {"value": 0.5, "low": 0.4, "high": 0.6}
    keys = ("iou", "dice", "precision", "recall", "fpr", "good_image_fpr", "mean_image_iou")
    block = {  # the parts of a current engine report the CSV reads
        "schema_version": SCHEMA_VERSION, "split": {"test": ["a", "b"]},
        "test_part": {k: estimate for k in ("image_auroc", "pixel_auroc", "aupro", "aupimo")},
        "techniques": {"f1": {"threshold": 1.0, "failure": None, "test": {k: estimate for k in keys}}},
        "selection": {"chosen": "f1", "entries": [{"technique": "f1", "cv_iou": 0.5, "folds_scored": 3}]},
        "breakdowns": {"by_category": {}, "by_background": {}, "by_defect_type": {}},
    }
    run = BenchmarkRun.objects.create(created_by=admin_account, dataset=dataset, model="padim",
                                      metrics={"n_products": 1, "products": {"=cmd|' /C calc'!A0": block}})
    client.force_login(admin_account)
    response = client.get(f"/benchmarks/{run.pk}/report.csv")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    scopes = {row[2] for row in rows[1:]}
    assert scopes == {"'=cmd|' /C calc'!A0"}
