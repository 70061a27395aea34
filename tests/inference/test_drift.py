"""Drift on the product page: a deployment fed brightened images warns; fed held-out good images
of the same product it stays silent."""
import numpy as np
import pytest
from django.urls import reverse

from annotator.services.demo import _save, _widget
from inference.engine import drift as engine_drift
from inference.services import deploy, drift

pytestmark = pytest.mark.django_db

BATCH = 24


def _held_out_widgets(folder, seed: int, brightness: float = 0.0, count: int = BATCH):
    """Fresh good widgets from the demo's own generator (seeds the dataset never used), optionally
    brighter by ``brightness`` (of full scale), as a lamp change on the line would make them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        image, _, _ = _widget(np.random.default_rng([seed, index]), 128)
        path = folder / f"{seed}-{index:03d}.png"
        _save(np.clip(image + brightness, 0, 1), path, "RGB")
        paths.append(path)
    return paths


def _inspect(part, paths, user):
    return deploy.inspect_uploads(part.product, [deploy.Upload(p.name, str(p)) for p in paths], user)


def test_drift_warns_on_brighter_images_and_not_on_held_out_good_ones(padim_part, admin_account,
                                                                      reviewer_account, client, tmp_path):
    part = padim_part
    deploy.deploy(part, part.report["selection"]["chosen"], admin_account)
    page = reverse("benchmark-product", args=[part.product_id])
    client.force_login(reviewer_account)
    good = _held_out_widgets(tmp_path / "good", seed=77)

    _inspect(part, good[:5], reviewer_account)
    html = client.get(page).content.decode()
    assert "Drift on the line" in html and f"the check needs {engine_drift.MIN_LINE_IMAGES}" in html

    _inspect(part, good[5:], reviewer_account)
    check = drift.product_drift(part.product)[0]
    assert check.statistics.line_count == BATCH and not check.statistics.drifted, check.message
    # the reference: every defect-free image the run scored (validation and test parts)
    assert check.statistics.reference_count == part.report["split"]["validation_counts"]["good"] + \
        part.report["split"]["test_counts"]["good"]
    html = client.get(page).content.decode()
    assert "No drift seen" in html and "drift-warning" not in html

    for seed in (78, 79, 80):  # the lamp changed: every image from now on is brighter
        _inspect(part, _held_out_widgets(tmp_path / "bright", seed=seed, brightness=0.3), reviewer_account)
    check = drift.product_drift(part.product)[0]
    assert check.statistics.shifted and check.statistics.p_value < engine_drift.SIGNIFICANCE, check.statistics
    html = client.get(page).content.decode()
    assert 'class="notice warn drift-warning"' in html and "Drift: the line" in html
    assert html.count("<polyline") == 2  # validation and line distributions
