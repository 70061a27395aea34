"""The labelling API end to end: queue, labels, review, agreement, export, import, files."""
import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from annotator.models import Image, Label, LabelHistory, Skip
from tests.api.labelling_factory import make_dataset


@pytest.fixture
def dataset(db, tmp_path, settings):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    return make_dataset(tmp_path, products=(("widget", "object", 3),), good_train=2)


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_queue_label_and_workspace(dataset, annotator_account, make_user):
    client = client_for(annotator_account)
    widget = dataset.products.get()
    response = client.post("/api/queue/next/", {"product": widget.pk}, format="json")
    assert response.status_code == 200
    data = response.data
    image_id = data["image"]["id"]
    assert data["product"]["suggested_background"] is True
    assert len(data["references"]) == 2 and data["my_label"] is None
    assert data["progress_user"] == {"done": 0, "total": 3, "percent": 0}
    assert data["image"]["image_url"] == f"/files/images/{image_id}/image"
    assert image_id not in data["upcoming"] and len(data["upcoming"]) == 2

    response = client.post("/api/labels/", {"image": image_id, "background": True, "category": "surface"}, format="json")
    assert response.status_code == 201 and response.data["annotator"] == annotator_account.username
    # Re-submitting changes the same label (no duplicate, no error).
    response = client.post("/api/labels/", {"image": image_id, "background": False, "category": "surface"}, format="json")
    assert response.status_code == 201 and Label.objects.count() == 1
    assert LabelHistory.objects.filter(image_id=image_id).count() == 2

    workspace = client.get(f"/api/images/{image_id}/workspace/").data
    assert workspace["my_label"]["background"] is False
    assert workspace["labelled_ids"] == [image_id]
    assert [h["action"] for h in workspace["history"]] == ["updated", "created"]

    # Overlap 1: another annotator may not label it too.
    other = client_for(make_user("other"))
    response = other.post("/api/labels/", {"image": image_id, "background": True, "category": "surface"}, format="json")
    assert response.status_code == 409
    # Validation errors are 400s.
    assert client.post("/api/labels/", {"image": image_id, "background": True, "category": "weird"},
                       format="json").status_code == 400
    good = Image.objects.filter(is_anomalous=False).first()
    assert client.post("/api/labels/", {"image": good.pk, "background": True, "category": "surface"},
                       format="json").status_code == 409


def test_skip_and_nothing_left(dataset, annotator_account):
    client = client_for(annotator_account)
    first = client.post("/api/queue/next/", {"dataset": dataset.pk}, format="json").data["image"]["id"]
    assert client.post("/api/queue/skip/", {"image": first}, format="json").status_code == 204
    assert Skip.objects.filter(image_id=first).exists()
    seen = []
    while (response := client.post("/api/queue/next/", {}, format="json")).status_code == 200:
        image_id = response.data["image"]["id"]
        seen.append(image_id)
        client.post("/api/labels/", {"image": image_id, "background": True, "category": "combined"}, format="json")
    assert response.status_code == 204
    assert seen[-1] == first and len(seen) == 3  # the skipped image came back last


def test_files_redirect_to_login_checked_view(dataset, annotator_account):
    client = client_for(annotator_account)
    image = Image.objects.filter(is_anomalous=True).first()
    response = client.get(f"/api/images/{image.pk}/mask/?size=256")
    assert response.status_code == 302 and response["Location"] == f"/files/images/{image.pk}/mask?size=256"
    assert client.get(f"/api/images/{image.pk}/image/?size=7").status_code == 400
    listing = client.get(f"/api/images/?product={image.product_id}&split=test&is_anomalous=true").data
    assert listing["count"] == 3


def test_review_agreement_export_import(dataset, make_user, reviewer_account, admin_account):
    dataset.label_overlap = 2
    dataset.save()
    a, b = client_for(make_user("alice")), client_for(make_user("bob"))
    images = list(Image.objects.filter(is_anomalous=True).order_by("pk"))
    for image, (cat_a, cat_b) in zip(images, [("surface", "surface"), ("surface", "structural"), ("combined", "combined")]):
        assert a.post("/api/labels/", {"image": image.pk, "background": True, "category": cat_a}, format="json").status_code == 201
        assert b.post("/api/labels/", {"image": image.pk, "background": True, "category": cat_b}, format="json").status_code == 201
    reviewer = client_for(reviewer_account)
    items = reviewer.get(f"/api/review/?dataset={dataset.pk}").data["results"]
    assert [item["image"]["id"] for item in items] == [images[1].pk]
    assert {(l["annotator"], l["category"]) for l in items[0]["labels"]} == {("alice", "surface"), ("bob", "structural")}
    response = reviewer.post(f"/api/review/{images[1].pk}/", {"background": True, "category": "structural"}, format="json")
    assert response.status_code == 200 and response.data["reviewer"] == reviewer_account.username
    assert reviewer.get(f"/api/review/?dataset={dataset.pk}").data["results"] == []

    stats = reviewer.get(f"/api/agreement/?dataset={dataset.pk}").data
    category = stats["fields"]["category"]["pairs"][0]
    assert category["n"] == 3 and category["observed_agreement"] == pytest.approx(2 / 3)
    assert stats["fields"]["background"]["pairs"][0]["cohen_kappa"] is None  # all "yes": undefined

    response = reviewer.get(f"/api/export/?dataset={dataset.pk}&variant=images")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {r["image_path"]: (r["category"], r["source"]) for r in rows} == {
        images[0].path: ("surface", "unanimous"), images[1].path: ("structural", "review"),
        images[2].path: ("combined", "unanimous")}
    assert reviewer.get(f"/api/export/?dataset={dataset.pk}&variant=nope").status_code == 400

    admin = client_for(admin_account)
    text = f"image_path,background,defect_category\n{images[0].path},no,contamination\n".encode()
    response = admin.post("/api/labels-import/", {"file": SimpleUploadedFile("x.csv", text), "dataset": dataset.name,
                                                   "dry_run": "true"}, format="multipart")
    assert response.status_code == 200 and response.data["dry_run"] and response.data["created"] == 1
    assert not Label.objects.filter(annotator=admin_account).exists()
    response = admin.post("/api/labels-import/", {"file": SimpleUploadedFile("x.csv", text), "dataset": dataset.name,
                                                   "annotator": "alice"}, format="multipart")
    assert response.status_code == 200 and response.data["applied"] and response.data["updated"] == 1
    assert Label.objects.get(image=images[0], annotator__username="alice").category == "contamination"
    bad = b"image_path,background,defect_category\nmissing.png,yes,surface\n"
    response = admin.post("/api/labels-import/", {"file": SimpleUploadedFile("x.csv", bad), "dataset": dataset.name},
                          format="multipart")
    assert response.status_code == 400 and response.data["errors"][0]["line"] == 2


