"""The run CSV download never carries a live spreadsheet formula from a product name."""
import csv
import io

import pytest

from annotator.models import Dataset
from inference.models import BenchmarkRun


@pytest.mark.django_db
def test_run_csv_neutralises_a_product_name_starting_like_a_formula(client, admin_account, tmp_path):
    dataset = Dataset.objects.create(name="d", layout="mvtec", root=str(tmp_path))
    block = {"inference": {"f1": {"iou": 0.5}}, "threshold_free": {"image_auroc": 0.9}}
    run = BenchmarkRun.objects.create(created_by=admin_account, dataset=dataset, model="padim",
                                      metrics={"n_products": 1, "products": {"=cmd|' /C calc'!A0": block}})
    client.force_login(admin_account)
    response = client.get(f"/benchmarks/{run.pk}/report.csv")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    scopes = {row[2] for row in rows[1:]}
    assert scopes == {"'=cmd|' /C calc'!A0"}
