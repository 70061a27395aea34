"""Uploading a dataset zip through the Dataset admin (admins only)."""
import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotator.models import Dataset, Image
from tests.annotator.test_layouts import make_mvtec

pytestmark = pytest.mark.django_db

UPLOAD_URL = "admin:annotator_dataset_upload"


@pytest.fixture
def bottle_zip(settings, tmp_path):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    folder = make_mvtec(tmp_path / "src", "bottle", train=3, test_good=2, defects={"broken_large": 2})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder.parent).as_posix())
    return buffer.getvalue()


def test_changelist_shows_the_upload_button_to_admins(client, admin_account):
    client.force_login(admin_account)

    response = client.get(reverse("admin:annotator_dataset_changelist"))

    assert response.status_code == 200
    assert "Upload dataset (zip)" in response.content.decode()
    assert reverse(UPLOAD_URL) in response.content.decode()


def test_admin_uploads_a_zip_and_sees_the_summary(client, admin_account, bottle_zip):
    client.force_login(admin_account)
    assert client.get(reverse(UPLOAD_URL)).status_code == 200

    response = client.post(
        reverse(UPLOAD_URL),
        {"file": SimpleUploadedFile("bottles.zip", bottle_zip), "layout": "auto", "name": "Bottles"},
        follow=True,
    )

    assert response.redirect_chain[-1][0] == reverse("admin:annotator_dataset_changelist")
    page = response.content.decode()
    assert "bottle: 3 train/good, 2 test/good, 2 anomalous (2 with mask) — 7 added, 0 unchanged" in page
    dataset = Dataset.objects.get()
    assert (dataset.name, dataset.layout, dataset.created_by) == ("Bottles", "mvtec", admin_account)
    assert Image.objects.count() == 7


def test_failed_upload_lists_every_problem_and_imports_nothing(client, admin_account, settings, tmp_path):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    folder = make_mvtec(tmp_path / "src", "bottle", defects={"broken_large": 3})
    (folder / "ground_truth/broken_large/001_mask.png").unlink()
    (folder / "test/broken_large/002.png").write_bytes(b"garbage")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder.parent).as_posix())
        archive.writestr("../evil.png", b"evil")
    client.force_login(admin_account)

    response = client.post(
        reverse(UPLOAD_URL), {"file": SimpleUploadedFile("bad.zip", buffer.getvalue()), "layout": "auto"}
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert "Nothing was imported (1 problem)" in page
    assert "../evil.png: path escapes the dataset folder" in page
    assert Dataset.objects.count() == 0

    # Without the evil entry the file problems are listed, one per file.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder.parent).as_posix())
    response = client.post(
        reverse(UPLOAD_URL), {"file": SimpleUploadedFile("bad.zip", buffer.getvalue()), "layout": "mvtec"}
    )
    page = response.content.decode()
    assert response.status_code == 400
    assert "Nothing was imported (2 problems)" in page
    assert "bottle/test/broken_large/001.png: no mask at bottle/ground_truth/broken_large/001_mask.png" in page
    assert "bottle/test/broken_large/002.png: not a readable image" in page
    assert Dataset.objects.count() == 0 and Image.objects.count() == 0


def test_upload_form_requires_a_file(client, admin_account):
    client.force_login(admin_account)

    response = client.post(reverse(UPLOAD_URL), {"layout": "auto"})

    assert response.status_code == 400
    assert "This field is required." in response.content.decode()


def test_staff_annotator_is_refused(client, make_user, bottle_zip):
    annotator = make_user("stan", role="annotator", is_staff=True)
    client.force_login(annotator)

    assert client.get(reverse(UPLOAD_URL)).status_code == 403
    response = client.post(reverse(UPLOAD_URL), {"file": SimpleUploadedFile("b.zip", bottle_zip), "layout": "auto"})
    assert response.status_code == 403
    assert Dataset.objects.count() == 0


def test_annotator_without_staff_is_sent_to_the_admin_login(client, annotator_account):
    client.force_login(annotator_account)

    response = client.get(reverse(UPLOAD_URL))

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
