"""Issue 22's small frictions, on screen: the annotator on the inspect URL, "bottle / bottle"
breadcrumbs, and the way back from the workspace to the list it was opened from."""
import pytest

from annotator.models import Image
from tests.api.labelling_factory import make_dataset

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def bottle(tmp_path, settings):
    """A one-product dataset named after its product, as the README's bottle import makes it."""
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    return make_dataset(tmp_path, name="bottle", products=(("bottle", "object", 3),), good_train=1).products.get()


def test_an_annotator_on_the_inspect_url_is_told_who_may_inspect(browser_page, login_as, live_server, bottle,
                                                                annotator_account):
    page = browser_page
    login_as(page, annotator_account)
    response = page.goto(f"{live_server.url}/benchmarks/products/{bottle.pk}/inspect/")
    assert response.status == 403
    assert page.inner_text("h1") == "Not allowed"
    reason = page.inner_text("#forbidden-reason")
    assert "reviewers and admins" in reason and "ann (annotator)" in reason
    assert page.is_visible("nav") and page.is_visible("#forbidden a[href='/']")


def test_the_workspace_names_the_product_once_and_leads_back_to_its_list(browser_page, login_as, live_server,
                                                                         bottle, annotator_account):
    page = browser_page
    image = Image.objects.filter(product=bottle, is_anomalous=True).order_by("path").first()
    login_as(page, annotator_account)
    page.goto(f"{live_server.url}/products/{bottle.pk}/labels/?filter=unlabelled")
    assert "bottle / bottle" not in page.inner_text("h1")
    page.click(f"#labelling-list tr[data-image='{image.pk}'] a")
    page.wait_for_function("() => document.getElementById('workspace').dataset.imageId"
                           " && !document.body.classList.contains('busy')")
    crumbs = page.inner_text(".crumbs")
    assert "bottle / bottle" not in crumbs and "bottle" in crumbs
    page.click("#ws-return")
    page.wait_for_url(f"**/products/{bottle.pk}/labels/?filter=unlabelled")
    assert page.is_visible("#labelling-list")
    # Opened from the queue (no list to return to), the product's labelling list is one click away.
    page.goto(f"{live_server.url}/images/{image.pk}/label/")
    page.wait_for_function("() => document.getElementById('workspace').dataset.imageId")
    assert page.locator("#ws-return").count() == 0
    page.click("#ws-list")
    page.wait_for_url(f"**/products/{bottle.pk}/labels/")
