"""The launch page, a real worker, the progress bar moving and the results page, in Chromium."""
import time

import pytest
from playwright.sync_api import Error as PlaywrightError

from inference.engine import registry
from inference.models import BenchmarkRun, Status

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_launch_watch_progress_and_read_results(bench_demo, celery_worker_process, live_server, browser_page,
                                               login_as, admin_account, test_output_dir):
    page = browser_page
    widget = bench_demo.products.get(name="widget")
    login_as(page, admin_account)
    page.goto(f"{live_server.url}/benchmarks/new/")
    page.check(f"input[name=products][value='{widget.pk}']")
    for category in ("structural", "contamination", "combined"):
        page.check(f"input[name=categories][value={category}]")
    # Live counts follow the form.
    page.wait_for_selector("#subset-counts >> text=12 images match: 4 structural, 4 contamination, 4 combined")
    page.check("input[name=background][value=no]")
    page.wait_for_selector("#subset-counts >> text=No anomalous images of widget match")
    assert page.is_disabled("#launch-button")
    page.check("input[name=background][value=yes]")
    page.wait_for_selector("#subset-counts >> text=12 images match: 4 structural, 4 contamination, 4 combined")
    # CFLOW for a few epochs: a run long enough (some seconds) for the page's one-second polls to
    # see the bar move; a PaDiM run on this small demo ends within a poll or two.
    page.uncheck("input[name=models][value=padim]")
    page.check("input[name=models][value=cflow]")
    page.fill("input[name=epochs]", "4")
    page.fill("input[name=image_size]", "96")
    page.fill("input[name=batch_size]", "4")
    page.fill("input[name=repeats]", "2")  # two validation/test splits: CFLOW is refitted for each
    page.screenshot(path=str(test_output_dir / "launch.png"), full_page=True)
    page.click("#launch-button")
    page.wait_for_url("**/benchmarks/*/")
    run = BenchmarkRun.objects.latest("pk")
    assert run.config["image_size"] == 96 and run.categories == ["structural", "contamination", "combined"]
    assert (run.model, run.config["epochs"], run.config["repeats"]) == ("cflow", 4, 2)

    # Watch the progress bar move until the page reloads with the results.
    # While it runs: the stage's sub-steps (epoch k/N with losses), an ETA, the live loss curve.
    widths, live = [], {"epoch": False, "eta": False, "loss_points": 0}
    deadline = time.monotonic() + 300  # a loaded 2-core machine can take minutes
    while time.monotonic() < deadline:
        try:
            if page.query_selector("#results"):
                break
            width = page.eval_on_selector("#run-status [data-field=bar]", "el => el.style.width")
            detail = page.inner_text("#run-status [data-field=detail]")
            live["epoch"] |= "epoch " in detail and "/4" in detail and "train loss" in detail
            live["eta"] |= "left" in page.inner_text("#run-status [data-field=eta]")
            points = page.eval_on_selector_all("#run-status svg.loss-curve circle.loss-val", "els => els.length")
            if points > live["loss_points"]:
                live["loss_points"] = points
                page.screenshot(path=str(test_output_dir / "run_live_cflow_loss.png"), full_page=True)
        except PlaywrightError:  # the page is reloading to show the results
            width = None
        if width and (not widths or widths[-1] != width):
            widths.append(width)
        time.sleep(0.1)
    else:
        raise AssertionError(f"no results after 300 s; run is {BenchmarkRun.objects.get(pk=run.pk).status}, "
                             f"worker log:\n{celery_worker_process.log_path.read_text()[-3000:]}")
    moving = [w for w in widths if w not in ("0%", "100%")]
    assert len(set(moving)) >= 2, widths
    assert live["epoch"] and live["eta"] and live["loss_points"] >= 1, live

    page.wait_for_selector("#results table.metrics")
    assert page.inner_text("[data-field=status]") == "Succeeded"
    text = page.inner_text("#results").lower()
    for expected in ("Image AUROC", "IoU curve", "Per defect category", "Per background",
                     "structural", "with background", "Worst IoU", "Best IoU", "Recommendation for widget"):
        assert expected.lower() in text, expected
    # Every image on the page (curves, heat maps, predicted and true masks) loads.
    # The gallery and curves load lazily: scroll through the page as a reader would.
    for img in page.query_selector_all("#results img"):
        img.scroll_into_view_if_needed()
    try:
        page.wait_for_function(
            "() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
        )
    except PlaywrightError:
        broken = page.eval_on_selector_all(
            "#results img", "els => els.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
        raise AssertionError(f"images that did not load: {broken}")
    assert page.eval_on_selector_all("#results .gallery img", "els => els.length") >= 6
    assert page.eval_on_selector_all("#results .curves img", "els => els.length") >= 3
    # The decision, read as a line manager would: intervals on the test numbers, how the technique
    # was chosen, what the image decision catches, and how many anomalous images it took.
    assert page.eval_on_selector_all("#results .kpis .ci", "els => els.length") >= 3
    chosen = page.locator("#results .technique-table tr.best")
    assert chosen.count() == 1 and "chosen" in chosen.inner_text()
    assert "Cross-validated IoU" in page.inner_text("#results .technique-table thead")
    assert "selection: highest iou pooled over the held-out folds" in text
    for expected in ("Image decision", "Recall (defects caught)", "How many anomalous images does it take?",
                     "Repeated splits", "no labels"):
        assert expected.lower() in text, expected
    assert page.eval_on_selector("#results img.few-shot-chart", "i => i.naturalWidth") > 0
    from inference.engine.types import BenchmarkConfig

    # one row per technique the run fitted (the default set)
    assert page.eval_on_selector_all("#results .few-shot-table tbody tr", "els => els.length") == len(
        BenchmarkConfig().techniques)
    page.screenshot(path=str(test_output_dir / "results.png"), full_page=True)
    # Gallery: a colour scale, file names, and a tile enlarged with both outlines over the image.
    assert page.locator("#results .colour-scale").count() >= 1
    assert page.locator("#results .gallery .file-name").count() >= 6
    page.locator("#results .gallery .shot[data-truth]:not([data-truth=''])").first.click()
    page.wait_for_selector("#tile-dialog[open]")
    assert page.eval_on_selector("#tile-canvas", "c => c.width") > 0
    page.locator("#tile-dialog").screenshot(path=str(test_output_dir / "gallery_enlarged.png"))
    page.keyboard.press("Escape")
    page.locator("#results .few-shot").first.screenshot(path=str(test_output_dir / "few_shot.png"))

    # The console lists it as succeeded with a full bar.
    page.goto(f"{live_server.url}/benchmarks/")
    row = page.locator(f"tr[data-run='{run.pk}']")
    assert row.locator("[data-field=status]").inner_text() == "Succeeded"
    page.screenshot(path=str(test_output_dir / "console.png"), full_page=True)


@pytest.mark.django_db(transaction=True)
def test_cancel_says_cancelling_at_once(bench_demo, live_server, browser_page, login_as, admin_account,
                                        test_output_dir):
    """No worker here: the run stays "running", so the page must show the request, not a result."""
    from django.utils import timezone

    from inference.models import ProductRun, Status

    widget = bench_demo.products.get(name="widget")
    run = BenchmarkRun.objects.create(dataset=bench_demo, model="padim", techniques=["f1"], status=Status.RUNNING,
                                      stage="fit", progress=30.0, started_at=timezone.now(),
                                      heartbeat_at=timezone.now(), created_by=admin_account)
    ProductRun.objects.create(run=run, product=widget, status=Status.RUNNING, heartbeat_at=timezone.now())
    page = browser_page
    login_as(page, admin_account)
    page.goto(f"{live_server.url}/benchmarks/{run.pk}/")
    # Cancel asks first: declining leaves the run alone
    page.once("dialog", lambda d: d.dismiss())
    page.click("[data-action=cancel]")
    page.wait_for_timeout(300)
    assert not BenchmarkRun.objects.get(pk=run.pk).cancel_requested
    page.once("dialog", lambda d: d.accept())
    page.click("[data-action=cancel]")
    assert page.inner_text("#run-status [data-field=status]") == "Cancelling…"  # before any poll answers
    page.wait_for_timeout(1500)  # polls come back with cancel_requested: it stays so
    assert page.inner_text("#run-status [data-field=status]") == "Cancelling…"
    assert BenchmarkRun.objects.get(pk=run.pk).cancel_requested
    page.screenshot(path=str(test_output_dir / "cancelling.png"))
    # no empty chart block while there is no loss to draw; the destructive button is red; an icon
    assert not page.is_visible(".loss-curve")
    assert page.eval_on_selector("[data-action=cancel]", "b => getComputedStyle(b).backgroundColor") in (
        "rgb(180, 35, 24)", "rgb(145, 32, 24)")  # danger red, or its hover shade under the pointer
    icon = page.get_attribute("link[rel=icon]", "href")
    assert page.request.get(f"{live_server.url}{icon}").status == 200


@pytest.mark.django_db(transaction=True)
def test_progress_page_says_when_the_session_ends(bench_demo, live_server, browser_page, login_as, admin_account,
                                                  test_output_dir):
    from django.utils import timezone

    from inference.models import Status

    run = BenchmarkRun.objects.create(dataset=bench_demo, model="padim", techniques=["f1"], status=Status.RUNNING,
                                      stage="fit", started_at=timezone.now(), heartbeat_at=timezone.now())
    page = browser_page
    login_as(page, admin_account)
    page.goto(f"{live_server.url}/benchmarks/{run.pk}/")
    page.context.clear_cookies()  # the session ends (logged out in another tab, expired)
    page.wait_for_selector("#session-ended", timeout=5000)
    assert "Log in again" in page.inner_text("#session-ended")
    page.screenshot(path=str(test_output_dir / "session_ended.png"))


@pytest.mark.django_db(transaction=True)
def test_compare_groups_runs_by_product_with_settings_and_cost(bench_demo, live_server, browser_page, login_as,
                                                              admin_account, test_output_dir):
    from inference.models import ProductRun, Status

    def fake_run(product, image_size, iou, fit):
        run = BenchmarkRun.objects.create(
            dataset=bench_demo, model="padim", techniques=["f1"], status=Status.SUCCEEDED,
            config={"backbone": "tf_efficientnet_lite0", "image_size": image_size}, created_by=admin_account,
            metrics={"aggregate": {
                "test_part": {"image_auroc": 0.9, "pixel_auroc": 0.95, "aupro": 0.8},
                "techniques": {"f1": {"iou": iou, "mean_image_iou": iou - 0.1, "dice": 0.6, "precision": 0.7,
                                      "recall": 0.6, "fpr": 0.01}},
                "timing": {"fit_seconds": fit, "inference_ms_per_image": 40.0, "total_seconds": fit + 5},
                "peak_memory_mb": 900.0}})
        ProductRun.objects.create(run=run, product=product, status=Status.SUCCEEDED)
        return run

    widget, fabric = bench_demo.products.get(name="widget"), bench_demo.products.get(name="fabric")
    runs = [fake_run(widget, 64, 0.41, 3.0), fake_run(widget, 96, 0.47, 7.5), fake_run(fabric, 64, 0.3, 2.0)]
    page = browser_page
    login_as(page, admin_account)
    page.goto(f"{live_server.url}/benchmarks/compare/?runs={','.join(str(r.pk) for r in runs)}")
    groups = page.locator("section.compare-group")
    assert groups.count() == 2
    widget_group = page.locator("section.compare-group[data-products=widget]")
    text = widget_group.inner_text()
    assert "Settings that differ" in text and "image_size" in text
    assert "IoU, pooled over pixels" in text and "IoU, mean per image" in text
    assert "Fit time (s)" in text and "Inference per image (ms)" in text and "Peak memory (MB)" in text
    assert widget_group.locator("tr.cost .best-cell").first.inner_text() == "3.0"  # the cheaper fit
    page.screenshot(path=str(test_output_dir / "compare_by_product.png"), full_page=True)


def test_launch_every_family_at_once_and_read_them_side_by_side(bench_demo, celery_worker_process, live_server,
                                                                browser_page, login_as, admin_account,
                                                                test_output_dir):
    page = browser_page
    widget = bench_demo.products.get(name="widget")
    login_as(page, admin_account)
    page.goto(f"{live_server.url}/benchmarks/new/")
    page.check(f"input[name=products][value='{widget.pk}']")
    for spec in registry.MODELS.values():
        page.check(f"input[name=models][value={spec.name}]")
    # every ticked model's own settings are on show
    assert page.is_visible("input[name=coreset_ratio]") and page.is_visible("input[name=n_features]")
    page.fill("input[name=image_size]", "64")
    page.fill("input[name=epochs]", "2")
    page.fill("input[name=repeats]", "1")
    page.wait_for_selector("#subset-counts >> text=images match")
    page.click("#launch-button")
    page.wait_for_url("**/benchmarks/compare/?runs=*")
    runs = list(BenchmarkRun.objects.order_by("pk"))
    assert [r.model for r in runs] == list(registry.MODELS)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        statuses = set(BenchmarkRun.objects.values_list("status", flat=True))
        if statuses <= {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}:
            break
        time.sleep(1)
    assert statuses == {Status.SUCCEEDED}, (statuses, celery_worker_process.log_path.read_text()[-3000:])
    page.reload()
    header = page.inner_text("table.compare thead")
    for spec in registry.MODELS.values():
        assert spec.label in header
    for family in ("Reconstruction", "Attribution map", "Patch similarity", "Normalizing flow"):
        assert family in header, family
    paired = page.inner_text("section.compare-group .paired")
    assert paired.count("distinguishable") == len(runs) - 1, paired  # every family against the first
    page.screenshot(path=str(test_output_dir / "compare_families.png"), full_page=True)
