"""The defect book's endpoint: the workspace's panel reads it, reviewers pin and unpin through it."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from annotator.models import DefectBookEntry, Image
from annotator.services import defect_book
from tests.api.labelling_factory import make_dataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset(tmp_path, settings):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    return make_dataset(tmp_path)


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _anomalous(dataset):
    return list(Image.objects.filter(product__dataset=dataset, is_anomalous=True).order_by("pk"))


def test_a_reviewer_pins_and_unpins_through_the_api(dataset, reviewer_account):
    client = _client(reviewer_account)
    image = _anomalous(dataset)[0]
    body = {"dataset": dataset.pk, "image": image.pk, "category": "surface", "kind": "example", "note": "scratch"}
    response = client.post("/api/defect-book/", body, format="json")
    assert response.status_code == 201, response.json()
    entry = response.json()
    assert (entry["kind_label"], entry["note"], entry["pinned_by"]) == ("Example", "scratch", "rita")
    assert entry["thumbnail_url"] == f"/files/images/{image.pk}/image?size=256"
    response = client.post("/api/defect-book/", {**body, "kind": "borderline"}, format="json")
    assert response.status_code == 200 and response.json()["id"] == entry["id"]
    assert DefectBookEntry.objects.get().kind == "borderline"
    assert client.delete(entry["url"]).status_code == 204
    assert not DefectBookEntry.objects.exists()
    assert client.delete(entry["url"]).status_code == 404


@pytest.mark.parametrize("changes, field", [
    ({"category": "dents"}, "category"), ({"kind": "favourite"}, "kind"), ({"image": 10**30}, "image"),
    ({"dataset": 999999}, "dataset"), ({"note": "n" * (defect_book.NOTE_MAX_LENGTH + 1)}, "note"),
])
def test_bad_input_is_a_400_naming_the_field_and_nothing_changes(dataset, reviewer_account, changes, field):
    body = {"dataset": dataset.pk, "image": _anomalous(dataset)[0].pk, "category": "surface", "kind": "example"}
    response = _client(reviewer_account).post("/api/defect-book/", {**body, **changes}, format="json")
    assert response.status_code == 400 and field in response.json()
    assert not DefectBookEntry.objects.exists()


def test_an_image_of_another_dataset_is_a_400(dataset, reviewer_account, tmp_path):
    other = make_dataset(tmp_path, name="other", products=(("gear", "object", 1),))
    foreign = Image.objects.get(product__dataset=other, is_anomalous=True)
    response = _client(reviewer_account).post(
        "/api/defect-book/", {"dataset": dataset.pk, "image": foreign.pk, "category": "surface", "kind": "example"},
        format="json")
    assert response.status_code == 400 and "not an image of dataset demo" in response.json()["image"][0]
    assert not DefectBookEntry.objects.exists()


def test_annotators_read_the_book_but_cannot_change_it(dataset, annotator_account, reviewer_account):
    image = _anomalous(dataset)[0]
    entry, _ = defect_book.pin(dataset=dataset, image=image, category="surface", kind="example",
                               note="scratch", reviewer=reviewer_account)
    client = _client(annotator_account)
    body = {"dataset": dataset.pk, "image": _anomalous(dataset)[1].pk, "category": "surface", "kind": "example"}
    assert client.post("/api/defect-book/", body, format="json").status_code == 403
    assert client.delete(f"/api/defect-book/{entry.pk}/").status_code == 403
    response = client.get(f"/api/defect-book/?dataset={dataset.pk}&category=surface")
    assert response.status_code == 200 and [e["note"] for e in response.json()["entries"]] == ["scratch"]
    assert DefectBookEntry.objects.count() == 1
    assert APIClient().get(f"/api/defect-book/?dataset={dataset.pk}&category=surface").status_code in (401, 403)


def test_the_panel_never_shows_the_image_being_labelled(dataset, annotator_account, reviewer_account):
    """Blind labelling: the image on screen is left out, and only reviewers learn its own entry."""
    first, second = _anomalous(dataset)[:2]
    for image, kind in ((first, "example"), (second, "counter-example")):
        defect_book.pin(dataset=dataset, image=image, category="surface", kind=kind, note=kind, reviewer=reviewer_account)
    url = f"/api/defect-book/?dataset={dataset.pk}&category=surface&exclude_image={first.pk}"
    answer = _client(annotator_account).get(url).json()
    assert [e["image"] for e in answer["entries"]] == [second.pk] and answer["total"] == 1
    assert answer["this_image"] is None
    answer = _client(reviewer_account).get(url).json()
    assert [e["image"] for e in answer["entries"]] == [second.pk] and answer["this_image"]["kind"] == "example"


def test_bad_panel_queries_are_400(dataset, annotator_account):
    client = _client(annotator_account)
    assert "category" in client.get(f"/api/defect-book/?dataset={dataset.pk}&category=dents").json()
    assert "dataset" in client.get("/api/defect-book/?category=surface").json()
    assert client.get("/api/defect-book/?dataset=999999&category=surface").status_code == 404


def test_the_panel_hides_defect_folders_when_the_dataset_does(dataset, annotator_account, reviewer_account):
    dataset.show_defect_folder = False
    dataset.save()
    image = _anomalous(dataset)[0]
    defect_book.pin(dataset=dataset, image=image, category="surface", kind="example", reviewer=reviewer_account)
    entry = _client(annotator_account).get(f"/api/defect-book/?dataset={dataset.pk}&category=surface").json()["entries"][0]
    assert entry["image_path"] == f"widget/image-{image.pk}.png"


def _panel_queries(tmp_path, make_user, name, anomalous, pinned) -> int:
    dataset = make_dataset(tmp_path, name=name, products=(("widget", "object", anomalous),), good_train=1)
    reviewer = make_user(f"{name}-rev", role="reviewer")
    images = _anomalous(dataset)
    for index, image in enumerate(images[:pinned]):
        defect_book.pin(dataset=dataset, image=image, category="surface",
                        kind=defect_book.Kind.values[index % 3], note=f"note {index}", reviewer=reviewer)
    client = _client(make_user(f"{name}-ann"))
    url = f"/api/defect-book/?dataset={dataset.pk}&category=surface&exclude_image={images[-1].pk}"
    client.get(url)  # warm (as a running server is)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200 and len(response.json()["entries"]) == min(pinned, defect_book.PANEL_LIMIT)
    return len(captured.captured_queries)


def test_the_panel_costs_the_same_queries_at_any_dataset_or_book_size(tmp_path, settings, make_user):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    small = _panel_queries(tmp_path, make_user, "small", anomalous=10, pinned=8)
    large = _panel_queries(tmp_path, make_user, "large", anomalous=120, pinned=60)
    assert small == large <= 4, (small, large)


def test_the_panel_reads_through_the_dataset_category_index():
    index = next(i for i in DefectBookEntry._meta.indexes if i.name == "defect_book_by_category")
    assert index.fields[:2] == ["dataset", "category"]
