"""From the browser: run PaDiM on the demo, deploy its recommendation, drop three images on the
inspect page and read verdicts that agree with the run's own per-image results; then move the image
and pixel threshold sliders and go back to the deployed values (Chromium)."""
import re

import pytest

from inference.models import BenchmarkRun, Deployment, Status
from inference.services import deploy

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

    _two_sliders(page, deployment, chosen, test_output_dir)
    assert page.is_visible("#pixel-deployed-mark") and page.is_visible("#image-deployed-mark")
    assert page.is_visible("#history >> text=in use")


def _slide(page, name, value):
    """Move a slider as a drag does (value set, then an input event)."""
    page.eval_on_selector(f"#{name}-threshold", "(el, v) => { el.value = String(v); "
                                                 "el.dispatchEvent(new Event('input')); }", value)


def _shown(page, name):
    return float(page.get_attribute(f"#{name}-threshold-value", "data-value"))


def _two_sliders(page, deployment, chosen, test_output_dir):
    """Image slider -> every verdict; pixel slider -> every outline and area; each card's text says
    the values the sliders are at, and "back to deployed" restores the stored values exactly."""
    thresholds = deploy.package_manifest(deployment.product_run)["thresholds"]
    image_deployed = thresholds["image"]["value"]
    pixel_deployed = thresholds["pixel"][deployment.technique]["value"]
    assert _shown(page, "image") == image_deployed and _shown(page, "pixel") == pixel_deployed
    scores = [e["score"] for e in chosen]

    def verdicts():
        return [(f.get_attribute("data-verdict"), f.query_selector(".verdict").inner_text(),
                 f.query_selector(".score").inner_text()) for f in page.query_selector_all("#results figure")]

    # Above every score: all good, and each card compares its score with the slider's value.
    high = max(scores) * 1.05
    _slide(page, "image", high)
    for verdict, word, text in verdicts():
        assert (verdict, word) == ("good", "Good") and f"< image threshold {high:.4f}" in text
    # Below every score: all defective.
    low = min(scores) * 0.95
    _slide(page, "image", low)
    for verdict, word, text in verdicts():
        assert (verdict, word) == ("defective", "Defective") and f"≥ image threshold {low:.4f}" in text
    assert page.query_selector_all("#results figure.defective") and not page.query_selector_all("#results figure.good")

    # The pixel slider moves outline and area (not the verdict); a lower threshold marks more.
    def areas():
        return [float(re.search(r"([0-9.]+) % of the image above pixel threshold ([0-9.]+)",
                                f.inner_text()).group(1)) for f in page.query_selector_all("#results figure .area")]
    before = areas()
    _slide(page, "pixel", pixel_deployed * 0.5)
    after = areas()
    assert all(a >= b for a, b in zip(after, before)) and after != before
    for text in page.eval_on_selector_all("#results figure .area", "els => els.map((e) => e.textContent)"):
        assert f"above pixel threshold {pixel_deployed * 0.5:.4f}" in text
    assert all(v == "defective" for v, _, _ in verdicts())
    page.screenshot(path=str(test_output_dir / "inspect-moved-sliders.png"), full_page=True)

    # Back to deployed: the exact stored values (not a slider step's rounding), and the run's verdicts.
    page.click("#reset-image-threshold")
    page.click("#reset-pixel-threshold")
    assert _shown(page, "image") == image_deployed and _shown(page, "pixel") == pixel_deployed
    assert areas() == before
    for entry, (verdict, _, text) in zip(chosen, verdicts()):
        assert verdict == ("defective" if entry["predicted_anomalous"] else "good")
        assert f"image threshold {image_deployed:.4f}" in text


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


def test_a_tiles_deployment_shows_a_500_by_1250_upload_at_its_own_size(bench_demo, admin_account, reviewer_account,
                                                                       live_server, browser_page, login_as, tmp_path,
                                                                       test_output_dir):
    """A PatchCore package fitted in tiles mode, deployed; a reviewer drops a 500 x 1250 image on
    the inspect page: the verdict and score on screen are the engine Inspector's, the overlay is
    drawn at 500 x 1250 and shown at that aspect (not squashed), and the map, mask and picture
    the page links to and the job's gallery shows are 500 x 1250 images."""
    from inference.engine.package import load_package
    from inference.models import InspectionJob
    from tests.inference.test_inspect_tiles import HEIGHT, WIDTH, fit_and_deploy_tiles_patchcore, tall_image

    deployment = fit_and_deploy_tiles_patchcore(bench_demo, admin_account)
    path = tmp_path / "tall.png"
    pixels = tall_image(path, deployment)
    (expected,) = load_package(deploy.package_root(deployment.product_run)).inspect([pixels],
                                                                                    technique=deployment.technique)
    page = browser_page
    login_as(page, reviewer_account)
    page.goto(f"{live_server.url}/benchmarks/products/{deployment.product_id}/inspect/")
    assert "128 px tiles overlapping 0.25" in page.inner_text("#preprocessing")
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    _drop(page, [path])
    try:
        page.wait_for_selector("#results[data-done='1']", state="attached", timeout=60_000)
    except Exception:
        raise AssertionError(f"no results: {page.inner_text('#inspect-status')!r}, page errors {errors}")
    figure = page.query_selector("#results figure")
    word = "defective" if expected.defective else "good"
    assert figure.get_attribute("data-verdict") == word
    assert figure.query_selector(".verdict").inner_text() == word.capitalize()
    shown = float(re.search(r"image score ([0-9.]+)", figure.query_selector(".score").inner_text()).group(1))
    assert shown == pytest.approx(expected.score, abs=5e-5)  # the page shows 4 decimals
    canvas = figure.query_selector("canvas")
    assert canvas.evaluate("(c) => [c.width, c.height]") == [WIDTH, HEIGHT]
    box = canvas.bounding_box()
    assert box["height"] / box["width"] == pytest.approx(HEIGHT / WIDTH, rel=0.02)  # not squashed
    sizes = page.evaluate("""(urls) => Promise.all(urls.map((url) => new Promise((done, fail) => {
        const img = new Image();
        img.onload = () => done([img.naturalWidth, img.naturalHeight]);
        img.onerror = () => fail(new Error(url));
        img.src = url;
    })))""", [a.get_attribute("href") for a in figure.query_selector_all("a")])
    assert sizes == [[WIDTH, HEIGHT], [WIDTH, HEIGHT]]  # the anomaly map and the predicted mask
    page.screenshot(path=str(test_output_dir / "inspect-tiles-500x1250.png"), full_page=True)

    # The job's gallery: the picture and its mask overlay, <img>s of the image's own size
    job = InspectionJob.objects.filter(product=deployment.product).latest("pk")
    page.goto(f"{live_server.url}/benchmarks/inspections/{job.pk}/")
    page.wait_for_function("() => [...document.querySelectorAll('figure.inspected img')]"
                           ".every((img) => img.complete && img.naturalWidth > 0)")
    natural = page.eval_on_selector_all("figure.inspected img", "els => els.map((i) => [i.naturalWidth, i.naturalHeight])")
    assert natural == [[WIDTH, HEIGHT], [WIDTH, HEIGHT]]
    assert page.is_visible(f"text={'Defective' if expected.defective else 'Good'} (1)")
