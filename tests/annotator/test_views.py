"""Labelling pages: login and role checks, and what each page shows."""
import csv
import io

import pytest

from annotator.models import Image, Label, ReviewDecision
from annotator.services import queue, review
from annotator.services.labels import save_label
from tests.api.labelling_factory import make_dataset


@pytest.fixture
def world(db, tmp_path, settings, make_user):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    dataset = make_dataset(tmp_path, overlap=2, products=(("widget", "object", 2), ("fabric", "texture", 1)),
                           good_train=1)
    users = {role: make_user(f"user-{role}", role=role) for role in ("annotator", "reviewer", "admin")}
    image = Image.objects.filter(is_anomalous=True).order_by("pk").first()
    other = make_user("other")
    save_label(image=image, annotator=users["annotator"], background=True, category="surface")
    save_label(image=image, annotator=other, background=True, category="structural")
    return {"dataset": dataset, "image": image, "users": users, "other": other}


PAGES = [
    ("/datasets/{dataset}/label/", "annotator"),
    ("/images/{image}/label/", "annotator"),
    ("/history/", "annotator"),
    ("/history/?image={image}", "annotator"),
    ("/datasets/{dataset}/export/", "annotator"),
    ("/datasets/{dataset}/export/images.csv", "annotator"),
    ("/datasets/{dataset}/export/annotations.csv", "annotator"),
    ("/review/", "reviewer"),
    ("/datasets/{dataset}/dashboard/", "reviewer"),
    ("/datasets/{dataset}/import-labels/", "admin"),
]
RANK = {"annotator": 1, "reviewer": 2, "admin": 3}


@pytest.mark.parametrize("url,minimum", PAGES)
@pytest.mark.parametrize("who", ["anonymous", "annotator", "reviewer", "admin"])
def test_pages_need_login_and_role(client, world, who, url, minimum):
    url = url.format(dataset=world["dataset"].pk, image=world["image"].pk)
    if who != "anonymous":
        client.force_login(world["users"][who])
    response = client.get(url)
    if who == "anonymous":
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    elif RANK[who] < RANK[minimum]:
        assert response.status_code == 403
    else:
        assert response.status_code in (200, 302), response.status_code


def test_home_links_to_labelling(client, world):
    client.force_login(world["users"]["annotator"])
    html = client.get("/").content.decode()
    assert f"/datasets/{world['dataset'].pk}/label/" in html
    assert "/dashboard/" not in html


def test_label_start_claims_and_redirects(client, world):
    client.force_login(world["users"]["admin"])
    response = client.post(f"/datasets/{world['dataset'].pk}/label/")
    assert response.status_code == 302 and response["Location"].startswith("/images/")
    image_id = int(response["Location"].split("/")[2])
    assert Image.objects.get(pk=image_id).claims.filter(annotator=world["users"]["admin"]).exists()
    page = client.get(response["Location"])
    assert b"workspace.js" in page.content and b"workspace-config" in page.content
    # Not anomalous -> no workspace.
    good = Image.objects.filter(is_anomalous=False).first()
    assert client.get(f"/images/{good.pk}/label/").status_code == 404


def test_nothing_left_page(client, world, make_user):
    user = make_user("fast")
    for image in queue.labellable_images(dataset=world["dataset"]):
        if not Label.objects.filter(image=image).count() >= 2:
            save_label(image=image, annotator=user, background=True, category="surface")
            save_label(image=image, annotator=world["other"], background=True, category="surface")
    client.force_login(world["users"]["reviewer"])
    response = client.get(f"/datasets/{world['dataset'].pk}/label/")
    assert response.status_code == 200 and b"Nothing left to label" in response.content


def test_export_csv_annotator_sees_only_own_labels(client, world):
    client.force_login(world["users"]["annotator"])
    response = client.get(f"/datasets/{world['dataset'].pk}/export/annotations.csv")
    assert response.streaming and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["annotator"], r["category"]) for r in rows] == [("user-annotator", "surface")]
    client.force_login(world["users"]["reviewer"])
    response = client.get(f"/datasets/{world['dataset'].pk}/export/annotations.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {r["annotator"] for r in rows} == {"user-annotator", "other"}
    assert client.get(f"/datasets/{world['dataset'].pk}/export/bogus.csv").status_code == 404


def test_review_page_lists_and_decides(client, world):
    client.force_login(world["users"]["reviewer"])
    html = client.get("/review/").content.decode()
    assert f'data-image="{world["image"].pk}"' in html and world["image"].path in html and "other" in html and "user-annotator" in html
    response = client.post("/review/", {"image": world["image"].pk, "background": "no", "category": "combined"})
    assert response.status_code == 302
    decision = ReviewDecision.objects.get(image=world["image"])
    assert (decision.background, decision.category, decision.reviewer) == (False, "combined", world["users"]["reviewer"])
    assert f'data-image="{world["image"].pk}"' not in client.get("/review/").content.decode()
    # Annotators cannot post decisions.
    client.force_login(world["users"]["annotator"])
    assert client.post("/review/", {"image": world["image"].pk, "background": "yes", "category": "surface"}).status_code == 403


def test_history_page(client, world):
    review.decide(image=world["image"], reviewer=world["users"]["reviewer"], background=True, category="combined")
    client.force_login(world["users"]["annotator"])
    html = client.get("/history/").content.decode()
    assert "user-annotator" in html and ">other<" not in html  # annotators: their own labels only
    client.force_login(world["users"]["reviewer"])
    html = client.get(f"/history/?image={world['image'].pk}").content.decode()
    assert "other" in html and "review" in html and "combined" in html


def test_dashboard_shows_progress_distribution_and_annotators(client, world):
    client.force_login(world["users"]["reviewer"])
    html = client.get(f"/datasets/{world['dataset'].pk}/dashboard/").content.decode()
    assert 'data-product="widget"' in html and 'data-product="fabric"' in html
    assert 'data-annotator="user-annotator"' in html and 'data-annotator="other"' in html
    assert "<svg" in html and 'class="cat-surface"' in html
    assert "1 / 2" in html  # widget: one of two images has both labels
    assert 'data-pair="other · user-annotator"' in html


def test_import_labels_page_dry_run_and_apply(client, world):
    w = Image.objects.filter(product__name="widget", is_anomalous=True).order_by("pk")[1]
    client.force_login(world["users"]["admin"])
    data = f"image_path,background,defect_category\n{w.path},yes,contamination\n".encode()
    from django.core.files.uploadedfile import SimpleUploadedFile

    url = f"/datasets/{world['dataset'].pk}/import-labels/"
    html = client.post(url, {"file": SimpleUploadedFile("l.csv", data), "apply": "0"}).content.decode()
    assert "Dry run" in html and not Label.objects.filter(image=w).exists()
    html = client.post(url, {"file": SimpleUploadedFile("l.csv", data), "apply": "1"}).content.decode()
    assert "were created" in html and Label.objects.get(image=w).category == "contamination"
    bad = b"image_path,background,defect_category\nnope.png,yes,surface\n"
    html = client.post(url, {"file": SimpleUploadedFile("l.csv", bad), "apply": "1"}).content.decode()
    assert "unknown image" in html
