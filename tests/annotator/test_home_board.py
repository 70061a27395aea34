"""The home page is a status board that costs the same number of queries at any size: one product
of three images or many products of hundreds, each with runs and a deployment."""
import pytest
from django.urls import reverse

from annotator.models import Dataset, Image, Product
from annotator.services.labels import save_label
from inference.engine.report import SCHEMA_VERSION
from inference.models import BenchmarkRun, Deployment, ProductRun, Status

pytestmark = pytest.mark.django_db


def _dataset(name: str, products: int, anomalous: int, admin, labeller) -> Dataset:
    """Rows only (the board reads no file): per product ``anomalous`` anomalous test images, as many
    defect-free ones, two runs (a failed one last) and a deployment of the succeeded one."""
    dataset = Dataset.objects.create(name=name, layout=Dataset.Layout.MVTEC, root=f"/data/{name}")
    for p in range(products):
        product = Product.objects.create(dataset=dataset, name=f"{name}-p{p}")
        Image.objects.bulk_create(
            [Image(product=product, split="test", is_anomalous=True, defect_type="crack", path=f"test/crack/{i}.png",
                   mask_path=f"ground_truth/crack/{i}_mask.png",
                   width=8, height=8, checksum="0") for i in range(anomalous)]
            + [Image(product=product, split="train", defect_type="good", path=f"train/good/{i}.png",
                     width=8, height=8, checksum="0") for i in range(anomalous)])
        for image in product.images.filter(is_anomalous=True)[:2]:
            save_label(image=image, annotator=labeller, background=True, category="surface")
        report = {"schema_version": SCHEMA_VERSION, "selection": {"chosen": "iou_curve"}}
        done = BenchmarkRun.objects.create(dataset=dataset, model="padim", status=Status.SUCCEEDED, created_by=admin)
        part = ProductRun.objects.create(run=done, product=product, status=Status.SUCCEEDED, report=report)
        failed = BenchmarkRun.objects.create(dataset=dataset, model="cflow", status=Status.FAILED, created_by=admin)
        ProductRun.objects.create(run=failed, product=product, status=Status.FAILED)
        Deployment.objects.create(product=product, product_run=part, technique="iou_curve", deployed_by=admin)
    return dataset


def _board_queries(client, django_assert_max_num_queries, limit):
    with django_assert_max_num_queries(limit) as captured:
        html = client.get(reverse("home")).content.decode()
    return len(captured.captured_queries), html


def test_the_board_costs_the_same_at_any_size(client, admin_account, make_user, django_assert_max_num_queries):
    labeller = make_user("labeller")
    _dataset("small", products=1, anomalous=3, admin=admin_account, labeller=labeller)
    client.force_login(admin_account)
    client.get(reverse("home"))  # the session's first read, as in a running server
    small, html = _board_queries(client, django_assert_max_num_queries, 12)
    assert "PaDiM" in html and "Failed" in html

    _dataset("large", products=6, anomalous=300, admin=admin_account, labeller=labeller)
    large, html = _board_queries(client, django_assert_max_num_queries, small)
    assert html.count('data-field="deployed"') == 7 and html.count(">Failed<") == 7
    assert html.count('value="2"></meter> 2 / 300 ') == 6  # overlap 1: each product's two labelled images
    assert small == large, (small, large)
