"""Issue 22, item 6: once an annotator has confirmed a product's background, its later images start
with that value selected, so a label takes two keys (a category and Enter) instead of three."""
import pytest

from annotator.models import Image, Label

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


class Keyboard:
    """Presses keys on the page and counts them: the test's measure of the annotator's effort."""

    def __init__(self, page):
        self.page, self.count = page, 0

    def press(self, *keys):
        for key in keys:
            self.page.keyboard.press(key)
            self.count += 1


def image_id(page) -> str:
    return page.get_attribute("#workspace", "data-image-id") or ""


def ready_after(page, previous: str) -> str:
    page.wait_for_function(
        "prev => { const id = document.getElementById('workspace').dataset.imageId;"
        " return id && id !== prev && !document.body.classList.contains('busy'); }", arg=previous)
    return image_id(page)


def test_ten_labels_take_two_keys_each_after_the_first(browser_page, login_as, live_server, demo_dataset,
                                                       annotator_account):
    page = browser_page
    widget = demo_dataset.products.get(name="widget")
    login_as(page, annotator_account)
    page.goto(f"{live_server.url}/datasets/{demo_dataset.pk}/label/?product={widget.pk}")
    page.click("#start-labelling")
    current = ready_after(page, "")
    keys = Keyboard(page)

    # The first image: the product's suggestion is only a suggestion, B confirms it.
    assert "suggested" in page.get_attribute("[data-background=yes]", "class")
    keys.press("1", "b", "Enter")
    assert keys.count == 3
    labelled = [current]
    for _ in range(9):
        current = ready_after(page, current)
        # Shown selected before any key, and said where it comes from.
        assert "selected" in page.get_attribute("[data-background=yes]", "class")
        assert "last label" in page.inner_text("#background-status")
        before = keys.count
        keys.press("2", "Enter")
        assert keys.count - before == 2
        labelled.append(current)
    current = ready_after(page, current)

    assert keys.count == 3 + 2 * 9
    labels = {label.image_id: label for label in Label.objects.filter(annotator=annotator_account)}
    assert sorted(labels) == sorted(int(pk) for pk in labelled)
    assert all(label.background for label in labels.values())
    # Recorded as the annotator's confirmation of a carried-over value, the first as chosen.
    assert [labels[int(pk)].background_carried for pk in labelled] == [False] + [True] * 9

    # Still changeable: N on the eleventh image, then its value carries to the twelfth.
    assert "selected" in page.get_attribute("[data-background=yes]", "class")
    keys.press("n", "3", "Enter")
    eleventh, current = current, ready_after(page, current)
    eleventh = Label.objects.get(annotator=annotator_account, image_id=int(eleventh))
    assert (eleventh.background, eleventh.background_carried, eleventh.category) == (False, False, "contamination")
    assert "selected" in page.get_attribute("[data-background=no]", "class")
    assert "selected" not in page.get_attribute("[data-background=yes]", "class")
    assert Image.objects.get(pk=int(current)).product == widget
