"""Issue 21 (done when), in Chromium: 40 good and 10 defect photos of real bottles without masks
benchmark on image-level evidence; then masks are drawn for 5 defects in the browser's mask
editor, each starting from the fitted model's proposal and corrected with the brush, and the next
benchmark fits the mask-based techniques on them. The user's folder is never written."""
import base64
import io
from io import StringIO

import numpy as np
import pytest
from PIL import Image as PILImage
from django.core.management import call_command

from annotator.models import Dataset, Image, MaskRevision
from inference.engine.thresholds import NEEDS_ANOMALOUS
from tests.annotator.mask_helpers import folder_state
from tests.frontend.mask_drawing import stroke
from tests.inference.test_images_without_masks import photos, run_part  # noqa: F401 (fixture)

pytestmark = [pytest.mark.real_data, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_masks_drawn_in_the_browser_from_the_proposal_make_the_next_run_fit_the_mask_based_techniques(
        photos, browser_page, live_server, login_as, admin_account, annotator_account, test_output_dir):  # noqa: F811
    call_command("import_dataset", str(photos), stdout=StringIO())
    dataset = Dataset.objects.get()
    before = folder_state(photos)

    run, part = run_part(admin_account, dataset)
    assert all(part.report["techniques"][name]["failure"]["reason"] == "no_masked_anomalous_validation_images"
               for name in NEEDS_ANOMALOUS)
    split = part.report["split"]
    anomalous = set(Image.objects.filter(product__dataset=dataset, is_anomalous=True).values_list("pk", flat=True))
    chosen = ([int(k) for k in split["validation"] if int(k) in anomalous][:3]
              + [int(k) for k in split["test"] if int(k) in anomalous][:2])
    assert len(chosen) == 5

    page = browser_page
    login_as(page, annotator_account)
    page.goto(f"{live_server.url}/products/{dataset.products.get().pk}/masks/")
    assert page.locator("#mask-list tbody tr").count() == 10  # every defect photo needs a mask
    for number, pk in enumerate(chosen):
        page.goto(f"{live_server.url}/images/{pk}/mask/")
        page.wait_for_selector("#mask-editor[data-ready='1']")
        # no model is deployed: the latest fitted one (the image-level run) proposes the mask
        assert page.get_attribute("#mask-editor", "data-start") == "proposal"
        assert f"run {run.pk}" in page.inner_text("#me-proposal")
        proposal = page.evaluate("url => fetch(url).then(r => r.json())", f"/benchmarks/images/{pk}/mask-proposal/")
        proposed = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(proposal["maskPng"].split(",")[1])))) > 127
        # the brush adds a stroke where the proposal has nothing (so the saved mask is an edit of it)
        y = next(y for y in range(8, proposed.shape[0] - 20) if not proposed[y - 8:y + 8, 10:130].any())
        page.keyboard.press("1")  # 1:1 on the 900 x 900 photo
        stroke(page, [(20, y), (120, y)])
        if number == 0:
            page.screenshot(path=str(test_output_dir / "proposal-on-a-bottle.png"))
        page.click("#me-save-button")
        page.wait_for_selector("#mask-editor[data-saved='1']")
        assert MaskRevision.objects.get(image_id=pk).origin == "edited"

    run, part = run_part(admin_account, dataset)
    report = part.report
    assert (report["masks"]["validation_with_mask"], report["masks"]["test_with_mask"]) == (3, 2)
    assert all(report["techniques"][name]["failure"] is None for name in NEEDS_ANOMALOUS)
    assert report["test_part"]["pixel_auroc"]["value"] is not None
    assert folder_state(photos) == before
