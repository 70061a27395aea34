"""Issue 22: the home board tells an annotator why nothing waits for their label (and an admin
where to raise the overlap); a dataset and its single product of the same name are named once on
the product, inspect, review and images pages (Chromium, 1440 x 900)."""
import pytest
from django.core.management import call_command

from annotator.models import Dataset, Image, Product
from annotator.services.labels import save_label

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORT = {"width": 1440, "height": 900}


def test_the_board_says_why_nothing_waits_for_the_annotator(browser_page, login_as, live_server, demo_dataset,
                                                            tmp_path, make_user, annotator_account, admin_account):
    make_user("importer", role="admin", is_staff=True)
    images = Image.objects.filter(product__dataset=demo_dataset, split="test", is_anomalous=True)
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("image_path,background,defect_category\n"
                        + "".join(f"{image.path},yes,surface\n" for image in images))
    call_command("import_labels", str(csv_file), "--dataset", demo_dataset.name, "--annotator", "importer")
    n = images.count()

    page = browser_page
    page.set_viewport_size(VIEWPORT)
    login_as(page, annotator_account)
    page.goto(f"{live_server.url}/")
    card = page.locator(f"section.board[data-dataset='{demo_dataset.name}']")
    assert f"{n} / {n} anomalous images labelled to the overlap" in card.locator("[data-field=dataset-progress]").inner_text()
    told = card.locator("[data-field=nothing-to-label]")
    assert told.is_visible()
    text = told.inner_text()
    assert f"Nothing to label for you in {demo_dataset.name}." in text
    assert f"Every one of the {n} images already has the 1 label the overlap asks for (overlap 1)" in text
    assert "which an admin sets on the dataset's settings" in text and "Ask an admin" in text
    assert told.locator("[data-field=raise-overlap]").count() == 0  # annotators cannot change it
    assert card.get_by_text("Start labelling").count() == 0
    # an annotator sees no admin or reviewer links on the board
    assert page.locator("a[href*='/dashboard/'], a[href*='/benchmarks/new/'], a[href*='/inspect/']").count() == 0
    for product in ("widget", "fabric"):
        row = card.locator(f"tr[data-product='{product}']")
        assert "none waiting for your label" in row.locator("[data-field=labelled]").inner_text()
        assert row.locator("[data-field=last-run]").inner_text().strip() == "none yet"

    page.context.clear_cookies()
    login_as(page, admin_account)
    page.goto(f"{live_server.url}/")
    page.click(f"section.board[data-dataset='{demo_dataset.name}'] [data-field=raise-overlap]")
    page.wait_for_url("**/dashboard/#dataset-settings")
    assert page.is_visible("#dataset-settings input[name=label_overlap]")


@pytest.fixture
def bottle(make_user):
    """A dataset "bottle" whose only product is "bottle", with one disagreement to review (rows
    only: the pages named here read no file to show the name)."""
    dataset = Dataset.objects.create(name="bottle", layout=Dataset.Layout.MVTEC, root="/nowhere/bottle",
                                     label_overlap=2)
    product = Product.objects.create(dataset=dataset, name="bottle")
    image = Image.objects.create(product=product, split="test", is_anomalous=True, defect_type="broken_large",
                                 path="test/broken_large/000.png", width=8, height=8, checksum="0")
    for name, category in (("one", "surface"), ("two", "structural")):
        save_label(image=image, annotator=make_user(name), background=True, category=category)
    return product


def test_a_product_named_like_its_dataset_is_named_once(browser_page, login_as, live_server, bottle, admin_account):
    page = browser_page
    page.set_viewport_size(VIEWPORT)
    login_as(page, admin_account)
    for path, selector in ((f"/benchmarks/products/{bottle.pk}/", "h1"),
                           (f"/benchmarks/products/{bottle.pk}/inspect/", "h1"),
                           (f"/products/{bottle.pk}/", "h1"),
                           (f"/products/{bottle.pk}/labels/", "h1"),
                           ("/review/", ".review-item b")):
        page.goto(f"{live_server.url}{path}")
        heading = page.locator(selector).first.inner_text()
        assert "bottle" in heading and "bottle / bottle" not in heading and "bottle/bottle" not in heading, (path, heading)
        assert heading.count("bottle") == 1, (path, heading)
    page.goto(f"{live_server.url}/")
    row = page.locator("section.board[data-dataset='bottle'] tr[data-product='bottle']")
    assert row.locator("td").first.inner_text().splitlines()[0].split()[0] == "bottle"
    assert row.locator("[data-field=disagreements]").inner_text() == "1"
