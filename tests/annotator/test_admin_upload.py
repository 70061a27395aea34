"""Uploading a dataset zip through the Dataset admin (admins only)."""
import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotator.models import Dataset, Image, ImportJob
from annotator.services import upload_jobs
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


def upload(client, data: dict, django_capture_on_commit_callbacks):
    """POST the form, run the queued job as the worker would; the job page afterwards."""
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(reverse(UPLOAD_URL), data)
    if response.status_code != 302:
        return response
    assert len(queued) == 1  # one job queued after the commit
    job = ImportJob.objects.latest("created_at")
    assert response["Location"] == reverse("admin:annotator_dataset_upload_job", args=[job.pk])
    assert job.status == "queued" and Dataset.objects.count() == 0  # nothing imported in the request
    upload_jobs.run_job(job.pk)
    return client.get(response["Location"])


def test_admin_uploads_a_zip_and_sees_the_summary(client, admin_account, bottle_zip,
                                                  django_capture_on_commit_callbacks):
    client.force_login(admin_account)
    assert client.get(reverse(UPLOAD_URL)).status_code == 200

    response = upload(client, {"file": SimpleUploadedFile("bottles.zip", bottle_zip), "layout": "auto",
                               "name": "Bottles"}, django_capture_on_commit_callbacks)

    page = response.content.decode()
    assert "Done" in page and 'id="job-progress"' in page
    assert "bottle: 3 train/good, 2 test/good, 2 anomalous (2 with mask) — 7 added, 0 unchanged" in page
    dataset = Dataset.objects.get()
    assert (dataset.name, dataset.layout, dataset.created_by) == ("Bottles", "mvtec", admin_account)
    assert Image.objects.count() == 7


def test_failed_upload_lists_every_problem_and_imports_nothing(client, admin_account, settings, tmp_path,
                                                              django_capture_on_commit_callbacks):
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

    response = upload(client, {"file": SimpleUploadedFile("bad.zip", buffer.getvalue()), "layout": "auto"},
                      django_capture_on_commit_callbacks)

    page = response.content.decode()
    assert "Failed" in page
    assert "../evil.png: path escapes the dataset folder" in page
    assert Dataset.objects.count() == 0

    # Without the evil entry the file problems are listed, one per file.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder.parent).as_posix())
    response = upload(client, {"file": SimpleUploadedFile("bad2.zip", buffer.getvalue()), "layout": "mvtec"},
                      django_capture_on_commit_callbacks)
    page = response.content.decode()
    assert "Failed" in page
    assert "no mask" not in page  # 001 without its mask is no problem: it needs a mask
    assert "bottle/test/broken_large/002.png: not a readable image" in page
    assert Dataset.objects.count() == 0 and Image.objects.count() == 0

    # Without the garbage image the upload imports, 001 as an anomalous image that needs a mask.
    (folder / "test/broken_large/002.png").unlink()
    (folder / "ground_truth/broken_large/002_mask.png").unlink()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder.parent).as_posix())
    response = upload(client, {"file": SimpleUploadedFile("good.zip", buffer.getvalue()), "layout": "mvtec"},
                      django_capture_on_commit_callbacks)
    page = response.content.decode()
    assert "Done" in page
    assert "2 anomalous (1 with mask, 1 anomalous without mask (needs a mask))" in page
    admin_page = client.get(reverse("admin:annotator_product_changelist")).content.decode()
    assert "without mask (needs a mask)" in admin_page.lower()
    assert '<td class="field-needs_mask">1</td>' in admin_page


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


def test_skip_invalid_upload_imports_the_valid_files_and_shows_the_problem_report(
        client, admin_account, settings, tmp_path, django_capture_on_commit_callbacks):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    folder = make_mvtec(tmp_path / "src", "bottle", defects={"broken_large": 3})
    (folder / "test/broken_large/002.png").write_bytes(b"garbage")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder.parent).as_posix())
    client.force_login(admin_account)

    page = upload(client, {"file": SimpleUploadedFile("b.zip", buffer.getvalue()), "layout": "auto",
                           "skip_invalid": "on"}, django_capture_on_commit_callbacks).content.decode()

    assert "1 problem(s), files left out" in page
    dataset = Dataset.objects.get()
    assert Image.objects.count() == 7
    change = client.get(reverse("admin:annotator_dataset_change", args=[dataset.pk])).content.decode()
    assert "bottle/test/broken_large/002.png" in change and "not a readable image" in change


def test_cancelled_job_imports_nothing(client, admin_account, bottle_zip, django_capture_on_commit_callbacks):
    client.force_login(admin_account)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse(UPLOAD_URL), {"file": SimpleUploadedFile("b.zip", bottle_zip), "layout": "auto"})
    job = ImportJob.objects.get()
    client.post(reverse("admin:annotator_dataset_upload_cancel", args=[job.pk]))
    assert upload_jobs.run_job(job.pk) == "cancelled"
    state = client.get(reverse("admin:annotator_dataset_upload_status", args=[job.pk])).json()
    assert state["status"] == "cancelled" and state["finished"]
    assert Dataset.objects.count() == 0
    assert upload_jobs.run_job(job.pk) == "cancelled"  # idempotent


def test_cancel_while_checking_stops_and_writes_nothing(admin_account, bottle_zip, monkeypatch, settings,
                                                        django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        job = upload_jobs.start_upload(SimpleUploadedFile("b.zip", bottle_zip), created_by=admin_account)
    monkeypatch.setattr(upload_jobs, "PROGRESS_EVERY_S", 0)

    from annotator.services import importing
    real_import = importing.import_dataset

    def import_dataset(*args, **kwargs):  # the admin presses cancel once the images are being checked
        assert ImportJob.objects.get(pk=job.pk).status == "running"
        assert upload_jobs.cancel_import(job).cancel_requested
        return real_import(*args, **kwargs)

    monkeypatch.setattr(importing, "import_dataset", import_dataset)
    assert upload_jobs.run_job(job.pk) == "cancelled"
    assert Dataset.objects.count() == 0 and Image.objects.count() == 0
    assert not any((settings.MEDIA_ROOT / "datasets").iterdir())  # the unpacked files are gone
    assert not any((settings.MEDIA_ROOT / "uploads").iterdir())  # and the stored zip


def test_a_job_redelivered_after_its_worker_died_starts_over_cleanly(admin_account, bottle_zip, settings,
                                                                     django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        job = upload_jobs.start_upload(SimpleUploadedFile("b.zip", bottle_zip), created_by=admin_account)
    partial = settings.MEDIA_ROOT / "datasets" / "0123abcd"  # what the killed worker had unpacked
    (partial / "b" / "bottle").mkdir(parents=True)
    (partial / "b" / "bottle" / "half.png").write_bytes(b"\x89PNG")
    ImportJob.objects.filter(pk=job.pk).update(status="running", unpacked_path=str(partial))
    assert upload_jobs.run_job(job.pk) == "done"
    assert not partial.exists() and Dataset.objects.get().root_path.is_dir()
    assert Image.objects.count() == 7
