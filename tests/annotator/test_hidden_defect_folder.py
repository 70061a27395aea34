"""A dataset that hides its defect folders from annotators (``show_defect_folder`` off): no page, API
answer, download or file an annotator gets names them; reviewers still see them."""
import csv
import io
import json

import pytest
from rest_framework.test import APIClient

from annotator.models import Image
from annotator.services import queue
from tests.api.labelling_factory import make_dataset

FOLDERS = ("broken_large", "glue_strip")


@pytest.fixture
def hidden(db, tmp_path, settings, make_user):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    dataset = make_dataset(tmp_path, overlap=2, defect_types=FOLDERS)
    dataset.show_defect_folder = False
    dataset.save()
    annotator, reviewer = make_user("ann"), make_user("rita", role="reviewer")
    product = dataset.products.get(name="widget")
    image = product.images.filter(is_anomalous=True).order_by("pk").first()
    queue.submit_label(user=annotator, image=image, background=True, category="structural")
    return {"dataset": dataset, "product": product, "image": image, "annotator": annotator, "reviewer": reviewer}


def _leaks(text: str) -> list[str]:
    return [folder for folder in FOLDERS if folder in text]


def _pages(world):
    image, product = world["image"], world["product"]
    return [f"/images/{image.pk}/label/", f"/products/{product.pk}/labels/", f"/products/{product.pk}/",
            f"/products/{product.pk}/?split=test", "/history/", f"/history/?image={image.pk}",
            f"/datasets/{world['dataset'].pk}/label/?product={product.pk}"]


def _api(world):
    image, product = world["image"], world["product"]
    return [f"/api/images/{image.pk}/", f"/api/images/?product={product.pk}", f"/api/images/{image.pk}/workspace/",
            f"/api/history/?image={image.pk}", "/api/history/", f"/api/labels/?image={image.pk}"]


def test_no_page_names_a_hidden_folder_to_an_annotator(client, hidden):
    client.force_login(hidden["annotator"])
    for url in _pages(hidden):
        response = client.get(url)
        assert response.status_code == 200, url
        assert not _leaks(response.content.decode()), url
    workspace = client.get(f"/images/{hidden['image'].pk}/label/").content.decode()
    assert f"widget/image-{hidden['image'].pk}.png" in workspace  # the image by product and id instead
    assert '"showDefectFolder": false' in workspace


def test_reviewers_still_see_the_folders(client, hidden):
    client.force_login(hidden["reviewer"])
    image = hidden["image"]
    workspace = client.get(f"/images/{image.pk}/label/").content.decode()
    assert image.path in workspace and '"showDefectFolder": true' in workspace
    assert f'<td>{image.defect_type}</td>' in client.get(f"/products/{image.product_id}/labels/").content.decode()
    api = APIClient()
    api.force_authenticate(hidden["reviewer"])
    data = api.get(f"/api/images/{image.pk}/").json()
    assert data["defect_type"] == image.defect_type and data["path"] == image.path


def test_no_api_answer_names_a_hidden_folder_to_an_annotator(hidden):
    api = APIClient()
    api.force_authenticate(hidden["annotator"])
    for url in _api(hidden):
        response = api.get(url)
        assert response.status_code == 200, url
        assert not _leaks(response.content.decode()), (url, response.content[:300])
    data = api.get(f"/api/images/{hidden['image'].pk}/").json()
    assert data["defect_type"] is None and data["path"] == f"widget/image-{hidden['image'].pk}.png"
    handed = api.post("/api/queue/next/", {"product": hidden["product"].pk}, format="json")
    assert handed.status_code == 200 and not _leaks(handed.content.decode())


def test_an_annotator_cannot_find_hidden_images_by_their_folder(client, hidden):
    api = APIClient()
    api.force_authenticate(hidden["annotator"])
    assert api.get(f"/api/images/?defect_type={FOLDERS[0]}").json()["count"] == 0
    anomalous = Image.objects.filter(product=hidden["product"], is_anomalous=True).count()
    client.force_login(hidden["annotator"])
    page = client.get(f"/products/{hidden['product'].pk}/?split=test&defect_type={FOLDERS[0]}").content.decode()
    assert "0 images" in page
    page = client.get(f"/products/{hidden['product'].pk}/?split=test&defect_type=anomalous").content.decode()
    assert f"{anomalous} images" in page and "test/anomalous" in page
    reviewer = APIClient()
    reviewer.force_authenticate(hidden["reviewer"])
    assert reviewer.get(f"/api/images/?defect_type={FOLDERS[0]}").json()["count"] > 0


@pytest.mark.parametrize("variant", ["images", "annotations"])
def test_an_annotators_export_names_no_hidden_folder(client, hidden, variant):
    client.force_login(hidden["annotator"])
    for url in (f"/datasets/{hidden['dataset'].pk}/export/{variant}.csv",
                f"/api/export/?dataset={hidden['dataset'].pk}&variant={variant}"):
        text = b"".join(client.get(url).streaming_content).decode()
        rows = list(csv.DictReader(io.StringIO(text)))
        assert rows and not _leaks(text), url
        assert rows[0]["image_path"] == f"widget/image-{hidden['image'].pk}.png" and rows[0]["defect_type"] == ""


def test_image_files_name_no_folder(client, hidden):
    """The file URLs hold only the image's id, and files are sent under their cache name."""
    client.force_login(hidden["annotator"])
    image = hidden["image"]
    for url in (f"/files/images/{image.pk}/image", f"/files/images/{image.pk}/mask?size=256"):
        response = client.get(url)
        assert response.status_code == 200
        assert not _leaks(url + json.dumps(dict(response.headers)))


def test_the_setting_shown_again_shows_the_folders(client, hidden):
    hidden["dataset"].show_defect_folder = True
    hidden["dataset"].save()
    client.force_login(hidden["annotator"])
    page = client.get(f"/images/{hidden['image'].pk}/label/").content.decode()
    assert hidden["image"].path in page and hidden["image"].defect_type in page
