"""Fixtures of the benchmark tests: the demo dataset imported and labelled, API clients, polling."""
import csv
import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

SMALL = {"image_size": 64, "batch_size": 32, "n_features": 50}


def _ensure_labels(dataset, root: Path, make_user):
    """Label the anomalous images from the demo's labels.csv unless the fixture already did."""
    from annotator.models import Image, Label
    from annotator.services.labels import save_label

    if Label.objects.filter(image__product__dataset=dataset).exists():
        return
    labeller = make_user("demo-labeller", role="annotator")
    rows = {}
    with open(root / "labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            # Paths are relative to the dataset folder's parent: "<folder>/<product>/test/...".
            product_path = row["image_path"].split("/", 1)[1]
            rows[product_path] = (row["background"] == "yes", row["defect_category"])
    for image in Image.objects.filter(product__dataset=dataset, is_anomalous=True).select_related("product"):
        found = rows.get(f"{image.product.name}/{image.path}") or rows.get(image.path)
        if found:
            save_label(image=image, annotator=labeller, background=found[0], category=found[1], source="test")


@pytest.fixture
def bench_demo(request, settings, tmp_path, make_user):
    """The synthetic demo dataset (products widget and fabric), imported and labelled.

    Uses the shared ``demo_dataset`` fixture when tests/conftest.py provides one, else generates
    and imports the demo itself. Returns the ``Dataset``.
    """
    from annotator.models import Dataset

    try:
        demo = request.getfixturevalue("demo_dataset")
    except pytest.FixtureLookupError:
        demo = None
    if isinstance(demo, Dataset):
        dataset = demo
    else:
        from annotator.services.demo import generate_demo_dataset
        from annotator.services.importing import import_dataset

        if demo is not None and Path(demo).is_dir():
            root = Path(demo).resolve()
        else:
            root = generate_demo_dataset(tmp_path / "data" / "demo")
        settings.DEFECTBENCH_DATA_ROOTS = [*settings.DEFECTBENCH_DATA_ROOTS, root.parent]
        existing = Dataset.objects.filter(root=str(root)).first()
        if existing is None:
            import_dataset(root, name="demo")
            existing = Dataset.objects.get(root=str(root))
        dataset = existing
    _ensure_labels(dataset, dataset.root_path, make_user)
    return dataset


@pytest.fixture
def admin_api(admin_account):
    client = APIClient()
    client.force_authenticate(admin_account)
    return client


@pytest.fixture
def annotator_api(annotator_account):
    client = APIClient()
    client.force_authenticate(annotator_account)
    return client


def wait_for(predicate, timeout: float, interval: float = 0.25, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


@pytest.fixture
def padim_part(bench_demo, admin_account):
    """A small PaDiM run of the demo's widget, executed in-process to the end (its ``ProductRun``)."""
    from inference.models import Status
    from inference.services.execution import execute_product_run
    from inference.services.runs import launch_run

    widget = bench_demo.products.get(name="widget")
    run = launch_run(admin_account, bench_demo, [widget], model="padim", config=SMALL, seed=1)
    part = run.product_runs.get()
    assert execute_product_run(part.pk, finalize=True) == Status.SUCCEEDED
    part.refresh_from_db()
    return part
