"""Fast corrections in the workspace (issue 12): keystrokes to fix past labels, staying in place,
idempotent background keys, the help line and the queue-finished screen."""
import pytest

from annotator.models import Image, Label
from annotator.services.labels import save_label

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CATEGORY_KEYS = {"structural": "1", "surface": "2", "contamination": "3", "combined": "4"}


def image_id(page) -> str:
    return page.get_attribute("#workspace", "data-image-id") or ""


def settle(page):
    page.wait_for_function("() => !document.body.classList.contains('busy') && document.getElementById('workspace').dataset.imageId !== undefined")


def test_correcting_7_of_the_last_10_labels_takes_at_most_25_keys(browser_page, login_as, live_server,
                                                                  demo_dataset, annotator_account, test_output_dir):
    widget = demo_dataset.products.get(name="widget")
    images = list(Image.objects.filter(product=widget, split="test", is_anomalous=True).order_by("path"))
    labelled = images[:10]
    for image in labelled:  # the last 10 labels, all "with background, surface"
        save_label(image=image, annotator=annotator_account, background=True, category="surface", source="test")
    # The corrections, newest first (the order ← visits them): 7 of the 10.
    fixes = {labelled[9].pk: ("category", "structural"), labelled[8].pk: ("background", "n"),
             labelled[7].pk: ("category", "combined"), labelled[5].pk: ("category", "contamination"),
             labelled[4].pk: ("background", "n"), labelled[2].pk: ("category", "structural"),
             labelled[0].pk: ("category", "combined")}
    page = browser_page
    login_as(page, annotator_account)
    page.goto(f"{live_server.url}/datasets/{demo_dataset.pk}/label/?product={widget.pk}")
    page.click("#start-labelling")  # opening the queue changes nothing; starting claims an image (a click, no key)
    page.wait_for_function("() => document.getElementById('workspace').dataset.imageId")
    settle(page)
    start = image_id(page)
    assert int(start) not in {i.pk for i in labelled}
    # The image where I was has no category yet: the help line is the general hint.
    assert "Hover a category" in page.inner_text("#category-help")

    keys = 0

    def press(key):
        nonlocal keys
        keys += 1
        page.keyboard.press(key)

    visited = []
    for _ in range(10):
        before = image_id(page)
        press("ArrowLeft")
        page.wait_for_function("prev => document.getElementById('workspace').dataset.imageId !== prev", arg=before)
        settle(page)
        current = int(image_id(page))
        visited.append(current)
        if current in fixes:
            kind, value = fixes[current]
            press(CATEGORY_KEYS[value] if kind == "category" else value)
            with page.expect_response(lambda r: "/api/labels/" in r.url and r.request.method == "POST"):
                press("Enter")
            page.wait_for_selector("#ws-message.ok >> text=Saved")
            settle(page)
            assert int(image_id(page)) == current  # stays in place
    assert visited == [i.pk for i in reversed(labelled)]
    page.screenshot(path=str(test_output_dir / "corrections.png"))
    assert keys <= 25, keys
    (test_output_dir / "keystrokes.txt").write_text(f"{keys} keystrokes to correct 7 of the last 10 labels\n")
    mine = {label.image_id: (label.background, label.category) for label in Label.objects.filter(annotator=annotator_account)}
    for image in labelled:
        kind, value = fixes.get(image.pk, (None, None))
        want = (False if kind == "background" else True, value if kind == "category" else "surface")
        assert mine[image.pk] == want, (image.path, mine[image.pk], want)
    # Forward through my labels, then back to where I was (not a jump elsewhere).
    for _ in range(10):
        before = image_id(page)
        press("ArrowRight")
        page.wait_for_function("prev => document.getElementById('workspace').dataset.imageId !== prev", arg=before)
        settle(page)
    assert image_id(page) == start
    assert "Hover a category" in page.inner_text("#category-help")  # not the last image's definition


def test_queue_finished_screen_shows_no_image_as_unlabelled(browser_page, login_as, live_server, demo_dataset,
                                                           annotator_account, test_output_dir):
    fabric = demo_dataset.products.get(name="fabric")
    images = list(Image.objects.filter(product=fabric, split="test", is_anomalous=True).order_by("path"))
    for image in images[:-1]:
        save_label(image=image, annotator=annotator_account, background=False, category="surface", source="test")
    page = browser_page
    login_as(page, annotator_account)
    page.goto(f"{live_server.url}/datasets/{demo_dataset.pk}/label/?product={fabric.pk}")
    page.click("#start-labelling")  # opening the queue changes nothing; starting claims an image (a click, no key)
    page.wait_for_function("() => document.getElementById('workspace').dataset.imageId")
    settle(page)
    assert int(image_id(page)) == images[-1].pk
    page.keyboard.press("3")
    page.keyboard.press("n")
    page.keyboard.press("Enter")
    page.wait_for_selector("#workspace.finished")
    assert page.inner_text("#ws-path") == "Nothing left to label"
    assert page.get_attribute("#img-anomaly", "src") is None
    assert not page.query_selector_all("#workspace .choice.selected, #workspace .choice.suggested")
    assert page.inner_text("#progress-user-text") == f"{len(images)} / {len(images)}"
    page.screenshot(path=str(test_output_dir / "queue_finished.png"))
    # Backspace opens the label just given (not the one before it).
    page.keyboard.press("Backspace")
    page.wait_for_function("() => document.getElementById('workspace').dataset.imageId")
    assert int(image_id(page)) == images[-1].pk
    assert "selected" in page.get_attribute("[data-category=contamination]", "class")
    # Finished once more, "Why?" opens the queue's page, which says why nothing is left.
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("#workspace.finished")
    page.click("#ws-why-done")
    page.wait_for_selector("#queue-done-reasons")
    assert (f"Every one of the {len(images)} images already has the 1 label the overlap asks for (overlap 1); "
            f"{len(images)} of them are yours.") in page.inner_text("#queue-done-reasons")


def test_labelling_list_opens_an_image_and_a_correction_stays_in_place(browser_page, login_as, live_server,
                                                                      demo_dataset, annotator_account,
                                                                      test_output_dir):
    widget = demo_dataset.products.get(name="widget")
    images = list(Image.objects.filter(product=widget, split="test", is_anomalous=True).order_by("path"))[:3]
    for image in images:
        save_label(image=image, annotator=annotator_account, background=True, category="surface", source="test")
    page = browser_page
    login_as(page, annotator_account)
    page.goto(f"{live_server.url}/products/{widget.pk}/labels/?filter=mine")
    assert page.eval_on_selector_all("#labelling-list tbody tr[data-image]", "els => els.length") == 3
    page.screenshot(path=str(test_output_dir / "labelling_list.png"), full_page=True)
    page.click(f"#labelling-list tr[data-image='{images[1].pk}'] a")
    page.wait_for_function(f"() => document.getElementById('workspace').dataset.imageId === '{images[1].pk}'")
    settle(page)
    page.keyboard.press("4")
    page.keyboard.press("Enter")
    page.wait_for_selector("#ws-message.ok >> text=Saved")
    assert image_id(page) == str(images[1].pk)
    assert Label.objects.get(image=images[1], annotator=annotator_account).category == "combined"
    page.go_back()
    page.reload()
    row = page.inner_text(f"#labelling-list tr[data-image='{images[1].pk}']")
    assert "Combined" in row
