"""Issue 22, item 2: after ``import_labels`` with overlap 1 the queue says why nothing is left
(every image has its overlap's labels, how many, who can raise the overlap, a link for admins)."""
import pytest
from django.core.management import call_command

from annotator.models import Image

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def imported(demo_dataset, tmp_path, make_user):
    """Every anomalous widget image labelled by an import, as the README's steps do (overlap 1)."""
    make_user("importer", role="admin", is_staff=True)
    widget = demo_dataset.products.get(name="widget")
    images = Image.objects.filter(product=widget, split="test", is_anomalous=True)
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("image_path,background,defect_category\n"
                        + "".join(f"{image.path},yes,surface\n" for image in images))
    call_command("import_labels", str(csv_file), "--dataset", demo_dataset.name, "--annotator", "importer")
    return widget, images.count()


def test_the_annotator_is_told_why_and_the_admin_gets_the_settings(browser_page, login_as, live_server,
                                                                  demo_dataset, imported, annotator_account,
                                                                  admin_account):
    widget, n = imported
    page = browser_page
    login_as(page, annotator_account)
    page.goto(f"{live_server.url}/datasets/{demo_dataset.pk}/label/?product={widget.pk}")
    assert page.inner_text("h1") == "Nothing left to label"
    reasons = page.inner_text("#queue-done-reasons")
    assert f"Every one of the {n} images already has the 1 label the overlap asks for (overlap 1)" in reasons
    assert "an admin" in reasons and "overlap" in reasons
    assert page.locator("#raise-overlap").count() == 0  # annotators cannot change it: told who can
    assert "Ask an admin" in page.inner_text("#queue-done")

    page.context.clear_cookies()
    login_as(page, admin_account)
    page.goto(f"{live_server.url}/datasets/{demo_dataset.pk}/label/?product={widget.pk}")
    page.click("#raise-overlap")
    page.wait_for_url("**/dashboard/#dataset-settings")
    assert page.is_visible("#dataset-settings input[name=label_overlap]")
