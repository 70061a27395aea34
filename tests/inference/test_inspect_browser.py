"""From the browser: run PaDiM on the demo, deploy its recommendation, drop three images on the
inspect page and read verdicts that agree with the run's own per-image results (Chromium)."""
import re

import pytest

from inference.models import BenchmarkRun, Deployment, Status

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_run_deploy_and_inspect_three_images(bench_demo, celery_worker_process, live_server, browser_page, login_as,
                                             admin_account, test_output_dir):
    page = browser_page
    widget = bench_demo.products.get(name="widget")
    login_as(page, admin_account)
    page.goto(f"{live_server.url}/benchmarks/new/")
    page.check(f"input[name=products][value='{widget.pk}']")
    page.check("input[name=models][value=padim]")  # the default; the form ticks one or several models
    page.fill("input[name=image_size]", "64")
    page.wait_for_selector("#subset-counts >> text=images match")
    page.click("#launch-button")
    page.wait_for_url("**/benchmarks/*/")
    page.wait_for_selector("#results", timeout=180_000)
    run = BenchmarkRun.objects.latest("pk")
    part = run.product_runs.get()
    assert run.status == Status.SUCCEEDED and part.package_path

    # The product's recommendation now comes from this run: deploy it.
    page.goto(f"{live_server.url}/benchmarks/products/{widget.pk}/")
    # Deploying asks first: declining deploys nothing, confirming deploys
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.click("button.deploy-recommendation")
    page.wait_for_timeout(300)
    assert asked and "Deploy this model" in asked[0] and not Deployment.objects.filter(product=widget).exists()
    page.once("dialog", lambda d: d.accept())
    page.click("button.deploy-recommendation")
    page.wait_for_url(f"**/benchmarks/products/{widget.pk}/inspect/")
    deployment = Deployment.objects.get(product=widget)
    assert deployment.product_run == part and deployment.technique == part.report["selection"]["chosen"]
    assert deployment.deployed_by == admin_account

    # Three test-part images of the run (two anomalous, one good), dropped on the page.
    path_of = {str(s.image_id): s.path for s in part.samples.all()}
    entries = part.report["per_image"]
    chosen = [e for e in entries if e["anomalous"]][:2] + [e for e in entries if not e["anomalous"]][:1]
    files = [path_of[e["key"]] for e in chosen]
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    _drop(page, files)
    try:
        page.wait_for_selector("#results[data-done='3']", state="attached", timeout=60_000)
    except Exception:
        raise AssertionError(f"no results: {page.inner_text('#inspect-status')!r}, page errors {errors}")
    figures = page.query_selector_all("#results figure")
    assert len(figures) == 3
    for entry, figure in zip(chosen, figures):
        expected = "defective" if entry["predicted_anomalous"] else "good"
        assert figure.get_attribute("data-verdict") == expected
        assert figure.query_selector(".verdict").inner_text() == expected.capitalize()
        shown = float(re.search(r"image score ([0-9.]+)", figure.query_selector(".score").inner_text()).group(1))
        assert shown == pytest.approx(entry["score"], rel=1e-5)
    page.screenshot(path=str(test_output_dir / "inspect-deployed-threshold.png"), full_page=True)

    # The slider re-segments in the browser: a lower threshold marks more of the image.
    area = page.inner_text("#results figure .area")
    page.eval_on_selector("#threshold", "el => { el.value = String(parseFloat(el.value) * 0.5); "
                                        "el.dispatchEvent(new Event('input')); }")
    assert page.inner_text("#results figure .area") != area
    page.screenshot(path=str(test_output_dir / "inspect-lower-threshold.png"), full_page=True)
    assert page.is_visible("#deployed-mark") and page.is_visible("#history >> text=in use")


def _drop(page, paths):
    """Drop files on the drop zone as a person does (a DataTransfer carrying them)."""
    import base64
    from pathlib import Path

    payload = [{"name": Path(p).name, "data": base64.b64encode(Path(p).read_bytes()).decode()} for p in paths]
    page.evaluate("""(files) => {
        const dt = new DataTransfer();
        for (const f of files) {
            const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], f.name, { type: "image/png" }));
        }
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true }));
    }""", payload)
