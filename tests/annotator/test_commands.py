"""The import_dataset, generate_demo_dataset and setup_demo management commands."""
import io
import re
import time

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from annotator.models import Dataset, Image, Product
from tests.annotator.test_layouts import make_mvtec

pytestmark = pytest.mark.django_db


def run(*args, **kwargs):
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **kwargs)
    return out.getvalue(), err.getvalue()


def test_import_dataset_prints_a_summary_per_product(settings, tmp_path):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    make_mvtec(tmp_path / "set", "bottle", train=3, test_good=2, defects={"broken_large": 2})
    make_mvtec(tmp_path / "set", "cable", train=1, test_good=1, defects={"bent": 1})

    out, err = run("import_dataset", str(tmp_path / "set"), "--name", "cables-and-bottles")

    assert "bottle: 3 train/good, 2 test/good, 2 anomalous (2 with mask) — 7 added, 0 unchanged" in out
    assert "cable: 1 train/good, 1 test/good, 1 anomalous (1 with mask) — 3 added, 0 unchanged" in out
    assert "total: 10 added, 0 unchanged" in out
    # not a terminal: whole lines, no carriage returns running together in a log
    assert "100.0% checking images 10/10 files\n" in err and "\r" not in err
    assert Dataset.objects.get().name == "cables-and-bottles"


def test_import_dataset_fails_with_one_line_per_problem(settings, tmp_path):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    folder = make_mvtec(tmp_path, "bottle", defects={"broken_large": 3})
    (folder / "ground_truth/broken_large/000_mask.png").unlink()
    (folder / "test/broken_large/002.png").write_bytes(b"garbage")

    with pytest.raises(CommandError) as raised:
        run("import_dataset", str(folder), "--layout", "mvtec")

    # 000 without its mask is no problem (an anomalous image needing a mask)
    assert str(raised.value).splitlines() == [
        "Nothing was imported (1 problem):",
        "test/broken_large/002.png: not a readable image (unknown or corrupt image format)",
    ]
    assert Dataset.objects.count() == 0 and Image.objects.count() == 0


def test_import_dataset_reports_anomalous_images_without_mask(settings, tmp_path):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    folder = make_mvtec(tmp_path, "bottle", defects={"broken_large": 3})
    (folder / "ground_truth/broken_large/000_mask.png").unlink()

    out, _err = run("import_dataset", str(folder))

    assert "3 anomalous (2 with mask, 1 anomalous without mask (needs a mask))" in out
    assert Image.objects.get(path="test/broken_large/000.png").mask_path == ""


def test_import_dataset_outside_the_data_roots(settings, tmp_path):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path / "allowed"]
    folder = make_mvtec(tmp_path / "other", "bottle")

    with pytest.raises(CommandError, match="is outside the allowed data roots"):
        run("import_dataset", str(folder))
    assert Dataset.objects.count() == 0


@pytest.mark.real_data
def test_import_real_mvtec_bottle_twice(settings, real_bottle_root):
    settings.DEFECTBENCH_DATA_ROOTS = [real_bottle_root.parent]

    started = time.monotonic()
    out, err = run("import_dataset", str(real_bottle_root))
    first_seconds = time.monotonic() - started

    line = "bottle: 209 train/good, 20 test/good, 63 anomalous (63 with mask) — 292 added, 0 unchanged"
    assert line in out.splitlines()
    assert "checking images 292/292 files" in err
    assert len(err.splitlines()) <= 12  # a line per tenth of the way, not one per file
    dataset = Dataset.objects.get()
    assert (dataset.name, dataset.layout, dataset.root) == ("bottle", "mvtec", str(real_bottle_root.resolve()))
    images = Image.objects.filter(product__dataset=dataset)
    assert images.count() == 292
    anomalous = images.filter(is_anomalous=True)
    assert anomalous.count() == 63
    assert not anomalous.filter(mask_path="").exists()
    assert dict(
        (key, count) for key, count in
        ((d, anomalous.filter(defect_type=d).count()) for d in ("broken_large", "broken_small", "contamination"))
    ) == {"broken_large": 20, "broken_small": 22, "contamination": 21}
    assert set(images.values_list("width", "height").distinct()) == {(900, 900)}
    rows = sorted(images.values_list("path", "checksum"))

    out, _ = run("import_dataset", str(real_bottle_root))

    assert "bottle: 209 train/good, 20 test/good, 63 anomalous (63 with mask) — 0 added, 292 unchanged" in out
    assert Image.objects.count() == 292 and Dataset.objects.count() == 1 and Product.objects.count() == 1
    assert sorted(images.values_list("path", "checksum")) == rows
    print(f"real bottle import: {first_seconds:.1f} s")  # shown with pytest -s
    assert first_seconds < 120


