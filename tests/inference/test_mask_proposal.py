"""The mask editor's proposal: the deployed model's (else the newest fitted run's) anomaly map at
the package's pixel threshold, as a binary mask of the image's own size with its regions."""
import base64
import io

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image as PILImage
from scipy import ndimage

from annotator.models import Image
from inference.services import deploy

pytestmark = pytest.mark.django_db


def _proposal(client, image):
    response = client.get(reverse("inference-mask-proposal", args=[image.pk]))
    assert response.status_code == 200, response.content
    return response.json()


def _mask(body) -> np.ndarray:
    data = base64.b64decode(body["maskPng"].split(",", 1)[1])
    return np.asarray(PILImage.open(io.BytesIO(data))) > 127


def test_proposal_from_the_fitted_run_then_from_the_deployed_model(bench_demo, client, annotator_account,
                                                                   admin_account, make_user):
    widget = bench_demo.products.get(name="widget")
    image = Image.objects.filter(product=widget, is_anomalous=True).order_by("path").first()
    client.force_login(annotator_account)
    none = _proposal(client, image)
    assert none == {"available": False, "detail": none["detail"]} and "no deployed model" in none["detail"]

    from tests.inference.conftest import SMALL
    from inference.models import Status
    from inference.services.execution import execute_product_run
    from inference.services.runs import launch_run

    run = launch_run(admin_account, bench_demo, [widget], model="padim", config=SMALL, seed=1)
    part = run.product_runs.get()
    assert execute_product_run(part.pk, finalize=True) == Status.SUCCEEDED
    part.refresh_from_db()

    fitted = _proposal(client, image)
    chosen = part.report["selection"]["chosen"]
    assert fitted["available"] and not fitted["deployed"] and fitted["run"] == run.pk
    assert fitted["technique"] == chosen and f"fitted, run {run.pk}" in fitted["source"]
    mask = _mask(fitted)
    assert mask.shape == (image.height, image.width) == (fitted["height"], fitted["width"])
    assert mask.sum() == fitted["defectPixels"] > 0
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    assert len(fitted["regions"]) == count
    assert sum(r["area"] for r in fitted["regions"]) == mask.sum()
    for region in fitted["regions"]:
        x0, y0, x1, y1 = region["bbox"]
        assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
        assert mask[y0:y1, x0:x1].sum() >= region["area"]
    # The same as the package's own verdict, brought to the image's size.
    inspector = deploy.inspector_of(part)
    result = inspector.inspect_files([image.file_path])[0]
    assert fitted["pixelThreshold"] == pytest.approx(result.pixel_threshold)

    other = next(t for t in deploy.deployable_techniques(part) if t != chosen)
    deploy.deploy(part, other, admin_account)
    deployed = _proposal(client, image)
    assert deployed["deployed"] and deployed["technique"] == other and "deployed" in deployed["source"]
    assert deployed["pixelThreshold"] == pytest.approx(deploy.deployable_techniques(part)[other])

    # Signed-in users only; defect-free images have no mask to propose.
    client.logout()
    assert client.get(reverse("inference-mask-proposal", args=[image.pk])).status_code == 302
    client.force_login(annotator_account)
    good = Image.objects.filter(product=widget, is_anomalous=False).first()
    assert client.get(reverse("inference-mask-proposal", args=[good.pk])).status_code == 404
