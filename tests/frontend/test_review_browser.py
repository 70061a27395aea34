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
    first.locator("select[name=category]").select_option("combined")
    first.locator("button[type=submit]").click()
    page.wait_for_selector(".messages li")
    assert page.locator("section.review-item").count() == 1
    decision = ReviewDecision.objects.get(image_id=image_id)
    assert (decision.category, decision.reviewer_id) == ("combined", reviewer_account.pk)
    page.screenshot(path=str(test_output_dir / "review.png"), full_page=True)

    page.goto(f"{live_server.url}/datasets/{demo_dataset.pk}/dashboard/")
    assert page.locator("[data-product=widget]").is_visible()
    assert page.locator("[data-annotator=alice]").is_visible()
    page.screenshot(path=str(test_output_dir / "dashboard.png"), full_page=True)
