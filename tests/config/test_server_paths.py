"""Messages reviewers (and everyone else) read name files by their place in the data roots: never
the server's absolute paths, the configured roots, nor where a symlink points (issue 20)."""
import io
import zipfile

import pytest
from django.test import Client
from PIL import Image as PILImage
from rest_framework.test import APIClient

from inference.models import BenchmarkRun, Deployment, InspectionJob, ProductRun, Status
from tests.api.labelling_factory import make_dataset


@pytest.fixture
def world(db, tmp_path, tmp_path_factory, settings, make_user, monkeypatch):
    from inference.services import deploy

    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.setattr(deploy, "_enqueue", lambda job_id: None)
    dataset = make_dataset(tmp_path)
    product = dataset.products.get(name="widget")
    run = BenchmarkRun.objects.create(dataset=dataset, model="padim", techniques=["f1"], status=Status.SUCCEEDED)
    part = ProductRun.objects.create(run=run, product=product, status=Status.SUCCEEDED, package_path="runs/x/package")
    deployment = Deployment.objects.create(product=product, product_run=part, technique="f1")
    outside = tmp_path_factory.mktemp("elsewhere")
    PILImage.new("RGB", (8, 8)).save(outside / "new.png")
    reviewer = make_user("rita", role="reviewer")
    client = Client()
    client.force_login(reviewer)
    api = APIClient()
    api.force_authenticate(reviewer)
    return {"root": tmp_path, "outside": outside, "product": product, "run": run, "part": part,
            "deployment": deployment, "client": client, "api": api}


def _no_server_path(text: str, world) -> None:
    assert str(world["root"]) not in text and str(world["outside"]) not in text, text


def _batch_message(world, folder: str) -> str:
    response = world["client"].post(f"/benchmarks/products/{world['product'].pk}/inspect/batch/",
                                    {"folder": folder}, follow=True)
    return response.content.decode()


def test_a_batch_folder_outside_the_roots_names_neither_the_roots_nor_the_link_target(world):
    link = world["root"] / "looks-inside"
    link.symlink_to(world["outside"], target_is_directory=True)

    page = _batch_message(world, "/etc")
    assert "/etc is outside the allowed data roots" in page  # the folder as the reviewer typed it
    _no_server_path(page, world)
    page = _batch_message(world, str(link))
    assert f"{link} is outside the allowed data roots" in page
    assert "resolves to" not in page and str(world["outside"]) not in page
    assert not InspectionJob.objects.exists()


def test_the_job_page_names_its_source_by_its_place_in_the_data_roots(world):
    folder = world["root"] / "new-images"
    folder.mkdir()
    PILImage.new("RGB", (8, 8)).save(folder / "one.png")
    response = world["client"].post(f"/benchmarks/products/{world['product'].pk}/inspect/batch/",
                                    {"folder": str(folder)}, follow=True)
    page = response.content.decode()
    assert "Source: new-images" in page
    _no_server_path(page, world)

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        picture = io.BytesIO()
        PILImage.new("RGB", (8, 8)).save(picture, format="PNG")
        archive.writestr("a.png", picture.getvalue())
    upload = io.BytesIO(buffer.getvalue())
    upload.name = "batch.zip"
    page = world["client"].post(f"/benchmarks/products/{world['product'].pk}/inspect/batch/",
                                {"zip": upload}, follow=True).content.decode()
    assert "Source: the uploaded zip" in page and "/input" not in page


def test_run_and_inspection_errors_name_files_by_their_place_in_the_data_roots(world):
    image = world["root"] / "demo" / "widget" / "test" / "crack" / "000.png"
    error = f"FileNotFoundError: [Errno 2] No such file or directory: '{image}'"
    BenchmarkRun.objects.filter(pk=world["run"].pk).update(status=Status.FAILED, error=error)
    ProductRun.objects.filter(pk=world["part"].pk).update(status=Status.FAILED, error=error)
    job = InspectionJob.objects.create(product=world["product"], deployment=world["deployment"],
                                       kind=InspectionJob.Kind.BATCH, status=Status.FAILED, error=error,
                                       results=[{"name": "a.png", "error": f"cannot read {world['outside']}/a.png"}])
    answers = {
        "run page": world["client"].get(f"/benchmarks/{world['run'].pk}/"),
        "runs page": world["client"].get("/benchmarks/"),
        "run API": world["api"].get(f"/api/benchmarks/runs/{world['run'].pk}/"),
        "runs API": world["api"].get("/api/benchmarks/runs/"),
        "job page": world["client"].get(f"/benchmarks/inspections/{job.pk}/"),
        "job API": world["api"].get(f"/api/inspections/{job.pk}/"),
    }
    for where, response in answers.items():
        text = response.content.decode()
        assert response.status_code == 200, where
        _no_server_path(text, world)
        if where != "runs page":  # which shows the error's first 80 characters
            assert "demo/widget/test/crack/000.png" in text, where
    assert "cannot read a.png" in answers["job page"].content.decode()


def test_a_package_that_cannot_be_loaded_names_its_files_by_their_place_in_the_data_roots(world, monkeypatch,
                                                                                            settings):
    from inference.engine import package
    from inference.services import deploy

    manifest = f"{settings.MEDIA_ROOT}/runs/x/package/manifest.json"
    settings.DEFECTBENCH_DATA_ROOTS = [world["root"], settings.MEDIA_ROOT]

    def broken(root, device):
        raise package.PackageError(f"{manifest} cannot be read as JSON: Expecting value")

    monkeypatch.setattr(package, "load_package", broken)
    with pytest.raises(deploy.DeployRefused) as refused:
        deploy.inspector_for(world["deployment"])
    assert refused.value.messages == [
        "The deployed model cannot be loaded: runs/x/package/manifest.json cannot be read as JSON: Expecting value"]
