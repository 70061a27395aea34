"""The workspace viewer for fine defects (issue 12): zoom to the cursor and to native pixels,
the nearest defect-free reference first, blink and the difference view."""
import pytest

from annotator.models import Image, NearestReference
from annotator.services import references

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def view(page):
    return page.evaluate("""() => {
        const m = document.querySelector('#view-anomaly .stage').style.transform
            .match(/translate\\(([-\\d.]+)px, ([-\\d.]+)px\\) scale\\(([\\d.]+)\\)/);
        return {x: +m[1], y: +m[2], scale: +m[3], ratio: +document.getElementById('zoom-level').dataset.ratio};
    }""")


def test_zoom_to_cursor_native_pixels_nearest_reference_and_difference(browser_page, login_as, live_server,
                                                                       demo_dataset, annotator_account,
                                                                       test_output_dir):
    widget = demo_dataset.products.get(name="widget")
    assert references.compute_references(widget.pk) == "done"
    image = Image.objects.filter(product=widget, is_anomalous=True).order_by("path").first()
    nearest = NearestReference.objects.get(image=image).reference
    page = browser_page
    login_as(page, annotator_account)
    page.goto(f"{live_server.url}/images/{image.pk}/label/")
    page.wait_for_function("() => document.getElementById('img-anomaly').complete && document.getElementById('img-anomaly').naturalWidth > 0")
    # The nearest defect-free image is the reference shown first.
    assert "nearest" in page.inner_text("#ref-counter")
    assert f"/images/{nearest.pk}/image" in page.get_attribute("#img-reference", "src")
    # Outline is the default overlay.
    assert "active" in page.get_attribute("[data-mask-mode=outline]", "class")

    # Keyboard zoom aims at the cursor: the image point under it stays put.
    box = page.locator("#view-anomaly").bounding_box()
    cx, cy = box["width"] * 0.3, box["height"] * 0.6
    page.mouse.move(box["x"] + cx, box["y"] + cy)
    before = view(page)
    page.keyboard.press("+")
    after = view(page)
    assert after["scale"] > before["scale"]
    for axis, c in (("x", cx), ("y", cy)):
        assert abs((c - before[axis]) / before["scale"] - (c - after[axis]) / after["scale"]) < 0.5
    # Wheel zooms at the cursor too.
    page.mouse.wheel(0, -100)
    wheel = view(page)
    assert wheel["scale"] > after["scale"]
    assert abs((cx - after["x"]) / after["scale"] - (cx - wheel["x"]) / wheel["scale"]) < 0.5
    # Z: native pixels, from the original file (not the 512-px copy), then 2:1.
    page.keyboard.press("0")
    page.mouse.move(box["x"] + cx, box["y"] + cy)
    page.keyboard.press("z")
    native = view(page)
    assert native["ratio"] == pytest.approx(round(native["ratio"]), abs=0.01) and native["ratio"] >= 1
    page.keyboard.press("z")
    assert view(page)["ratio"] == pytest.approx(2 * native["ratio"], abs=0.02)
    page.wait_for_function("() => document.getElementById('workspace').dataset.native === 'true'")
    assert "size=" not in page.get_attribute("#img-anomaly", "src")
    page.wait_for_function("() => document.getElementById('img-anomaly').complete")
    page.screenshot(path=str(test_output_dir / "native_pixels.png"))
    # Shift+arrow pans.
    x0 = view(page)["x"]
    page.keyboard.press("Shift+ArrowRight")
    assert view(page)["x"] != x0
    page.keyboard.press("0")

    # Blink (hold V) shows the reference in place; D shows |image - reference|.
    page.keyboard.down("v")
    assert page.is_visible("#img-blink")
    page.screenshot(path=str(test_output_dir / "blink.png"))
    page.keyboard.up("v")
    assert not page.is_visible("#img-blink")
    page.keyboard.press("d")
    page.wait_for_function("() => document.getElementById('diff-canvas').dataset.ready === '1'")
    assert page.is_visible("#diff-canvas")
    mean = page.evaluate("""() => { const c = document.getElementById('diff-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let s = 0;
        for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2]; return s / (d.length / 4) / 3; }""")
    assert 0 < mean < 60  # a near-identical reference: mostly dark, the defect bright
    page.screenshot(path=str(test_output_dir / "difference.png"))