def test_generate_demo_dataset_command(tmp_path):
    out, _ = run("generate_demo_dataset", str(tmp_path / "demo"))

    assert f"Demo dataset written to {tmp_path / 'demo'}" in out
    assert (tmp_path / "demo" / "widget" / "ground_truth" / "mixed" / "003_mask.png").is_file()
    assert (tmp_path / "demo" / "labels.csv").is_file()


@pytest.fixture
def demo_var(settings, tmp_path, monkeypatch):
    settings.VAR_DIR = tmp_path / "var"
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path / "var" / "datasets"]
    monkeypatch.delenv("DEFECTBENCH_DEMO_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("DEFECTBENCH_DEMO_ANNOTATOR_PASSWORD", raising=False)
    return settings.VAR_DIR


def test_setup_demo_creates_users_and_dataset_and_is_idempotent(demo_var):
    out, _ = run("setup_demo")

    passwords = dict(re.findall(r"User (\w+) \(\w+, created\): password: (\S+)", out))
    assert set(passwords) == {"admin", "annotator"}
    admin = authenticate(username="admin", password=passwords["admin"])
    annotator = authenticate(username="annotator", password=passwords["annotator"])
    assert admin is not None and admin.role == "admin" and admin.is_superuser and admin.is_staff
    assert annotator is not None and annotator.role == "annotator" and not annotator.is_staff
    # Never stored in plaintext.
    assert passwords["admin"] not in admin.password
    assert (demo_var / "datasets" / "demo" / "labels.csv").is_file()
    dataset = Dataset.objects.get(name="demo")
    assert Image.objects.filter(product__dataset=dataset).count() == 84
    assert "total: 84 added, 0 unchanged" in out

    out, _ = run("setup_demo")

    assert "User admin (admin, exists): password unchanged" in out
    assert "User annotator (annotator, exists): password unchanged" in out
    assert "total: 0 added, 84 unchanged" in out
    assert authenticate(username="admin", password=passwords["admin"]) is not None
    assert get_user_model().objects.count() == 2
    assert Dataset.objects.count() == 1 and Image.objects.count() == 84


def test_setup_demo_takes_passwords_from_the_environment(demo_var, monkeypatch):
    run("setup_demo")
    monkeypatch.setenv("DEFECTBENCH_DEMO_ADMIN_PASSWORD", "admin-secret-1")
    monkeypatch.setenv("DEFECTBENCH_DEMO_ANNOTATOR_PASSWORD", "annotator-secret-1")

    out, _ = run("setup_demo")

    assert "admin-secret-1" not in out
    assert "password from DEFECTBENCH_DEMO_ADMIN_PASSWORD" in out
    assert authenticate(username="admin", password="admin-secret-1") is not None
    assert authenticate(username="annotator", password="annotator-secret-1") is not None
    # Run again with the same password: the admin's API token survives (a new password revokes it).
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=get_user_model().objects.get(username="admin"))
    run("setup_demo")
    assert Token.objects.filter(pk=token.pk).exists()


def test_setup_demo_restores_demo_roles(demo_var):
    run("setup_demo")
    get_user_model().objects.filter(username="admin").update(role="annotator", is_staff=False)

    run("setup_demo")

    admin = get_user_model().objects.get(username="admin")
    assert admin.role == "admin" and admin.is_staff and admin.is_superuser
