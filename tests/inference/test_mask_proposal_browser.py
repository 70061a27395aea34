"""The mask editor starts from the deployed model's proposal (Chromium): for several demo images that
came without a mask, the proposal is shown with its regions, corrected with the brush or accepted as
it is, and saved; the revision says which (edited, proposed) and which model proposed it."""
import base64
import io

import numpy as np
import pytest
from PIL import Image as PILImage

from annotator.models import Image, MaskRevision
from inference.services import deploy
from inference.services.mask_proposal import propose_mask
from tests.annotator.mask_helpers import folder_state, read_mask
from tests.frontend.mask_drawing import stroke, stroke_raster

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_start_from_the_deployed_models_proposal_correct_or_accept_and_save(
        padim_part, browser_page, live_server, login_as, annotator_account, admin_account, settings, test_output_dir):
    page = browser_page
    part = padim_part
    deployment = deploy.deploy(part, part.report["selection"]["chosen"], admin_account)
    widget = part.product
    root = widget.dataset.root_path
    # Three anomalous images the model finds something in, as an import without masks leaves them.
    candidates = Image.objects.filter(product=widget, is_anomalous=True).order_by("path")
    chosen = [image for image in candidates[:12] if propose_mask(image).mask.any()][:3]
    assert len(chosen) == 3
    Image.objects.filter(pk__in=[image.pk for image in chosen]).update(mask_path="")
    before = folder_state(root)

    login_as(page, annotator_account)
    page.goto(f"{live_server.url}/products/{widget.pk}/masks/")
    listed = page.locator("#mask-list tbody tr")
    assert listed.count() == 3
    for number, image in enumerate(chosen):
        image.refresh_from_db()
        page.goto(f"{live_server.url}/products/{widget.pk}/masks/")
        page.click(f"#mask-list tr[data-image='{image.pk}'] a")
        page.wait_for_selector("#mask-editor[data-ready='1']")
        assert page.get_attribute("#mask-editor", "data-start") == "proposal"
        assert "Started from the model's proposal" in page.inner_text("#me-message")
        proposal = page.evaluate("url => fetch(url).then(r => r.json())",
                                 f"/benchmarks/images/{image.pk}/mask-proposal/")
        assert proposal["deployed"] and proposal["technique"] == deployment.technique
        assert f"run {part.run_id}" in page.inner_text("#me-proposal")
        assert page.locator("#me-regions li").count() == min(20, len(proposal["regions"]))
        proposed = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(proposal["maskPng"].split(",")[1])))) > 127
        expected = proposed.copy()
        page.keyboard.press("1")  # 1:1
        if number < 2:  # corrected with the brush
            line = [(5, 5 + 10 * number), (40, 20 + 10 * number)]
            stroke(page, line)
            stroke_raster(expected, line, 12)
        if number == 0:
            page.screenshot(path=str(test_output_dir / "proposal.png"))
        page.click("#me-save-button")
        page.wait_for_selector("#mask-editor[data-saved='1']")
        revision = MaskRevision.objects.get(image=image)
        assert revision.origin == ("edited" if number < 2 else "proposed"), revision.origin
        assert f"deployed, run {part.run_id}" in revision.started_from
        assert np.array_equal(read_mask(settings.MEDIA_ROOT / revision.file), expected)
        assert page.locator("#me-history li").count() == 1
        origin = "Edited" if number < 2 else "Proposed by a model"
        assert f"#1 {origin}" in page.inner_text("#me-history")

    # None of them needs a mask any more; the last is labelled next from the editor.
    page.goto(f"{live_server.url}/products/{widget.pk}/masks/")
    assert "Every anomalous image of widget has a mask" in page.inner_text("#mask-list")
    page.goto(f"{live_server.url}/images/{chosen[-1].pk}/mask/")
    page.wait_for_selector("#mask-editor[data-ready='1']")
    assert "Edit mask" in page.inner_text("h1") and page.get_attribute("#mask-editor", "data-start") == "mask"
    page.click("#me-label")
    page.wait_for_url(f"**/images/{chosen[-1].pk}/label/")
    page.wait_for_selector("#ws-mask-editor")
    assert folder_state(root) == before
