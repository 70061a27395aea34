"""Issue 22, item 6 (label assist): with the dataset's setting on and enough labels, the workspace
pre-selects a suggested category, marked as a suggestion; Enter confirms it, a key changes it, and
each label records what was shown and whether it was taken. With the setting off nothing is shown."""
import pytest

from annotator.models import Image, Label
from annotator.services import suggestions
from annotator.services.demo import DEFECTS
from annotator.services.labels import save_label

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def ready_after(page, previous: str) -> str:
    page.wait_for_function(
        "prev => { const id = document.getElementById('workspace').dataset.imageId;"
        " return id && id !== prev && !document.body.classList.contains('busy'); }", arg=previous)
    return page.get_attribute("#workspace", "data-image-id")


def label_two_of_each(dataset, user):
    """Another annotator's labels: two widget images of each defect (the demo's intended categories)."""
    seen = {}
    for image in Image.objects.filter(product__dataset=dataset, product__name="widget", split="test",
                                      is_anomalous=True).order_by("defect_type", "-path"):
        if seen.setdefault(image.defect_type, 0) < 2:
            seen[image.defect_type] += 1
            save_label(image=image, annotator=user, background=True, category=DEFECTS["widget"][image.defect_type])


def start(page, live_server, dataset):
    widget = dataset.products.get(name="widget")
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/label/?product={widget.pk}")
    page.click("#start-labelling")
    return ready_after(page, "")


def test_suggestion_is_preselected_enter_takes_it_and_a_key_changes_it(
        browser_page, login_as, live_server, demo_dataset, admin_account, annotator_account, make_user,
        test_output_dir):
    page = browser_page
    # The admin turns it on from the dashboard's settings.
    login_as(page, admin_account)
    page.goto(f"{live_server.url}/datasets/{demo_dataset.pk}/dashboard/")
    page.check("input[name=suggest_categories]")
    page.click("#dataset-settings button[type=submit]")
    assert "category suggestions on" in page.inner_text(".messages, body")
    assert page.is_checked("input[name=suggest_categories]")
    page.context.clear_cookies()

    label_two_of_each(demo_dataset, make_user("bob"))
    suggestions.refresh()  # what the beat task does every 30 s

    login_as(page, annotator_account)
    current = start(page, live_server, demo_dataset)
    suggested = page.locator("[data-category].selected.suggested")
    assert suggested.count() == 1
    category = suggested.get_attribute("data-category")
    status = page.inner_text("#category-status")
    assert "Suggested:" in status and "learned from 8 labels" in status and "Enter confirms" in status
    page.screenshot(path=str(test_output_dir / "suggestion.png"))

    page.keyboard.press("b")  # the first image's background needs its confirmation
    page.keyboard.press("Enter")
    following = ready_after(page, current)
    label = Label.objects.get(annotator=annotator_account, image_id=int(current))
    assert (label.category, label.suggested_category, label.suggestion_taken) == (category, category, True)

    # The next one: shown again, changed with a key (no longer marked as a suggestion), then saved.
    shown = page.get_attribute("[data-category].selected.suggested", "data-category")
    other = next(c for c in ("structural", "surface", "contamination", "combined") if c != shown)
    key = {"structural": "1", "surface": "2", "contamination": "3", "combined": "4"}[other]
    page.keyboard.press(key)
    assert page.locator("[data-category].suggested").count() == 0
    assert "Suggested was" in page.inner_text("#category-status")
    page.keyboard.press("Enter")
    ready_after(page, following)
    label = Label.objects.get(annotator=annotator_account, image_id=int(following))
    assert (label.category, label.suggested_category, label.suggestion_taken) == (other, shown, False)

    # Back to my first label: my label is shown, not a suggestion.
    page.keyboard.press("Backspace")
    page.wait_for_function("() => !document.body.classList.contains('busy')")
    page.wait_for_function("() => document.getElementById('workspace').dataset.imageId !== ''")
    assert page.locator("[data-category].suggested").count() == 0
    assert page.is_hidden("#category-status")


def test_with_the_setting_off_nothing_is_suggested(browser_page, login_as, live_server, demo_dataset,
                                                   annotator_account, make_user):
    page = browser_page
    label_two_of_each(demo_dataset, make_user("bob"))
    suggestions.refresh()
    login_as(page, annotator_account)
    current = start(page, live_server, demo_dataset)
    assert page.locator("[data-category].selected").count() == 0
    assert page.is_hidden("#category-status")
    page.keyboard.press("b")
    page.keyboard.press("Enter")  # no category: refused, as always
    assert "Choose a defect category" in page.inner_text("#ws-message")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    ready_after(page, current)
    label = Label.objects.get(annotator=annotator_account, image_id=int(current))
    assert (label.suggested_category, label.suggestion_taken) == ("", False)
