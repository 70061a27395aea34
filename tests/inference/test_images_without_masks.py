"""Issue 21 (done when): a manufacturer's photos of 40 good and 10 defective bottles, no masks.
They import, benchmark on image-level evidence with the label-free thresholds, and the results
page, CSV and CLI say which numbers need masks; once 5 defects get a mask (as the mask editor
gives one: ``save_drawn_mask``, a new revision under MEDIA_ROOT) the next run fits the mask-based
techniques too. Real MVTec AD bottle images (skipped when absent and CI unset)."""
import json
from io import StringIO

import numpy as np
import pytest
from PIL import Image as PILImage
from django.core.management import call_command

from annotator.models import Dataset, Image
from tests.annotator.mask_helpers import give_mask
from annotator.services.queue import labellable_images
from inference.engine.thresholds import NEEDS_ANOMALOUS
from inference.models import Status
from inference.services.execution import execute_product_run
from inference.services.runs import launch_run, subset_counts
from tests.inference.results_pages import page_and_csv

pytestmark = [pytest.mark.real_data, pytest.mark.django_db]

# the existing fast settings, at 128 px on one thread
FAST = {"image_size": 128, "batch_size": 32, "n_features": 50}
LABEL_FREE = ("normal_fpr", "normal_fpr_1e4", "normal_sigma", "normal_max", "synthetic")


@pytest.fixture
def photos(settings, tmp_path, real_bottle_root):
    """good/ (40 photos) and defect/ (10 photos) of a "parts" product, links to real bottles."""
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path, real_bottle_root.parent]
    settings.BENCHMARK_THREADS = 1
    product = tmp_path / "data" / "parts"
    for folder, source, count in (("good", real_bottle_root / "train" / "good", 40),
                                  ("defect", real_bottle_root / "test" / "broken_large", 10)):
        (product / folder).mkdir(parents=True)
        for image in sorted(source.glob("*.png"))[:count]:
            (product / folder / image.name).symlink_to(image)
    return product


def run_part(admin, dataset):
    run = launch_run(admin, dataset, list(dataset.products.all()), model="padim", config=FAST, seed=0)
    part = run.product_runs.get()
    assert execute_product_run(part.pk, finalize=True) == Status.SUCCEEDED
    part.refresh_from_db()
    run.refresh_from_db()
    return run, part


def test_photos_without_masks_benchmark_on_image_level_evidence_then_with_five_masks(
        photos, real_bottle_root, tmp_path, client, admin_account):
    out = StringIO()
    call_command("import_dataset", str(photos), stdout=out)
    assert "parts: 32 train/good, 8 test/good, 10 anomalous (0 with mask, 10 anomalous without mask " \
           "(needs a mask))" in out.getvalue()
    dataset = Dataset.objects.get()
    assert dataset.layout == "folder" and labellable_images(dataset=dataset).count() == 0
    counts = subset_counts(list(dataset.products.all()))
    assert counts["ok"] and "10 without mask (image-level only" in counts["summary"]
    assert subset_counts(list(dataset.products.all()), categories=["surface"])["total"]["anomalous"] == 0

    # --- no mask at all: image-level numbers and the label-free thresholds -------------------------
    run, part = run_part(admin_account, dataset)
    report = part.report
    assert report["masks"] == {"test_with_mask": 0, "test_image_level_only": 5, "validation_with_mask": 0,
                               "validation_image_level_only": 5, "needs_masks": report["masks"]["needs_masks"]}
    assert report["test_part"]["image_auroc"]["value"] > 0.8  # broken bottles against good ones
    assert report["image_decision"]["test"]["recall"]["value"] is not None
    assert report["test_part"]["pixel_auroc"]["value"] is None
    for name in NEEDS_ANOMALOUS:
        assert report["techniques"][name]["failure"]["reason"] == "no_masked_anomalous_validation_images"
    assert all(report["techniques"][name]["failure"] is None for name in LABEL_FREE)
    assert report["selection"]["chosen"] in LABEL_FREE
    client.force_login(admin_account)
    html, rows = page_and_csv(client, run)
    assert "Pixel metrics on 0 of 10 anomalous images (the others have no mask): 0 of 5 in the test part" in html
    assert "needs masks" in html and "Draw masks for some defect images" in html
    assert f'<option value="{report["selection"]["chosen"]}" selected>' in html  # it can be deployed
    assert rows["normal_fpr"]["iou"] == "needs masks" and rows["normal_fpr"]["pixel_auroc"] == "needs masks"
    assert rows["normal_fpr"]["image_auroc"] not in ("", "needs masks")
    assert rows["normal_fpr"]["pixel_metrics_on"].startswith("pixel metrics on 0 of 10 anomalous images")
    assert rows["iou_curve"]["threshold"].startswith("needs masks:")

    cli_report = tmp_path / "cli.json"
    out = StringIO()
    call_command("benchmark", "--data-root", str(photos), "--product", "parts", "--model", "padim",
                 "--image-size", "128", "--n-features", "50", "--output", str(cli_report), "--no-progress",
                 stdout=out, stderr=StringIO())
    text = out.getvalue()
    assert "pixel AUROC needs masks, AUPRO needs masks" in text
    assert "Pixel metrics on 0 of 10 anomalous images (the others have no mask)" in text
    assert "iou_curve      failed: needs masks:" in text
    assert json.loads(cli_report.read_text())["masks"]["test_image_level_only"] == 5

    # --- five defects get a mask, as the mask editor gives one ------------------------------------
    split = report["split"]
    given = [int(key) for key in split["validation"][:20] if Image.objects.get(pk=int(key)).is_anomalous][:3]
    given += [int(key) for key in split["test"] if Image.objects.get(pk=int(key)).is_anomalous][:2]
    for image in Image.objects.filter(pk__in=given):
        truth = real_bottle_root / "ground_truth" / "broken_large" / f"{image.file_path.stem}_mask.png"
        give_mask(image, admin_account, defect=np.asarray(PILImage.open(truth).convert("L")) > 127)
    assert labellable_images(dataset=dataset).count() == 5

    run, part = run_part(admin_account, dataset)
    report = part.report
    masks = report["masks"]
    assert (masks["validation_with_mask"], masks["test_with_mask"]) == (3, 2)
    assert all(report["techniques"][name]["failure"] is None for name in NEEDS_ANOMALOUS)
    assert report["test_part"]["pixel_auroc"]["value"] > 0.8
    html, rows = page_and_csv(client, run)
    assert "Pixel metrics on 5 of 10 anomalous images (the others have no mask): 2 of 5 in the test part" in html
    assert rows["iou_curve"]["iou"] not in ("", "needs masks")
