"""The defect book: reviewers pin labelled images to a category (service and pages); everyone reads it."""
import pytest
from django.db import IntegrityError, transaction

from annotator.models import DefectBookEntry, Image
from annotator.services import defect_book
from annotator.services.labels import save_label
from tests.api.labelling_factory import make_dataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(tmp_path, settings):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = make_dataset(tmp_path)
    other = make_dataset(tmp_path, name="other", products=(("gear", "object", 2),))
    anomalous = list(Image.objects.filter(product__dataset=dataset, is_anomalous=True).order_by("pk"))
    return {"dataset": dataset, "other": other, "images": anomalous,
            "other_image": Image.objects.filter(product__dataset=other, is_anomalous=True).first(),
            "good": Image.objects.filter(product__dataset=dataset, split="test", is_anomalous=False).first()}


def _pin(world, reviewer, image=None, **changes):
    values = {"dataset": world["dataset"], "image": image or world["images"][0], "category": "surface",
              "kind": "example", "note": "a scratch, not a crack", "reviewer": reviewer}
    values.update(changes)
    return defect_book.pin(**values)


# --- the service ------------------------------------------------------------------------------

def test_a_reviewer_pins_and_pinning_again_replaces_kind_and_note(world, reviewer_account, admin_account):
    entry, created = _pin(world, reviewer_account)
    assert created and (entry.kind, entry.note, entry.pinned_by) == ("example", "a scratch, not a crack", reviewer_account)
    again, created = _pin(world, admin_account, kind="borderline", note="  barely visible  ")
    assert not created and again.pk == entry.pk
    assert (again.kind, again.note, again.pinned_by) == ("borderline", "barely visible", admin_account)
    # The same image under another category is another entry.
    _pin(world, reviewer_account, category="structural", kind="counter-example")
    assert DefectBookEntry.objects.count() == 2


def test_the_database_refuses_a_second_entry_of_one_image_and_category(world, reviewer_account):
    entry, _ = _pin(world, reviewer_account)
    with pytest.raises(IntegrityError), transaction.atomic():
        DefectBookEntry.objects.create(dataset=entry.dataset, image=entry.image, category=entry.category,
                                       kind="borderline", pinned_by=reviewer_account, pinned_at=entry.pinned_at)
    assert DefectBookEntry.objects.count() == 1


def test_annotators_cannot_pin_or_unpin(world, annotator_account, reviewer_account):
    with pytest.raises(PermissionError):
        _pin(world, annotator_account)
    entry, _ = _pin(world, reviewer_account)
    with pytest.raises(PermissionError):
        defect_book.unpin(dataset=world["dataset"], entry_id=entry.pk, reviewer=annotator_account)
    assert DefectBookEntry.objects.count() == 1


@pytest.mark.parametrize("changes, words", [
    ({"category": "dents"}, "Unknown defect category 'dents'"),
    ({"kind": "favourite"}, "Unknown kind 'favourite'"),
    ({"note": "x" * (defect_book.NOTE_MAX_LENGTH + 1)}, "at most"),
])
def test_bad_values_are_refused_and_nothing_is_pinned(world, reviewer_account, changes, words):
    with pytest.raises(defect_book.BookRefused, match=words):
        _pin(world, reviewer_account, **changes)
    assert not DefectBookEntry.objects.exists()


def test_an_image_of_another_dataset_or_without_labels_is_refused(world, reviewer_account):
    with pytest.raises(defect_book.BookRefused, match="not an image of dataset demo"):
        _pin(world, reviewer_account, image=world["other_image"])
    with pytest.raises(defect_book.BookRefused, match="not an anomalous test image"):
        _pin(world, reviewer_account, image=world["good"])
    assert not DefectBookEntry.objects.exists()


def test_the_panel_leaves_out_the_image_being_labelled_and_shows_examples_first(world, reviewer_account):
    images = world["images"]
    _pin(world, reviewer_account, image=images[0], kind="borderline")
    _pin(world, reviewer_account, image=images[1], kind="counter-example")
    _pin(world, reviewer_account, image=images[2], kind="example")
    _pin(world, reviewer_account, image=images[3], kind="example", category="structural")
    shown = defect_book.panel(world["dataset"], "surface", exclude_image_id=images[1].pk)
    assert [e.image_id for e in shown.entries] == [images[2].pk, images[0].pk] and shown.total == 2
    shown = defect_book.panel(world["dataset"], "surface", limit=2)
    assert [e.kind for e in shown.entries] == ["example", "counter-example"] and shown.total == 3
    with pytest.raises(defect_book.BookRefused):
        defect_book.panel(world["dataset"], "dents")


def test_unpinning_an_entry_of_another_book_is_refused(world, reviewer_account):
    entry, _ = _pin(world, reviewer_account)
    with pytest.raises(defect_book.BookRefused, match="has no entry"):
        defect_book.unpin(dataset=world["other"], entry_id=entry.pk, reviewer=reviewer_account)
    defect_book.unpin(dataset=world["dataset"], entry_id=entry.pk, reviewer=reviewer_account)
    assert not DefectBookEntry.objects.exists()


# --- the pages ---------------------------------------------------------------------------------

def _post_pin(client, world, **changes):
    data = {"image": world["images"][0].pk, "category": "surface", "kind": "example", "note": "scratch",
            "next": "/review/"}
    data.update(changes)
    return client.post(f"/datasets/{world['dataset'].pk}/defect-book/pin/", data)


