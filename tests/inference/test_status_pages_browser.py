"""Issue 22, seen in Chromium at 1440 x 900 after a small PaDiM run of the demo's widget and its
deployment: the home board shows the product's labelling progress, last run, decision and deployed
model; the product page leads with the decision card; the results page's gallery shows several
outlined pictures per row."""
import pytest

from inference.models import Status
from inference.services import deploy

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORT = {"width": 1440, "height": 900}


@pytest.fixture
def deployed(padim_part, admin_account):
    chosen = padim_part.report["selection"]["chosen"]
    return deploy.deploy(padim_part, chosen, admin_account)


def test_board_product_page_and_gallery(browser_page, login_as, live_server, padim_part, deployed, admin_account,
                                        annotator_account, test_output_dir):
    part, run = padim_part, padim_part.run
    assert run.status == Status.SUCCEEDED
    technique = deployed.get_technique_display()
    page = browser_page
    page.set_viewport_size(VIEWPORT)
    login_as(page, admin_account)

    # The board: per product its progress, last run, decision and deployment.
    page.goto(f"{live_server.url}/")
    row = page.locator(f"section.board tr[data-product='widget']")
    labelled = part.product.images.filter(split="test", is_anomalous=True, needs_labels=False).count()
    total = part.product.images.filter(split="test", is_anomalous=True).count()
    assert f"{labelled} / {total}" in row.locator("[data-field=labelled]").inner_text()
    last = row.locator("[data-field=last-run]").inner_text()
    assert f"#{run.pk}" in last and "Succeeded" in last and "ago" in last
    assert row.locator(f"[data-field=last-run] a[href='/benchmarks/{run.pk}/']").count() == 1
    decision = row.locator("[data-field=decision]").inner_text()
    assert "PaDiM" in decision and f"{technique} threshold" in decision and f"run #{run.pk}" in decision
    on_line = row.locator("[data-field=deployed]").inner_text()
    assert "PaDiM" in on_line and technique in on_line and f"run #{run.pk}" in on_line and "since" in on_line
    fabric = page.locator("section.board tr[data-product='fabric']")
    assert "not deployed" in fabric.locator("[data-field=deployed]").inner_text()
    assert row.get_by_text("benchmark it").count() == 1  # admins may launch from the board
    page.screenshot(path=str(test_output_dir / "board.png"), full_page=True)

    # The product page: the decision card first, inside the first screen.
    page.goto(f"{live_server.url}/benchmarks/products/{part.product_id}/")
    card = page.locator(".decision-card")
    box = card.bounding_box()
    assert box is not None and box["y"] < VIEWPORT["height"], box
    kpis = card.locator(".kpis").bounding_box()
    assert kpis["y"] + kpis["height"] <= VIEWPORT["height"], kpis
    assert f"Decision: PaDiM with the {technique} threshold" in card.locator("h3").inner_text()
    assert "Defective parts caught" in card.inner_text()
    card_top = box["y"]
    assert card_top < page.locator(".recommendation").bounding_box()["y"]  # before the recommendation
    assert f"run #{run.pk}" in page.locator(".decision-source").inner_text()
    page.click(".decision-card a:text('Deploy…')")
    page.wait_for_url(f"**/benchmarks/{run.pk}/#deploy-{part.pk}")
    assert page.is_visible(f"#deploy-{part.pk}")
    page.goto(f"{live_server.url}/benchmarks/products/{part.product_id}/")
    page.screenshot(path=str(test_output_dir / "product.png"))

    # The results page: its first screen holds the decision card with the threshold's value and the
    # catch and false-reject rates with their intervals.
    page.goto(f"{live_server.url}/benchmarks/{run.pk}/")
    card = page.locator(".decision-card").first
    kpis = card.locator(".kpis").bounding_box()
    assert kpis["y"] + kpis["height"] <= VIEWPORT["height"], kpis
    text = card.inner_text()
    assert "Defective parts caught" in text and "Good parts rejected" in text and "[" in text
    page.screenshot(path=str(test_output_dir / "results-first-screen.png"))

    # The results page's gallery: several tiles a row, each one outlined picture that loaded.
    gallery = page.locator("ul.gallery").first
    tiles = gallery.locator("li.shot")
    assert tiles.count() >= 3
    tops = [tiles.nth(k).bounding_box()["y"] for k in range(tiles.count())]
    assert sum(1 for y in tops if abs(y - tops[0]) < 2) >= 3, tops
    # the first row is filled: its tiles span the gallery's width (no half-empty card)
    first_row = [tiles.nth(k).bounding_box() for k, y in enumerate(tops) if abs(y - tops[0]) < 2]
    width = gallery.bounding_box()["width"]
    assert first_row[-1]["x"] + first_row[-1]["width"] - first_row[0]["x"] > 0.9 * width, (first_row, width)
    for k in range(tiles.count()):
        img = tiles.nth(k).locator("img")
        assert img.count() == 1 and img.get_attribute("src").endswith("_outline.png")
        img.scroll_into_view_if_needed()
        page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=img.element_handle())
    legend = page.locator("h4 .legend").first.inner_text()
    assert "green: ground truth" in legend and "magenta: prediction" in legend
    page.locator("ul.gallery").nth(1).screenshot(path=str(test_output_dir / "gallery_best.png"))
    gallery.screenshot(path=str(test_output_dir / "gallery_worst.png"))
    tiles.first.click()
    page.wait_for_selector("#tile-dialog[open]")
    assert "magenta: prediction" in page.inner_text("#tile-dialog")

    # An annotator's board: the same facts, no launch or inspect links.
    page.context.clear_cookies()
    login_as(page, annotator_account)
    page.goto(f"{live_server.url}/")
    row = page.locator(f"section.board tr[data-product='widget']")
    assert "PaDiM" in row.locator("[data-field=deployed]").inner_text()
    assert page.locator("a[href*='/benchmarks/new/'], a[href*='/inspect/'], a[href*='/dashboard/']").count() == 0
