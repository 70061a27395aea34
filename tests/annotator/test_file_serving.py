"""Files are served only from inside the data roots, checked when served, whatever the stored path says."""
import pytest

from annotator.models import Image
from tests.api.labelling_factory import make_dataset


@pytest.fixture
def world(db, tmp_path, settings, make_user):
    root = tmp_path / "roots"
    root.mkdir()
    settings.DEFECTBENCH_DATA_ROOTS = [root]
    settings.VAR_DIR = tmp_path / "var"
    dataset = make_dataset(root, products=(("widget", "object", 2),), good_train=1)
    image = Image.objects.filter(is_anomalous=True).order_by("pk").first()
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    return {"dataset": dataset, "image": image, "secret": secret,
            "annotator": make_user("ann"), "admin": make_user("ada", role="admin", is_staff=True, is_superuser=True)}


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_an_imported_image_replaced_by_a_symlink_out_of_the_roots_is_not_served(client, world):
    image = world["image"]
    file = image.file_path
    file.unlink()
    file.symlink_to(world["secret"])
    client.force_login(world["annotator"])
    for url in (f"/files/images/{image.pk}/image", f"/files/images/{image.pk}/image?size=256"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert b"root:x" not in _body(response)


def test_a_symlinked_mask_out_of_the_roots_is_not_served(client, world):
    image = world["image"]
    image.mask_file_path.unlink()
    image.mask_file_path.symlink_to(world["secret"])
    client.force_login(world["annotator"])
    assert client.get(f"/files/images/{image.pk}/mask").status_code == 404


def test_a_stored_path_climbing_out_of_the_dataset_is_not_served(client, world):
    image = world["image"]
    depth = len(image.file_path.relative_to("/").parts)
    Image.objects.filter(pk=image.pk).update(path="../" * depth + str(world["secret"]).lstrip("/"))
    client.force_login(world["annotator"])
    response = client.get(f"/files/images/{image.pk}/image")
    assert response.status_code == 404
    assert b"root:x" not in _body(response)


def test_the_admin_refuses_a_path_out_of_the_dataset(client, world):
    image = world["image"]
    client.force_login(world["admin"])
    url = f"/admin/annotator/image/{image.pk}/change/"
    form = {"product": image.product_id, "split": "test", "is_anomalous": "on", "defect_type": "crack",
            "path": "../../../../etc/passwd", "mask_path": "/etc/shadow"}
    response = client.post(url, form)
    assert response.status_code == 200  # the form again, with errors
    html = response.content.decode()
    assert "may not contain &#x27;..&#x27;" in html
    assert "relative to the dataset folder" in html
    image.refresh_from_db()
    assert image.path.startswith("widget/") and not image.mask_path.startswith("/")


def test_the_admin_refuses_a_dataset_folder_outside_the_roots(client, world, tmp_path):
    dataset = world["dataset"]
    client.force_login(world["admin"])
    response = client.post(f"/admin/annotator/dataset/{dataset.pk}/change/", {
        "name": dataset.name, "layout": dataset.layout, "root": "/etc", "label_overlap": 1,
        "products-TOTAL_FORMS": 0, "products-INITIAL_FORMS": 0,
    })
    assert response.status_code == 200
    html = response.content.decode()
    # The message does not list the server's data roots (server paths stay in the settings).
    assert "/etc is outside the allowed data roots (DEFECTBENCH_DATA_ROOTS)" in html
    assert str(tmp_path) not in html.replace(dataset.root, "")
    dataset.refresh_from_db()
    assert dataset.root != "/etc"


def test_a_corrupted_image_gives_a_clear_404_on_its_display_copy(client, world):
    image = world["image"]
    image.file_path.write_bytes(b"not a png any more")
    client.force_login(world["annotator"])
    response = client.get(f"/files/images/{image.pk}/image?size=256")
    assert response.status_code == 404
    assert b"not a readable image" in response.content


def test_files_still_served_normally(client, world):
    image = world["image"]
    client.force_login(world["annotator"])
    assert client.get(f"/files/images/{image.pk}/image").status_code == 200
    assert client.get(f"/files/images/{image.pk}/image?size=128").status_code == 200