def test_a_reviewer_pins_from_a_page_and_returns_to_it(client, world, reviewer_account):
    client.force_login(reviewer_account)
    response = _post_pin(client, world, next=f"/review/?dataset={world['dataset'].pk}")
    assert response.status_code == 302 and response.url == f"/review/?dataset={world['dataset'].pk}"
    assert DefectBookEntry.objects.get().note == "scratch"
    # A return address off the site is not followed: back to the book.
    response = _post_pin(client, world, next="https://evil.example/")
    assert response.url == f"/datasets/{world['dataset'].pk}/defect-book/"


@pytest.mark.parametrize("changes, field", [
    ({"category": "dents"}, "category"), ({"kind": "favourite"}, "kind"), ({"image": "x"}, "image"),
    ({"image": "999999"}, "no image 999999"), ({"note": "n" * (defect_book.NOTE_MAX_LENGTH + 1)}, "note"),
])
def test_bad_input_on_the_pin_page_is_a_400_naming_it(client, world, reviewer_account, changes, field):
    client.force_login(reviewer_account)
    response = _post_pin(client, world, **changes)
    assert response.status_code == 400 and field in response.content.decode()
    assert not DefectBookEntry.objects.exists()


def test_an_image_of_another_dataset_is_a_400_and_nothing_changes(client, world, reviewer_account):
    client.force_login(reviewer_account)
    response = _post_pin(client, world, image=world["other_image"].pk)
    assert response.status_code == 400
    assert "is not an image of dataset demo" in response.content.decode()
    assert not DefectBookEntry.objects.exists()


def test_annotators_get_403_on_pin_and_unpin_pages(client, world, annotator_account, reviewer_account):
    entry, _ = _pin(world, reviewer_account)
    client.force_login(annotator_account)
    assert _post_pin(client, world, image=world["images"][1].pk).status_code == 403
    response = client.post(f"/datasets/{world['dataset'].pk}/defect-book/unpin/", {"entry": entry.pk})
    assert response.status_code == 403
    assert DefectBookEntry.objects.count() == 1


def test_unpin_page_takes_the_entry_out(client, world, reviewer_account):
    entry, _ = _pin(world, reviewer_account)
    client.force_login(reviewer_account)
    response = client.post(f"/datasets/{world['other'].pk}/defect-book/unpin/", {"entry": entry.pk})
    assert response.status_code == 400 and "has no entry" in response.content.decode()
    response = client.post(f"/datasets/{world['dataset'].pk}/defect-book/unpin/", {"entry": entry.pk}, follow=True)
    assert response.status_code == 200 and "taken out of Surface" in response.content.decode()
    assert not DefectBookEntry.objects.exists()


def test_the_book_page_shows_entries_to_annotators_without_edit_controls(client, world, reviewer_account,
                                                                        annotator_account):
    _pin(world, reviewer_account, image=world["images"][0], note="hairline scratch along the rim")
    _pin(world, reviewer_account, image=world["images"][1], kind="counter-example", note="dust, not a dent")
    client.force_login(annotator_account)
    page = client.get(f"/datasets/{world['dataset'].pk}/defect-book/").content.decode()
    assert "hairline scratch along the rim" in page and "dust, not a dent" in page
    assert "The shape is intact, the surface is not" in page  # the category's definition
    assert f"/files/images/{world['images'][0].pk}/image?size=256" in page
    assert f"/files/images/{world['images'][0].pk}/mask?size=256" in page
    assert "Unpin" not in page and world["images"][0].path in page
    client.force_login(reviewer_account)
    assert "Unpin" in client.get(f"/datasets/{world['dataset'].pk}/defect-book/").content.decode()


def test_the_book_page_hides_defect_folders_from_annotators_when_the_dataset_does(client, world, reviewer_account,
                                                                                   annotator_account):
    dataset = world["dataset"]
    dataset.show_defect_folder = False
    dataset.save()
    _pin(world, reviewer_account)
    client.force_login(annotator_account)
    page = client.get(f"/datasets/{dataset.pk}/defect-book/").content.decode()
    image = world["images"][0]
    assert image.path not in page and f"/{image.defect_type}/" not in page and f"image-{image.pk}.png" in page


def test_the_review_page_lists_an_images_pins_with_a_form_to_pin_it(client, world, reviewer_account, make_user):
    dataset = world["dataset"]
    dataset.label_overlap = 2
    dataset.save()
    image = world["images"][0]
    save_label(image=image, annotator=make_user("alice"), background=True, category="surface")
    save_label(image=image, annotator=make_user("bob"), background=True, category="structural")
    _pin(world, reviewer_account, image=image, kind="borderline", note="both at once?")
    client.force_login(reviewer_account)
    page = client.get(f"/review/?dataset={dataset.pk}").content.decode()
    assert "Borderline of <b>Surface</b>: “both at once?”" in page
    assert f'action="/datasets/{dataset.pk}/defect-book/pin/"' in page


@pytest.mark.parametrize("method, suffix", [("get", ""), ("post", "pin/"), ("post", "unpin/")])
def test_anonymous_visitors_are_sent_to_login(client, world, method, suffix):
    response = getattr(client, method)(f"/datasets/{world['dataset'].pk}/defect-book/{suffix}")
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert not DefectBookEntry.objects.exists()
