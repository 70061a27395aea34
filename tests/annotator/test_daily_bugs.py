"""Issue 12 bugs of the labelling pages, each pinned by a test."""
import pytest

from annotator.models import Image
from annotator.services.labels import save_label
from tests.api.labelling_factory import make_dataset


@pytest.fixture
def world(db, tmp_path, settings, make_user):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    dataset = make_dataset(tmp_path, overlap=2, products=(("widget", "object", 2),), good_train=1)
    annotator = make_user("ann", role="annotator")
    image = Image.objects.filter(is_anomalous=True).order_by("pk").first()
    return {"dataset": dataset, "image": image, "annotator": annotator}


def test_history_names_the_product_once(client, world):
    """Paths of a multi-product folder start with the product: /history/ showed widget/widget/..."""
    image = world["image"]
    assert image.path.startswith("widget/")
    save_label(image=image, annotator=world["annotator"], background=True, category="surface")
    client.force_login(world["annotator"])
    page = client.get("/history/").content.decode()
    assert f">{image.path}</a>" in page and "widget/widget/" not in page
    image.path = image.path[len("widget/"):]  # a one-product folder: the product is added once
    assert image.display_path == f"widget/{image.path}"


def test_login_keeps_the_username_after_a_wrong_password(client, world):
    response = client.post("/accounts/login/", {"username": "ann", "password": "wrong"})
    page = response.content.decode()
    assert response.status_code == 200 and "didn't match" in page
    assert 'name="username" autocomplete="username" value="ann"' in page
    # The cursor goes to the password, the field to fix.
    assert 'type="password" autocomplete="current-password" autofocus' in page
