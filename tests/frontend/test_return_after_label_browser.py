"""Issue 20, in Chromium: a new label returns to the labelling list without a "Leave site?" prompt,
a hostile ``from=`` never takes the browser off the site, and an unsaved choice still asks."""
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Error as PlaywrightError

from annotator.models import Image, Label

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# As an attacker writes them into a link (raw; the server sees them decoded once).
OFF_SITE = ["//evil.example", "/\\evil.example", "/%2F%2Fevil.example", "https://evil.example",
            "/\\/evil.example"]


def image_id(page) -> str:
    return page.get_attribute("#workspace", "data-image-id") or ""


def ready(page):
    page.wait_for_function("() => document.getElementById('workspace').dataset.imageId"
                           " && !document.body.classList.contains('busy')")


def label_it(page):
    page.keyboard.press("2")
    page.keyboard.press("b")
    page.keyboard.press("Enter")


def test_a_new_label_returns_to_the_list_on_this_site_without_a_prompt(browser_page, login_as, live_server,
                                                                       demo_dataset, annotator_account):
    page = browser_page
    site = urlsplit(live_server.url).netloc
    widget = demo_dataset.products.get(name="widget")
    images = list(Image.objects.filter(product=widget, split="test", is_anomalous=True).order_by("path"))
    dialogs = []

    def on_dialog(dialog):
        dialogs.append(dialog.type)
        dialog.dismiss()  # "Stay on page"

    page.on("dialog", on_dialog)
    login_as(page, annotator_account)

    # From the labelling list to an image and, after its label, straight back: no prompt.
    page.goto(f"{live_server.url}/products/{widget.pk}/labels/")
    page.click(f"#labelling-list tr[data-image='{images[0].pk}'] a")
    ready(page)
    label_it(page)
    labelling_list = f"/products/{widget.pk}/labels/"
    try:
        page.wait_for_url(lambda url: urlsplit(url).path == labelling_list, timeout=5_000)
    except PlaywrightError:  # held up by a prompt
        pass
    assert dialogs == [], "the browser asked to leave a page whose label was saved"
    assert urlsplit(page.url).path == labelling_list
    assert Label.objects.filter(image=images[0], annotator=annotator_account).exists()

    # A hostile return address: the label is saved and the workspace goes on, on this site.
    for image, target in zip(images[1:], OFF_SITE):
        page.goto(f"{live_server.url}/images/{image.pk}/label/?scope=product&from={target}")
        ready(page)
        label_it(page)
        try:
            page.wait_for_function(f"() => document.getElementById('workspace').dataset.imageId !== '{image.pk}'"
                                   " && !document.body.classList.contains('busy')", timeout=5_000)
        except PlaywrightError:  # the page navigated away
            pass
        assert urlsplit(page.url).netloc == site, (target, page.url)
        assert Label.objects.filter(image=image, annotator=annotator_account).exists(), target
    assert dialogs == []

    # A choice not submitted yet still asks before the page is left, and "Stay" keeps it.
    ready(page)
    current = image_id(page)
    page.keyboard.press("3")
    with page.expect_event("dialog"):
        page.click(".crumbs a", no_wait_after=True)
    assert dialogs == ["beforeunload"]
    assert image_id(page) == current
    assert "selected" in page.get_attribute("[data-category=contamination]", "class")
