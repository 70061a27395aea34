"""Reviewer pages in a real browser: settle a disagreement, then read the dashboard."""
import pytest

from annotator.models import Image, ReviewDecision
from annotator.services.labels import save_label

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_reviewer_settles_disagreement_and_reads_dashboard(browser_page, login_as, live_server, demo_dataset,
                                                           reviewer_account, make_user, test_output_dir):
    page = browser_page
    demo_dataset.label_overlap = 2
    demo_dataset.save()
    alice, bob = make_user("alice"), make_user("bob")
    images = list(Image.objects.filter(product__dataset=demo_dataset, is_anomalous=True).order_by("path")[:10])
    for index, image in enumerate(images):
        category = ["structural", "surface", "contamination", "combined"][index % 4]
        save_label(image=image, annotator=alice, background=image.product.kind == "object", category=category)
        other = "surface" if index in (2, 4) else category
        save_label(image=image, annotator=bob, background=image.product.kind == "object", category=other)

    login_as(page, reviewer_account)
    page.goto(f"{live_server.url}/review/?dataset={demo_dataset.pk}")
    items = page.locator("section.review-item")
    assert items.count() == 2
    first = items.first
    image_id = int(first.get_attribute("data-image"))
    assert "alice" in first.inner_text() and "bob" in first.inner_text()
    first.locator("select[name=background]").select_option("yes")
    first.locator("form.review-form select[name=category]").select_option("combined")
    first.locator("form.review-form button[type=submit]").click()
    page.wait_for_selector(".messages li")
    assert page.locator("section.review-item").count() == 1
    decision = ReviewDecision.objects.get(image_id=image_id)
    assert (decision.category, decision.reviewer_id) == ("combined", reviewer_account.pk)
    page.screenshot(path=str(test_output_dir / "review.png"), full_page=True)

    page.goto(f"{live_server.url}/datasets/{demo_dataset.pk}/dashboard/")
    assert page.locator("[data-product=widget]").is_visible()
    assert page.locator("[data-annotator=alice]").is_visible()
    page.screenshot(path=str(test_output_dir / "dashboard.png"), full_page=True)


def test_keyboard_review_accepts_a_label_and_moves_on(browser_page, login_as, live_server, demo_dataset,
                                                      reviewer_account, make_user, test_output_dir):
    """Issue 12: the first disagreement is shown with its mask and a defect-free reference; a digit
    accepts that annotator's label and the next disagreement comes first."""
    alice, bob = make_user("alice"), make_user("bob")
    images = list(Image.objects.filter(product__dataset=demo_dataset, is_anomalous=True).order_by("path")[:2])
    for image in images:
        save_label(image=image, annotator=alice, background=True, category="structural")
        save_label(image=image, annotator=bob, background=False, category="surface")
    page = browser_page
    login_as(page, reviewer_account)
    page.goto(f"{live_server.url}/review/?dataset={demo_dataset.pk}")
    current = page.locator("section.review-item.current")
    first = int(current.get_attribute("data-image"))
    assert current.locator("img.review-reference").count() == 1 and current.locator("img.mask").count() == 1
    assert [r.get_attribute("data-annotator") for r in current.locator("tr[data-annotator]").all()] == ["alice", "bob"]
    page.screenshot(path=str(test_output_dir / "review_keyboard.png"), full_page=True)
    page.keyboard.press("2")  # bob's label
    page.wait_for_selector(".messages li")
    decision = ReviewDecision.objects.get(image_id=first)
    assert (decision.background, decision.category) == (False, "surface")
    nxt = page.locator("section.review-item.current")
    assert int(nxt.get_attribute("data-image")) != first and page.locator("section.review-item").count() == 1
    page.keyboard.press("1")
    page.wait_for_selector("p.empty")
    assert ReviewDecision.objects.count() == 2



def test_every_card_shows_its_pictures_and_fits_its_table(browser_page, login_as, live_server, demo_dataset,
                                                          reviewer_account, make_user, test_output_dir):
    """Issue 22 item 10: every card's image and mask load as the page opens (a full page, as a
    person scrolls it or a screenshot takes it: later cards showed only their caption), and each
    card's table stays inside its border, the first (wider, with the reference) too."""
    annotators = [make_user(f"annotator-{name}") for name in ("alexandra", "bartholomew", "cornelius")]
    images = list(Image.objects.filter(product__dataset=demo_dataset, is_anomalous=True, mask_path__gt="")
                  .order_by("path")[:14])
    assert len(images) == 14
    for image in images:
        for annotator, category in zip(annotators, ("contamination", "structural", "combined")):
            save_label(image=image, annotator=annotator, background=annotator == annotators[0], category=category)
    page = browser_page
    page.set_viewport_size({"width": 1440, "height": 900})
    login_as(page, reviewer_account)
    page.goto(f"{live_server.url}/review/?dataset={demo_dataset.pk}")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(test_output_dir / "review-cards.png"), full_page=True)
    cards = page.locator("section.review-item")
    assert cards.count() == 14
    for index, card in enumerate(cards.all()):
        widths = card.locator("img").evaluate_all("imgs => imgs.map((img) => [img.getAttribute('src'), img.naturalWidth])")
        assert len(widths) >= 2  # the image and its mask
        assert all(width > 0 for _, width in widths), f"card {index + 1}: not loaded {widths}"
        assert card.evaluate("el => el.scrollWidth <= el.clientWidth"), f"card {index + 1} overflows its border"
        table, frame = card.locator("table").bounding_box(), card.bounding_box()
        assert table["x"] + table["width"] <= frame["x"] + frame["width"], f"card {index + 1}: table overflows"

    # The first card zooms to the files' own pixels (Z or 1:1) and blinks its reference (hold V).
    first = cards.first
    picture = first.locator("img.picture")
    display, reference = picture.get_attribute("src"), first.locator("img.review-reference").get_attribute("src")
    page.keyboard.press("z")
    assert "native" in first.get_attribute("class") and "size=" not in picture.get_attribute("src")
    page.wait_for_load_state("networkidle")
    assert picture.evaluate("img => img.naturalWidth") > 0 and first.locator("img.mask").evaluate("m => m.naturalWidth") > 0
    assert first.evaluate("el => el.scrollWidth <= el.clientWidth"), "the zoomed card overflows its border"
    page.click("[data-review-zoom]")
    assert picture.get_attribute("src") == display and first.get_attribute("aria-pressed") is None
    page.keyboard.down("v")
    assert picture.get_attribute("src") == reference and not first.locator("img.mask").is_visible()
    page.keyboard.up("v")
    assert picture.get_attribute("src") == display and first.locator("img.mask").is_visible()
