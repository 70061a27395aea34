"""From the browser: a reviewer drops three images on the inspect page, marks their verdicts with
the keys (correct, false alarm, and a missed defect with its outline drawn on the picture), adds
the false alarm and the missed defect to the dataset with one click each; the next benchmark uses
both, and the product page shows the deployment's false-alarm and miss rates (Chromium)."""
import base64
from pathlib import Path

import pytest

from annotator.models import Image
from inference.models import DatasetAddition, InspectionFeedback, RunSample, Status
from inference.services import deploy
from inference.services.execution import execute_product_run
from inference.services.runs import launch_run

from tests.conftest import new_test_queue

from .conftest import SMALL

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _drop(page, paths):
    payload = [{"name": f"line-{i}{Path(p).suffix}", "data": base64.b64encode(Path(p).read_bytes()).decode()}
               for i, p in enumerate(paths)]
    page.evaluate("""(files) => {
        const dt = new DataTransfer();
        for (const f of files) {
            const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], f.name, { type: "image/png" }));
        }
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true }));
    }""", payload)


def test_mark_add_to_dataset_benchmark_and_read_rates(padim_part, live_server, browser_page, login_as, admin_account,
                                                     reviewer_account, settings, test_output_dir, tmp_path):
    settings.DEFECTBENCH_DATA_ROOTS = [*settings.DEFECTBENCH_DATA_ROOTS, str(settings.MEDIA_ROOT)]
    part, page = padim_part, browser_page
    product = part.product
    deployment = deploy.deploy(part, part.report["selection"]["chosen"], admin_account)
    path_of = {str(s.image_id): s.path for s in part.samples.all()}
    entries = part.report["per_image"]
    defective = [e for e in entries if e["predicted_anomalous"]]
    good = [e for e in entries if not e["predicted_anomalous"]]
    chosen = [defective[0], defective[1], good[0]]  # -> correct, false alarm, missed defect

    login_as(page, reviewer_account)
    page.goto(f"{live_server.url}/benchmarks/products/{product.pk}/inspect/")
    assert "1 correct" in page.inner_text("#feedback-help")
    _drop(page, [path_of[e["key"]] for e in chosen])
    page.wait_for_selector("#results[data-done='3']", state="attached", timeout=60_000)
    cards = page.query_selector_all("#results figure")
    assert [c.get_attribute("data-verdict") for c in cards] == ["defective", "defective", "good"]

    def status(card):
        return card.query_selector(".feedback-status")

    # 1 on the focused card: correct.
    cards[0].click()
    page.keyboard.press("1")
    page.wait_for_function("(el) => el.textContent.startsWith('Marked correct')", arg=status(cards[0]))
    # 2: false alarm; a note typed first goes with it.
    cards[1].query_selector(".feedback-note").fill("reflection on the rim")
    cards[1].click()
    page.keyboard.press("2")
    page.wait_for_function("(el) => el.textContent.startsWith('Marked false alarm')", arg=status(cards[1]))
    # Key 2 on a verdict called good is refused on screen, and nothing is stored.
    cards[2].click()
    page.keyboard.press("2")
    page.wait_for_function("(el) => el.textContent.includes('called good')", arg=status(cards[2]))
    # O, four clicks around the defect on the picture, then 3: a missed defect with its outline.
    page.keyboard.press("o")
    box = cards[2].query_selector(".outline-layer").bounding_box()
    for fx, fy in ((0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8)):
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    assert cards[2].get_attribute("data-outline-points") == "4"
    page.keyboard.press("3")
    page.wait_for_function("(el) => el.textContent.startsWith('Marked missed defect with an outline')",
                           arg=status(cards[2]))
    assert [c.get_attribute("data-mark") for c in cards] == ["correct", "false_alarm", "missed_defect"]
    marks = {f.verdict.index: f for f in InspectionFeedback.objects.select_related("verdict")}
    assert {i: m.kind for i, m in marks.items()} == {0: "correct", 1: "false_alarm", 2: "missed_defect"}
    assert marks[1].note == "reflection on the rim" and marks[2].outline_path and not marks[0].outline_path

    # One action each: the false alarm and the missed defect join the dataset.
    cards[1].query_selector("button.add-to-dataset").click()
    page.wait_for_function("(el) => el.textContent.startsWith('Added to the dataset as a defect-free test image')",
                           arg=status(cards[1]))
    cards[2].click()
    page.keyboard.press("a")
    page.wait_for_function("(el) => el.textContent.includes('anomalous test image with its outline as mask')",
                           arg=status(cards[2]))
    page.screenshot(path=str(test_output_dir / "inspect-marked.png"), full_page=True)
    additions = {a.verdict.index: a.image for a in DatasetAddition.objects.select_related("verdict", "image")}
    assert set(additions) == {1, 2}
    assert not additions[1].is_anomalous and additions[1].split == Image.Split.TEST
    assert additions[2].is_anomalous and additions[2].mask_path

    # The next benchmark (run here, to the end) uses both added images.
    run = launch_run(admin_account, product.dataset, [product], model="padim", config=SMALL, seed=1)
    rerun = run.product_runs.get()
    assert execute_product_run(rerun.pk, finalize=True) == Status.SUCCEEDED
    samples = {s.image_id: s for s in RunSample.objects.filter(product_run=rerun)}
    assert not samples[additions[1].pk].is_anomalous and samples[additions[1].pk].role == "test"
    assert samples[additions[2].pk].is_anomalous and samples[additions[2].pk].mask_path
    rerun.refresh_from_db()
    # Each lands in the validation part (fitting thresholds) or the test part (measured) of the run.
    split = rerun.report["split"]
    assert {str(additions[1].pk), str(additions[2].pk)} <= set(split["validation"]) | set(split["test"])

    # The product page: the deployment's figures, on screen.
    page.goto(f"{live_server.url}/benchmarks/products/{product.pk}/")
    row = page.locator(f"#deployment-rates tr[data-deployment='{deployment.pk}']")
    assert row.locator(".inspected").inner_text() == "3"
    assert row.locator(".reviewed").inner_text() == "3"
    assert row.locator(".confirmed").inner_text() == "1"
    assert row.locator(".false-alarm-rate").inner_text().startswith("1 / 2 = 50.0 %")
    assert row.locator(".miss-rate").inner_text().startswith("1 / 1 = 100.0 %")
    assert "Wilson" in page.inner_text("#inspection-rates")
    page.screenshot(path=str(test_output_dir / "product-rates.png"), full_page=True)

    # The batch gallery takes the same marks: key 1 on its first card.
    folder = tmp_path / "batch"
    folder.mkdir()
    for k, entry in enumerate(chosen[:2]):
        (folder / f"{k}.png").write_bytes(Path(path_of[entry["key"]]).read_bytes())
    settings.DEFECTBENCH_DATA_ROOTS = [*settings.DEFECTBENCH_DATA_ROOTS, str(tmp_path)]
    job = _batch_run_here(product, reviewer_account, folder)
    page.goto(f"{live_server.url}/benchmarks/inspections/{job.pk}/")
    card = page.locator("figure[data-feedback-url]").first
    card.click()
    page.keyboard.press("1")
    card.locator(".feedback-status", has_text="Marked correct").wait_for()
    assert InspectionFeedback.objects.filter(verdict__job=job, kind="correct").count() == 1
    assert "1 correct" in page.inner_text("#feedback-help")


def _batch_run_here(product, user, folder):
    """A batch job executed in this process; the task message its start sends goes to a queue no
    worker reads."""
    from config.celery import app

    previous = app.conf.task_default_queue
    app.conf.task_default_queue = new_test_queue("unread")
    try:
        job = deploy.start_batch(product, user, folder=str(folder))
    finally:
        app.conf.task_default_queue = previous
    assert deploy.execute_batch(job.pk) == Status.SUCCEEDED
    return job
