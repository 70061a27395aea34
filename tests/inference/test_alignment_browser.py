"""The launch form warns, as the models are picked, that the unaligned product needs a position-free model."""
import pytest

from annotator.services import alignment
from tests.annotator.test_alignment import aligned_and_scattered

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_launch_form_warns_for_position_specific_models_on_unaligned_images(
        tmp_path, settings, live_server, browser_page, login_as, admin_account):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = aligned_and_scattered(tmp_path)
    scattered = dataset.products.get(name="scattered")
    alignment.measure_alignment(scattered.pk)
    page = browser_page
    login_as(page, admin_account)
    page.goto(f"{live_server.url}/benchmarks/new/?dataset={dataset.pk}")
    page.check(f"input[name=products][value='{scattered.pk}']")
    page.check("input[name=models][value=padim]")
    page.wait_for_selector("#subset-counts [data-field=warnings] >> text=scattered: its defect-free images are not aligned")
    assert "try PatchCore" in page.inner_text("#subset-counts [data-field=warnings]")
    page.uncheck("input[name=models][value=padim]")
    page.check("input[name=models][value=patchcore]")
    page.wait_for_function("() => !document.querySelector('#subset-counts [data-field=warnings]')"
                           " && document.querySelector('#subset-counts [data-field=summary]')")
