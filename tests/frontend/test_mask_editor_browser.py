"""The mask editor in a real browser, at 1:1 on a 900×900 image: brush, eraser, polygon and fill
drawn with the mouse give exactly the expected raster (the tools are hard-edged: no tolerance),
undo and redo, the saved revisions in the history, and the user's data folder left untouched."""
import numpy as np
import pytest

from annotator.models import Image, MaskRevision
from tests.annotator.mask_helpers import folder_state, make_maskless_images, read_mask
from tests.frontend.mask_drawing import (
    canvas_mask, click, fill_raster, polygon_raster, stroke, stroke_raster,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZE = 900


def _open(page, live_server, image):
    page.goto(f"{live_server.url}/images/{image.pk}/mask/")
    page.wait_for_selector("#mask-editor[data-ready='1']")


def _save(page, number: int):
    page.click("#me-save-button")
    page.wait_for_selector(f"#mask-editor[data-saved='{number}']")


def test_drawing_at_one_to_one_saves_exactly_what_was_drawn(browser_page, login_as, live_server, settings, tmp_path,
                                                            annotator_account, test_output_dir):
    page = browser_page
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    root = tmp_path / "data" / "parts"
    image, = make_maskless_images(root, count=1, size=(SIZE, SIZE))
    before = folder_state(root)
    login_as(page, annotator_account)
    _open(page, live_server, image)
    # No model for this product: the editor says so and starts from an empty mask.
    assert "Draw mask" in page.inner_text("h1")
    assert "no deployed model" in page.inner_text("#me-proposal")
    assert page.get_attribute("#mask-editor", "data-start") == "empty"
    assert page.is_disabled("#me-start-proposal")

    # Zoom to fit, then 1:1: one image pixel is one canvas pixel is one screen pixel (scrollable).
    page.keyboard.press("0")
    assert float(page.get_attribute("#mask-editor", "data-scale")) < 1
    page.keyboard.press("1")
    assert page.get_attribute("#mask-editor", "data-scale") == "1"
    box = page.eval_on_selector("#me-mask", "c => [c.width, c.height, c.getBoundingClientRect().width]")
    assert box == [SIZE, SIZE, SIZE]
    assert page.eval_on_selector("#me-viewport", "v => v.scrollHeight > v.clientHeight")

    expected = np.zeros((SIZE, SIZE), dtype=bool)
    # Brush, 12 px (the default), a polyline.
    assert page.inner_text("#me-size") == "Brush 12 px"
    line = [(100, 100), (300, 140), (320, 300)]
    stroke(page, line)
    stroke_raster(expected, line, 12)
    # ] ] makes it 20 px; a stroke far down the image (the viewport scrolls to it).
    page.keyboard.press("]")
    page.keyboard.press("]")
    assert page.inner_text("#me-size") == "Brush 20 px"
    low = [(600, 700), (800, 820), (850, 890)]
    stroke(page, low)
    stroke_raster(expected, low, 20)
    assert page.eval_on_selector("#me-viewport", "v => v.scrollTop") > 0
    # Eraser, 16 px, across the first stroke.
    page.keyboard.press("e")
    page.keyboard.press("[")
    assert page.inner_text("#me-size") == "Brush 16 px"
    erased = [(200, 90), (210, 330)]
    stroke(page, erased)
    stroke_raster(expected, erased, 16, value=False)
    # Polygon: four corners clicked, Enter closes it.
    page.keyboard.press("p")
    corners = [(450, 100), (600, 150), (560, 300), (430, 260)]
    click(page, corners)
    page.keyboard.press("Enter")
    polygon_raster(expected, corners)
    # A 1 px outline with the brush, then fill inside it.
    page.keyboard.press("b")
    for _ in range(12):
        page.keyboard.press("[")
    assert page.inner_text("#me-size") == "Brush 1 px"
    square = [(700, 100), (760, 100), (760, 160), (700, 160), (700, 100)]
    stroke(page, square)
    stroke_raster(expected, square, 1)
    page.keyboard.press("f")
    click(page, [(730, 130)])
    fill_raster(expected, (730, 130))
    assert np.array_equal(canvas_mask(page), expected)

    # Undo / redo, by keys and buttons: a stroke comes and goes.
    page.keyboard.press("b")
    page.keyboard.press("]")
    page.keyboard.press("]")
    extra = [(100, 600), (300, 620)]
    stroke(page, extra)
    with_extra = expected.copy()
    stroke_raster(with_extra, extra, 3)
    assert np.array_equal(canvas_mask(page), with_extra)
    page.keyboard.press("Control+z")
    assert np.array_equal(canvas_mask(page), expected)
    page.keyboard.press("Control+Shift+z")
    assert np.array_equal(canvas_mask(page), with_extra)
    page.click("#me-undo")
    assert np.array_equal(canvas_mask(page), expected)
    page.click("#me-redo")
    page.click("#me-undo")
    # Undoing the fill and redoing it.
    page.keyboard.press("Control+z")
    assert canvas_mask(page).sum() < expected.sum()
    page.keyboard.press("Control+Shift+z")
    assert np.array_equal(canvas_mask(page), expected)
    page.screenshot(path=str(test_output_dir / "mask-editor-1to1.png"))

    # Save: revision 1, drawn; the file holds exactly what was drawn.
    _save(page, 1)
    assert "Saved as revision 1 (drawn)" in page.inner_text("#me-message")
    first = MaskRevision.objects.get(image=image, number=1)
    assert first.origin == "drawn" and first.created_by == annotator_account
    saved = read_mask(settings.MEDIA_ROOT / first.file)
    assert saved.shape == (SIZE, SIZE) and np.array_equal(saved, expected)
    assert page.is_visible("#me-label")

    # A correction: revision 2, edited, on top in the history.
    page.keyboard.press("e")
    fix = [(450, 200), (600, 200)]
    stroke(page, fix)
    corrected = expected.copy()
    stroke_raster(corrected, fix, 3, value=False)
    _save(page, 2)
    assert np.array_equal(read_mask(settings.MEDIA_ROOT / MaskRevision.objects.get(image=image, number=2).file), corrected)
    items = page.locator("#me-history li")
    assert items.count() == 2
    assert "#2 Edited" in items.nth(0).inner_text() and "ann" in items.nth(0).inner_text()
    assert "current" in items.nth(0).inner_text() and "#1 Drawn" in items.nth(1).inner_text()

    # Revision 1 opened as the starting point, saved again: revision 3, the same mask as 1.
    page.click("#me-history li[data-revision='1'] button")
    page.wait_for_function("() => document.getElementById('me-start').textContent.startsWith('Revision 1')")
    assert np.array_equal(canvas_mask(page), expected)
    _save(page, 3)
    third = MaskRevision.objects.get(image=image, number=3)
    assert third.origin == "edited" and third.started_from == "revision 1" and third.previous.number == 2
    assert np.array_equal(read_mask(settings.MEDIA_ROOT / third.file), expected)
    image.refresh_from_db()
    assert image.mask_path == f"media:{third.file}"

    # The image is labelled next, as any other (the workspace shows the new mask).
    page.click("#me-label")
    page.wait_for_url(f"**/images/{image.pk}/label/")
    page.wait_for_function("() => document.getElementById('workspace').dataset.imageId")
    # The user's data folder was never written: same files, sizes and times.
    assert folder_state(root) == before
    assert Image.objects.get(pk=image.pk).mask_path.startswith("media:drawn-masks/")
