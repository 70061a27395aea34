"""The defect book in a real browser: a reviewer pins from the review page, an annotator reads the
category's book in the workspace (? and hover) and on the book page; a reviewer pins from the workspace."""
import pytest

from annotator.models import DefectBookEntry, Image
from annotator.services.labels import save_label

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SURFACE_DEFINITION = "The shape is intact, the surface is not"


def _disagreements(dataset, make_user, count=2):
    """``count`` anomalous images two annotators disagree on (on the review page; full at overlap 2)."""
    dataset.label_overlap = 2
    dataset.save()
    alice, bob = make_user("alice"), make_user("bob")
    images = list(Image.objects.filter(product__dataset=dataset, is_anomalous=True).order_by("path")[:count])
    for image in images:
        save_label(image=image, annotator=alice, background=True, category="surface")
        save_label(image=image, annotator=bob, background=True, category="structural")
    return images


def _pin_on_review_page(page, image, kind, note):
    card = page.locator(f"section.review-item[data-image='{image.pk}']")
    form = card.locator("form.book-pin-form")
    form.locator("select[name=category]").select_option("surface")
    form.locator("select[name=kind]").select_option(kind)
    form.locator("input[name=note]").fill(note)
    form.locator("button[type=submit]").click()
    page.wait_for_selector(".messages li.success")
    assert "pinned as" in page.inner_text(".messages")


def _on_screen(page, selector) -> bool:
    box = page.locator(selector).bounding_box()
    viewport = page.viewport_size
    return bool(box) and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= viewport["width"] \
        and box["y"] < viewport["height"]


def test_reviewer_pins_from_review_page_and_annotator_reads_the_book(browser_page, login_as, live_server, demo_dataset,
                                                                    reviewer_account, annotator_account, make_user,
                                                                    test_output_dir):
    page = browser_page
    first, second = _disagreements(demo_dataset, make_user)

    login_as(page, reviewer_account)
    page.goto(f"{live_server.url}/review/?dataset={demo_dataset.pk}")
    _pin_on_review_page(page, first, "example", "Hairline scratch: the rim is intact")
    _pin_on_review_page(page, second, "counter-example", "A crack through the wall is structural")
    # Back on the review page, each card lists its pin.
    assert "Example of Surface" in page.locator(f"section.review-item[data-image='{first.pk}'] .book-pins").inner_text()
    assert "Counter-example of Surface" in page.locator(
        f"section.review-item[data-image='{second.pk}'] .book-pins").inner_text()
    assert DefectBookEntry.objects.count() == 2
    page.click(".logout button")

    login_as(page, annotator_account)
    page.goto(f"{live_server.url}/datasets/{demo_dataset.pk}/label/")
    page.click("#start-labelling")
    page.wait_for_function("() => document.getElementById('workspace').dataset.imageId")
    current = int(page.get_attribute("#workspace", "data-image-id"))
    assert current not in (first.pk, second.pk)  # both have all their labels
    requests = []
    page.on("request", lambda request: requests.append(request.url) if "/api/defect-book/" in request.url else None)

    # ? with no category chosen says what to do; with Surface chosen, it opens Surface's book.
    page.keyboard.press("?")
    assert "Choose a category" in page.inner_text("#ws-message")
    assert page.locator("#book-panel").is_hidden() and not requests  # nothing fetched until opened
    page.keyboard.press("2")
    page.keyboard.press("?")
    panel = page.locator("#book-panel")
    panel.wait_for(state="visible")
    page.wait_for_selector("#book-entries li.book-entry")
    assert SURFACE_DEFINITION in page.inner_text("#book-definition")
    entries = panel.locator("li.book-entry")
    assert entries.count() == 2
    assert [e.get_attribute("data-kind") for e in entries.all()] == ["example", "counter-example"]
    text = panel.inner_text()
    assert "Hairline scratch: the rim is intact" in text and "A crack through the wall is structural" in text
    assert "Example" in text and "Counter-example" in text
    assert _on_screen(page, "#book-panel") and _on_screen(page, "#book-entries")
    page.wait_for_function("() => [...document.querySelectorAll('#book-entries img')].every((i) => i.complete && i.naturalWidth > 0)")
    assert f"exclude_image={current}" in requests[0]
    assert not panel.locator("#book-pin").count()  # annotators read, never edit
    page.screenshot(path=str(test_output_dir / "workspace-book.png"))
    page.keyboard.press("Escape")
    assert panel.is_hidden()

    # Hovering a category shows its book beside its definition; leaving closes it again.
    page.hover("[data-category=contamination]")
    panel.wait_for(state="visible")
    page.wait_for_selector("#book-status:has-text('Nothing pinned')")
    assert "glue" in page.inner_text("#book-definition")
    page.hover("[data-category=surface]")
    page.wait_for_function("() => document.querySelectorAll('#book-entries li.book-entry').length === 2")
    assert "Hairline scratch: the rim is intact" in panel.inner_text()
    page.mouse.move(5, 5)
    panel.wait_for(state="hidden")

    # The book page lists both, under Surface, by kind, with their notes.
    page.goto(f"{live_server.url}/datasets/{demo_dataset.pk}/defect-book/")
    page.wait_for_selector("section.book-category[data-category=surface]")
    surface = page.locator("section.book-category[data-category=surface]")
    assert SURFACE_DEFINITION in surface.inner_text()
    assert "Hairline scratch: the rim is intact" in surface.locator("[data-kind=example]").inner_text()
    assert "A crack through the wall is structural" in surface.locator("[data-kind=counter-example]").inner_text()
    assert surface.locator("li.book-entry").count() == 2 and page.locator(".book-unpin").count() == 0
    page.wait_for_load_state("networkidle")
    assert surface.locator("li.book-entry img").evaluate_all("imgs => imgs.every((i) => i.naturalWidth > 0)")
    page.screenshot(path=str(test_output_dir / "defect-book.png"), full_page=True)


def test_reviewer_pins_the_image_on_screen_from_the_workspace(browser_page, login_as, live_server, demo_dataset,
                                                             reviewer_account):
    page = browser_page
    login_as(page, reviewer_account)
    page.goto(f"{live_server.url}/datasets/{demo_dataset.pk}/label/")
    page.click("#start-labelling")
    page.wait_for_function("() => document.getElementById('workspace').dataset.imageId")
    current = int(page.get_attribute("#workspace", "data-image-id"))
    page.keyboard.press("3")
    page.keyboard.press("?")
    page.wait_for_selector("#book-this-image:has-text('not in this category')")
    page.select_option("#book-kind", "borderline")
    page.fill("#book-note", "Glue or a stain? Ask the line")
    page.click("#book-pin")
    page.wait_for_selector("#book-this-image:has-text('pinned here as borderline')")
    entry = DefectBookEntry.objects.get()
    assert (entry.image_id, entry.category, entry.kind, entry.note) == (
        current, "contamination", "borderline", "Glue or a stain? Ask the line")
    # The image on screen is not among the entries, even for a reviewer.
    assert page.locator("#book-entries li.book-entry").count() == 0
    # Typing the note did not label: 3 chose the category, nothing was submitted.
    assert "selected" in page.get_attribute("[data-category=contamination]", "class")
    page.click("#book-unpin")
    page.wait_for_selector("#book-this-image:has-text('not in this category')")
    assert not DefectBookEntry.objects.exists()
