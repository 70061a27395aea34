"""The workspace of a dataset that hides its defect folders, in a real browser: once its script has
loaded the image (and the next one after a label), neither the header nor the tab title names the
image's folder."""
import pytest

from annotator.models import Image

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _shown(page):
    page.wait_for_function("() => document.getElementById('img-anomaly').complete "
                           "&& document.getElementById('img-anomaly').naturalWidth > 0")
    image = Image.objects.get(pk=int(page.get_attribute("#workspace", "data-image-id")))
    return image, page.inner_text(".ws-head"), page.title()


def test_the_workspace_names_no_hidden_folder(browser_page, login_as, live_server, demo_dataset, annotator_account):
    page = browser_page
    demo_dataset.show_defect_folder = False
    demo_dataset.save()
    widget = demo_dataset.products.get(name="widget")
    login_as(page, annotator_account)
    page.goto(f"{live_server.url}/datasets/{demo_dataset.pk}/label/?product={widget.pk}")
    page.click("#start-labelling")
    page.wait_for_function("() => document.getElementById('workspace').dataset.imageId")
    first, header, title = _shown(page)
    assert first.defect_type not in header and first.defect_type not in title, (header, title)
    assert f"image-{first.pk}" in header and page.inner_text("#ws-defect") == ""
    page.keyboard.press("b")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.wait_for_function("prev => document.getElementById('workspace').dataset.imageId !== String(prev)",
                           arg=first.pk)
    second, header, title = _shown(page)
    assert second.pk != first.pk and second.defect_type not in header and second.defect_type not in title
    assert f"image-{second.pk}" in header