def test_history_endpoint_scoped_by_role(dataset, annotator_account, reviewer_account, make_user):
    images = list(Image.objects.filter(is_anomalous=True).order_by("pk"))
    client_for(annotator_account).post("/api/labels/", {"image": images[0].pk, "background": True, "category": "surface"}, format="json")
    client_for(make_user("other")).post("/api/labels/", {"image": images[1].pk, "background": True, "category": "surface"}, format="json")
    assert client_for(annotator_account).get("/api/history/").data["count"] == 1
    assert client_for(reviewer_account).get("/api/history/").data["count"] == 2
    assert client_for(reviewer_account).get(f"/api/history/?image={images[1].pk}").data["count"] == 1


def test_queue_and_review_refuse_what_does_not_fit(db, tmp_path, settings, make_user):
    """Another dataset's product, skipping or deciding a train/good image: 400, nothing changes."""
    from rest_framework.test import APIClient

    from annotator.models import Claim, Image, ReviewDecision, Skip
    from tests.api.labelling_factory import make_dataset

    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    first = make_dataset(tmp_path, name="first")
    second = make_dataset(tmp_path, name="second", products=(("gizmo", "object", 2),))
    annotator, reviewer = make_user("ann2"), make_user("rev2", role="reviewer")
    api = APIClient()
    api.force_authenticate(annotator)
    response = api.post("/api/queue/next/", {"dataset": first.pk, "product": second.products.get().pk}, format="json")
    assert response.status_code == 400 and "product" in response.json()
    assert not Claim.objects.exists()
    good = Image.objects.filter(product__dataset=first, split="train").first()
    response = api.post("/api/queue/skip/", {"image": good.pk}, format="json")
    assert response.status_code == 400 and "image" in response.json()
    assert not Skip.objects.exists()
    api.force_authenticate(reviewer)
    response = api.post(f"/api/review/{good.pk}/", {"background": True, "category": "surface"}, format="json")
    assert response.status_code == 400 and "image" in response.json()
    assert not ReviewDecision.objects.exists()


def test_opening_the_label_page_claims_nothing(db, tmp_path, settings, make_user, client):
    from annotator.models import Claim
    from tests.api.labelling_factory import make_dataset

    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = make_dataset(tmp_path)
    client.force_login(make_user("ann3"))
    response = client.get(f"/datasets/{dataset.pk}/label/")
    assert response.status_code == 200 and b"Start labelling" in response.content
    assert not Claim.objects.exists()
    response = client.post(f"/datasets/{dataset.pk}/label/")
    assert response.status_code == 302 and Claim.objects.count() == 1


def test_bad_query_values_get_a_400_naming_the_parameter(dataset, reviewer_account):
    """A null character, a non-number or an unknown choice in a filter is refused with a 400 that
    names the parameter (PostgreSQL cannot even compare a string holding a null character: this
    was a 500)."""
    client = client_for(reviewer_account)
    image = Image.objects.filter(is_anomalous=True).first()
    for url, name in [
        ("/api/labels/?annotator=ann%00", "annotator"),
        ("/api/images/?defect_type=crack%00", "defect_type"),
        ("/api/images/?split=somewhere", "split"),
        ("/api/images/?dataset=null", "dataset"),
        ("/api/history/?image=first", "image"),
        ("/api/review/?include_decided=perhaps", "include_decided"),
        # A superscript two passes str.isdigit() but not int(): this was a 500 too.
        (f"/api/images/{image.pk}/image/?size=%C2%B2", "size"),
    ]:
        response = client.get(url)
        assert response.status_code == 400 and name in response.json(), (url, response.status_code)
    assert client.get("/api/agreement/").json() == {"dataset": ["This field is required."]}
    assert client.get(f"/api/images/?defect_type=crack&dataset={dataset.pk}").json()["count"] == 2
