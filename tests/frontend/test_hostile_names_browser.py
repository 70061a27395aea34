"""Issue 20: names from a third-party dataset are text on every page, never markup that runs.

A dataset folder, a product folder and an image file named like an XSS payload are imported as an
admin would import them; every main page that shows them is visited in Chromium. No dialog may
open, no element of the payload may appear in the page, and the names read literally. (The
browser_page fixture also fails the test on any Content-Security-Policy violation.)
"""
import json
import shutil

import pytest

from annotator.models import Image
from annotator.services.importing import import_dataset
from annotator.services.labels import save_label
from inference.models import BenchmarkRun, ProductRun, Status

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# What a dataset row may hold (its name can be edited; a folder name cannot hold "/").
HOSTILE = """<img src=x onerror=alert(1)>"'><script>alert(2)</script>"""
# Folder and file names as they come from disk.
HOSTILE_PRODUCT = """<img src=x onerror=alert(3)>"'><svg onload=alert(4)>"""
HOSTILE_FILE = """<img src=x onerror=alert(5)>"'.png"""
# Elements or attributes that only the payloads would bring into a page.
INJECTED = "img[src=x], svg[onload], [onerror], script:not([src]):not([type='application/json'])"


@pytest.fixture
def hostile_dataset(db, settings, tmp_path, demo_dataset_dir):
    """The demo data under hostile folder and file names, imported like any dataset."""
    root = tmp_path / "data" / HOSTILE_PRODUCT.replace("svg", "b")
    shutil.copytree(demo_dataset_dir, root)
    (root / "widget").rename(root / HOSTILE_PRODUCT)
    product_dir = root / HOSTILE_PRODUCT
    (product_dir / "test" / "scratch" / "000.png").rename(product_dir / "test" / "scratch" / HOSTILE_FILE)
    (product_dir / "ground_truth" / "scratch" / "000_mask.png").rename(
        product_dir / "ground_truth" / "scratch" / HOSTILE_FILE.replace(".png", "_mask.png"))
    (root / "defectbench.json").write_text(json.dumps({"products": {HOSTILE_PRODUCT: {"kind": "object"}}}))
    settings.DEFECTBENCH_DATA_ROOTS = [*settings.DEFECTBENCH_DATA_ROOTS, tmp_path / "data"]
    dataset = import_dataset(root).dataset
    dataset.name = HOSTILE
    dataset.save(update_fields=["name"])
    return dataset


def test_hostile_names_are_plain_text_on_every_page(browser_page, login_as, live_server, hostile_dataset,
                                                    admin_account, make_user):
    page = browser_page
    dataset = hostile_dataset
    product = dataset.products.get(name=HOSTILE_PRODUCT)
    image = Image.objects.get(product=product, path__endswith=HOSTILE_FILE)
    # A disagreement on the hostile image for the review page; a failed run whose error quotes it.
    for annotator, category in (("alice", "structural"), ("bob", "surface")):
        save_label(image=image, annotator=make_user(annotator), background=True, category=category)
    run = BenchmarkRun.objects.create(dataset=dataset, model="padim", techniques=["f1"], status=Status.FAILED,
                                      error=f"{product.name}: {HOSTILE}", created_by=admin_account)
    ProductRun.objects.create(run=run, product=product, status=Status.FAILED, error=HOSTILE)

    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    login_as(page, admin_account)

    def nothing_injected(where):
        injected = page.locator(INJECTED)
        assert injected.count() == 0, (where, injected.first.evaluate("e => e.outerHTML"))
        assert dialogs == [], (where, dialogs)

    def visit(path, *shown, ready=None):
        page.goto(f"{live_server.url}{path}")
        if ready:  # what the page's script writes from the API
            page.wait_for_selector(ready)
        nothing_injected(path)
        for text in shown:
            assert page.get_by_text(text).first.is_visible(), (path, text)

    visit("/", HOSTILE, HOSTILE_PRODUCT)
    visit(f"/datasets/{dataset.pk}/dashboard/", HOSTILE, HOSTILE_PRODUCT)
    visit(f"/products/{product.pk}/", HOSTILE_PRODUCT)
    visit(f"/products/{product.pk}/labels/", HOSTILE_FILE)
    visit(f"/images/{image.pk}/label/?scope=product", HOSTILE, HOSTILE_PRODUCT, HOSTILE_FILE,
          ready="#ws-history li .who")
    visit(f"/datasets/{dataset.pk}/label/?product={product.pk}", HOSTILE_PRODUCT)
    visit(f"/review/?dataset={dataset.pk}", HOSTILE, HOSTILE_FILE)
    visit(f"/datasets/{dataset.pk}/export/", HOSTILE)
    visit(f"/datasets/{dataset.pk}/import-labels/", HOSTILE)
    visit(f"/datasets/{dataset.pk}/delete/", HOSTILE)
    visit(f"/history/?image={image.pk}", HOSTILE_FILE)
    visit("/benchmarks/", HOSTILE_PRODUCT)
    visit(f"/benchmarks/{run.pk}/", HOSTILE)
    visit(f"/benchmarks/compare/?runs={run.pk}")
    visit(f"/benchmarks/products/{product.pk}/", HOSTILE_PRODUCT)
    visit(f"/benchmarks/products/{product.pk}/inspect/", HOSTILE_PRODUCT)
    visit(f"/admin/annotator/dataset/{dataset.pk}/change/")

    # The launch form counts images per product live, and lists why a launch would be refused:
    # both name the product (benchmarks.js wrote them as HTML).
    visit(f"/benchmarks/new/?dataset={dataset.pk}")
    page.check(f"input[name=products][value='{product.pk}']")
    page.wait_for_selector("#subset-counts .per-product li")
    nothing_injected("launch form: counts")
    assert page.inner_text("#subset-counts .per-product strong") == HOSTILE_PRODUCT
    page.check("input[name=background][value=no]")
    page.wait_for_selector("#subset-counts .problems li")
    nothing_injected("launch form: problems")
    assert HOSTILE_PRODUCT in page.inner_text("#subset-counts .problems")
