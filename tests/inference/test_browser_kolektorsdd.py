"""PaDiM and CFLOW launched from the browser on the real KolektorSDD as it comes (imported in
place: grayscale JPEG of varying height, palette BMP masks beside the images, the split made by
the importer), run by a real worker, results page shown."""
import time

import pytest
from playwright.sync_api import Error as PlaywrightError

from annotator.services.importing import import_dataset
from inference.models import BenchmarkRun

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.real_data,
              pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("model, settings_to_fill", [
    ("padim", {}),
    # CFLOW kept short (one epoch, 128 px): the point is that it runs on this data end to end.
    ("cflow", {"epochs": "1", "image_size": "128"}),
])
def test_kolektorsdd_benchmark_from_the_browser(model, settings_to_fill, real_kolektor_root, settings,
                                                celery_worker_process, live_server, browser_page, login_as,
                                                admin_account, test_output_dir):
    settings.DEFECTBENCH_DATA_ROOTS = [real_kolektor_root.parent]
    dataset = import_dataset(real_kolektor_root).dataset
    product = dataset.products.get()
    page = browser_page
    login_as(page, admin_account)
    page.goto(f"{live_server.url}/benchmarks/new/")
    page.check(f"input[name=products][value='{product.pk}']")
    for ticked in page.query_selector_all("input[name=models]:checked"):  # the default model
        ticked.uncheck()
    page.check(f"input[name=models][value={model}]")
    for name, value in settings_to_fill.items():
        page.fill(f"input[name={name}]", value)
    page.click("#launch-button")
    page.wait_for_url("**/benchmarks/*/")
    run = BenchmarkRun.objects.latest("pk")
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        try:
            if page.query_selector("#results"):
                break
        except PlaywrightError:
            pass  # reloading
        time.sleep(0.5)
    else:
        raise AssertionError(f"no results after 420 s; run is {BenchmarkRun.objects.get(pk=run.pk).status}; "
                             f"worker log:\n{celery_worker_process.log_path.read_text()[-3000:]}")
    page.wait_for_selector("#results table.metrics")
    page.screenshot(path=str(test_output_dir / f"{model}.png"), full_page=True)
    run.refresh_from_db()
    assert run.status == "succeeded"
    part = run.product_runs.get()
    report = part.report
    assert report["n_train"] == 112 and report["n_test"] == 48
    assert report["whole_folder"]["pixel_auroc"] >= 0.8
    print(model, report["whole_folder"], report.get("timing"))
