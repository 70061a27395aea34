"""The labelling workspace in a real browser: keyboard-only labelling, going back, failed submits, export."""
import csv
import io

import pytest

from annotator.models import Label, LabelHistory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def current_image(page) -> int:
    return int(page.get_attribute("#workspace", "data-image-id"))


def wait_for_new_image(page, previous: int) -> int:
    page.wait_for_function(
        "prev => { const el = document.getElementById('workspace'); return el.dataset.imageId && el.dataset.imageId !== String(prev); }",
        arg=previous,
    )
    return current_image(page)


def test_keyboard_labelling_back_and_export(browser_page, login_as, live_server, demo_dataset,
                                            annotator_account, test_output_dir):
    page = browser_page
    dataset = demo_dataset
    widget = dataset.products.get(name="widget")
    login_as(page, annotator_account)
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/label/?product={widget.pk}")
    page.click("#start-labelling")  # opening the queue changes nothing; starting claims an image
    page.wait_for_function("() => document.getElementById('workspace').dataset.imageId")
    page.wait_for_function("() => document.getElementById('img-anomaly').complete && document.getElementById('img-anomaly').naturalWidth > 0")

    # Category definitions on hover; zoom and pan stay in sync between the two views.
    page.hover("[data-category=contamination]")
    assert "glue" in page.inner_text("[data-category=contamination] .tip")
    assert page.is_visible("[data-category=contamination] .tip")
    page.mouse.move(5, 5)
    page.keyboard.press("+")
    page.mouse.move(300, 400)
    page.mouse.down()
    page.mouse.move(260, 360, steps=4)
    page.mouse.up()
    transforms = page.eval_on_selector_all(".viewport .stage", "els => els.map(e => e.style.transform)")
    assert len(transforms) == 2 and transforms[0] == transforms[1] and "scale(1.25)" in transforms[0]
    assert "translate(0px, 0px)" not in transforms[0]
    page.keyboard.press("0")

    # The product's suggested background (widget: an object, so "with") is shown but unconfirmed:
    # Enter does not submit, it explains.
    first = current_image(page)
    assert "suggested" in page.get_attribute("[data-background=yes]", "class")
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    page.wait_for_selector("#ws-message.warn")
    assert "confirm" in page.inner_text("#ws-message").lower()
    assert current_image(page) == first
    assert not Label.objects.exists()

    expected = {}
    plan = [("structural", "1"), ("surface", "2"), ("contamination", "3"), ("combined", "4")]
    image_id = first
    for index, (category, key) in enumerate(plan):
        page.keyboard.press(key)
        page.keyboard.press("b")  # confirms the suggested "with background"
        assert "selected" in page.get_attribute("[data-background=yes]", "class")
        if index == 1:
            page.wait_for_function("() => document.getElementById('mask-canvas').width > 0")
            page.screenshot(path=str(test_output_dir / "workspace.png"))
        if index == 2:
            # A failed submit keeps the choice on screen, with a clear error and a retry.
            page.route("**/api/labels/", lambda route: route.abort())
            page.keyboard.press("Enter")
            page.wait_for_selector("#ws-message.error .retry")
            assert "not saved" in page.inner_text("#ws-message").lower()
            assert current_image(page) == image_id
            assert "selected" in page.get_attribute(f"[data-category={category}]", "class")
            page.unroute("**/api/labels/")
            page.click("#ws-message .retry")
        else:
            page.keyboard.press("Enter")
        path = Label.objects.model.image.field.related_model.objects.get(pk=image_id).path
        expected[path] = ("yes", category)
        image_id = wait_for_new_image(page, image_id)

    # Backspace goes back to the last label, shown as given; change it (N = without, 1 = structural).
    page.keyboard.press("Backspace")
    previous = wait_for_new_image(page, image_id)
    last_path = list(expected)[-1]
    assert page.inner_text("#ws-path") == last_path
    assert "selected" in page.get_attribute("[data-category=combined]", "class")
    assert "selected" in page.get_attribute("[data-background=yes]", "class")
    page.keyboard.press("n")
    page.keyboard.press("n")  # idempotent: still "without", never toggled back
    assert "selected" in page.get_attribute("[data-background=no]", "class")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    # A correction is saved and stays in place; → returns to where the annotator was.
    page.wait_for_selector("#ws-message.ok >> text=Saved")
    assert current_image(page) == previous
    page.keyboard.press("ArrowRight")
    after = wait_for_new_image(page, previous)
    assert after == image_id
    expected[last_path] = ("no", "structural")
    page.wait_for_function("() => document.querySelector('#progress-user-text').textContent.startsWith('4 /')")

    # The export, fetched as this annotator, shows exactly those labels.
    response = page.request.get(f"{live_server.url}/datasets/{dataset.pk}/export/images.csv")
    assert response.status == 200
    rows = list(csv.DictReader(io.StringIO(response.text())))
    assert {row["image_path"]: (row["background"], row["category"]) for row in rows} == expected
    assert all(row["annotators"] == annotator_account.username for row in rows)
    assert {row["product"] for row in rows} == {"widget"}
    # History kept the change.
    change = LabelHistory.objects.get(action="updated")
    assert change.before == {"background": True, "category": "combined"}
    assert change.after == {"background": False, "category": "structural"}
    # The history of the image is shown on the workspace page.
    page.keyboard.press("Backspace")
    wait_for_new_image(page, after)
    assert "structural" in page.inner_text("#ws-history")
