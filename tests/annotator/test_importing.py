"""Dataset import: counts, idempotence, and every bad input refused with nothing written."""
import hashlib
import io
import os
import stat
import zipfile
import zlib
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from annotator.models import Dataset, Image, Product
from annotator.services.importing import ImportFailed, import_dataset, import_zip
from tests.annotator.test_layouts import make_btad, make_folder_product, make_mvtec, write_mask, write_png

pytestmark = pytest.mark.django_db


def db_counts():
    return Dataset.objects.count(), Product.objects.count(), Image.objects.count()


def db_rows():
    return sorted(Image.objects.values_list("path", "checksum", "width", "height", "mask_path", "split"))


def failure_of(path, **kwargs) -> list[str]:
    with pytest.raises(ImportFailed) as raised:
        import_dataset(path, **kwargs)
    return raised.value.errors


# --- Happy path ----------------------------------------------------------------------------


def test_import_counts_and_rows(data_root, admin_account):
    folder = make_mvtec(data_root, "bottle", train=4, test_good=2, defects={"broken_large": 3, "contamination": 1})

    report = import_dataset(folder, created_by=admin_account)

    assert report.created
    assert report.layout == "mvtec"
    assert (report.added, report.updated, report.unchanged, report.missing) == (10, 0, 0, 0)
    assert report.counts == {
        ("bottle", "train", "good"): 4,
        ("bottle", "test", "good"): 2,
        ("bottle", "test", "broken_large"): 3,
        ("bottle", "test", "contamination"): 1,
    }
    assert report.products["bottle"].line() == (
        "bottle: 4 train/good, 2 test/good, 4 anomalous (4 with mask) — 10 added, 0 unchanged"
    )
    dataset = report.dataset
    assert (dataset.name, dataset.layout, dataset.root, dataset.created_by) == (
        "bottle", "mvtec", str(folder.resolve()), admin_account
    )
    product = dataset.products.get()
    assert (product.name, product.kind) == ("bottle", "object")
    image = Image.objects.get(path="test/broken_large/002.png")
    assert image.product == product
    assert (image.split, image.is_anomalous, image.defect_type) == ("test", True, "broken_large")
    assert image.mask_path == "ground_truth/broken_large/002_mask.png"
    assert (image.width, image.height) == (32, 32)
    assert image.checksum == hashlib.sha256((folder / image.path).read_bytes()).hexdigest()
    assert image.file_path == folder / "test" / "broken_large" / "002.png"
    assert Image.objects.get(path="train/good/000.png").mask_path == ""


def test_reimport_adds_nothing(data_root):
    folder = make_mvtec(data_root, "bottle")
    import_dataset(folder)
    before, rows = db_counts(), db_rows()

    report = import_dataset(folder)

    assert not report.created
    assert (report.added, report.updated, report.unchanged) == (0, 0, 7)
    assert report.products["bottle"].line().endswith("— 0 added, 7 unchanged")
    assert db_counts() == before
    assert db_rows() == rows


def test_changed_new_and_vanished_files_on_reimport(data_root):
    folder = make_mvtec(data_root, "bottle", train=3)
    import_dataset(folder)
    old = Image.objects.get(path="train/good/000.png").checksum
    write_png(folder / "train" / "good" / "000.png", shade=250)
    write_png(folder / "train" / "good" / "099.png", shade=251)
    (folder / "train" / "good" / "001.png").unlink()

    report = import_dataset(folder)

    assert (report.added, report.updated, report.unchanged, report.missing) == (1, 1, 5, 1)
    assert "1 added, 1 updated, 5 unchanged" in report.products["bottle"].line()
    assert "1 image(s) in the database are no longer in the folder" in "\n".join(report.summary_lines())
    changed = Image.objects.get(path="train/good/000.png")
    assert changed.checksum != old
    assert changed.checksum == hashlib.sha256((folder / "train/good/000.png").read_bytes()).hexdigest()
    # Vanished images keep their rows (and so their labels).
    assert Image.objects.filter(path="train/good/001.png").exists()


def test_btad_and_folder_layouts_import(data_root):
    make_btad(data_root / "btad", "01")
    report = import_dataset(data_root / "btad")
    assert report.products["01"].line() == "01: 3 train/ok, 2 test/ok, 2 anomalous (2 with mask) — 7 added, 0 unchanged"

    folder = make_folder_product(data_root, "gadget", good=10, anomalous=2)
    report = import_dataset(folder, layout="folder")
    assert report.dataset.layout == "folder"
    assert report.products["gadget"].line() == (
        "gadget: 8 train/good, 2 test/good, 2 anomalous (2 with mask) — 12 added, 0 unchanged"
    )
    assert Dataset.objects.count() == 2


def test_name_defaults_to_folder_and_clashes_are_refused(data_root):
    make_mvtec(data_root / "one", "bottle")
    make_mvtec(data_root / "two", "bottle")
    assert import_dataset(data_root / "one").dataset.name == "one"
    assert import_dataset(data_root / "two", name="bottles").dataset.name == "bottles"
    before = db_counts()

    errors = failure_of(data_root / "two" / "bottle", name="one")

    # The other dataset's folder by its place in the data roots, not the server's absolute path.
    assert errors == ["A dataset named 'one' already exists (at data/one); choose another name."]
    assert db_counts() == before


def test_product_kinds(data_root):
    make_mvtec(data_root / "mv", "bottle")
    make_mvtec(data_root / "mv", "carpet", defects={"hole": 1})
    make_mvtec(data_root / "mv", "gizmo", defects={"dent": 1})
    (data_root / "mv" / "defectbench.json").write_text('{"products": {"gizmo": {"kind": "texture"}}}')

    import_dataset(data_root / "mv", product_kinds={"bottle": "object"})

    kinds = dict(Product.objects.values_list("name", "kind"))
    # carpet: a known MVTec texture; gizmo: declared in defectbench.json.
    assert kinds == {"bottle": "object", "carpet": "texture", "gizmo": "texture"}

    import_dataset(data_root / "mv", product_kinds={"bottle": "texture"})
    assert Product.objects.get(name="bottle").kind == "texture"


def test_bad_product_kinds_are_refused(data_root):
    make_mvtec(data_root / "mv", "bottle")
    assert failure_of(data_root / "mv", product_kinds={"bottle": "liquid"}) == [
        "unknown kind 'liquid' for product 'bottle'"
    ]
    (data_root / "mv" / "defectbench.json").write_text('{"products": {"bottle": {"kind": "blob"}}}')
    assert failure_of(data_root / "mv")[0].startswith("defectbench.json: unknown kind 'blob'")
    assert db_counts() == (0, 0, 0)


def test_a_failing_write_leaves_nothing(data_root, monkeypatch):
    folder = make_mvtec(data_root, "bottle")

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Image.objects, "bulk_create", explode)
    with pytest.raises(RuntimeError):
        import_dataset(folder)
    assert db_counts() == (0, 0, 0)


# --- Bad files: one message each, nothing written -------------------------------------------


def corrupt(folder):
    (folder / "test/broken_large/001.png").write_bytes(b"this is not a png at all")


def truncate(folder):
    path = folder / "test/broken_large/001.png"
    noise = PILImage.effect_noise((64, 64), 60).convert("RGB")
    noise.save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def remove_mask(folder):
    (folder / "ground_truth/broken_large/001_mask.png").unlink()


def remove_image(folder):
    (folder / "test/broken_large/001.png").unlink()


def resize_mask(folder):
    write_mask(folder / "ground_truth/broken_large/001_mask.png", size=(16, 20))


def float_mask(folder):
    """A 32-bit float mask (TIFF): no mask rule covers it."""
    PILImage.new("F", (32, 32), 0.5).save(folder / "ground_truth/broken_large/001_mask.png", format="TIFF")


def empty_mask(folder):
    write_mask(folder / "ground_truth/broken_large/001_mask.png", box=None)


def huge_declared_size(folder):
    """A tiny PNG whose header claims 20000x20000 pixels: refused before any decoding."""
    buffer = io.BytesIO()
    PILImage.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:20] = (20000).to_bytes(4, "big")
    data[20:24] = (20000).to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    (folder / "test/broken_large/001.png").write_bytes(bytes(data))


BAD_FILES = {
    "corrupt image": (corrupt, "test/broken_large/001.png: not a readable image (unknown or corrupt image format)"),
    "truncated image": (truncate, "test/broken_large/001.png: not a readable image ("),
    "mask without image": (remove_image, "ground_truth/broken_large/001_mask.png: mask without image"),
    "mask of another size": (resize_mask, "ground_truth/broken_large/001_mask.png: mask 16x20 but image 32x32"),
    "mask of no known kind": (float_mask, "ground_truth/broken_large/001_mask.png: mask has pixel mode F, which no mask rule covers"),
    "all-zero mask": (empty_mask, "ground_truth/broken_large/001_mask.png: mask is empty (no defect pixel) for an anomalous image"),
    "decompression bomb": (huge_declared_size, "test/broken_large/001.png: refused as a possible decompression bomb"),
}


@pytest.mark.parametrize("break_it, message", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file_on_first_import_writes_nothing(data_root, break_it, message):
    folder = make_mvtec(data_root, "bottle", defects={"broken_large": 3})
    break_it(folder)

    errors = failure_of(folder)

    assert len(errors) == 1
    assert errors[0].startswith(message)
    assert db_counts() == (0, 0, 0)


@pytest.mark.parametrize("break_it, message", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file_on_reimport_changes_nothing(data_root, break_it, message):
    folder = make_mvtec(data_root, "bottle", defects={"broken_large": 3})
    import_dataset(folder)
    before, rows = db_counts(), db_rows()
    write_png(folder / "train" / "good" / "new.png", shade=99)
    break_it(folder)

    errors = failure_of(folder)

    assert len(errors) == 1 and errors[0].startswith(message)
    assert db_counts() == before
    assert db_rows() == rows


def test_an_anomalous_image_without_mask_imports_as_needing_a_mask(data_root):
    folder = make_mvtec(data_root, "bottle", defects={"broken_large": 3})
    remove_mask(folder)

    report = import_dataset(folder)

    image = Image.objects.get(path="test/broken_large/001.png")
    assert image.is_anomalous and image.mask_path == "" and image.needs_mask and not image.is_labellable
    assert Image.objects.filter(is_anomalous=True).exclude(mask_path="").count() == 2
    assert "3 anomalous (2 with mask, 1 anomalous without mask (needs a mask))" in str(report)
    assert report.problems == []


def test_a_mask_without_image_is_in_the_problem_report_when_skipping_invalid_files(data_root):
    folder = make_mvtec(data_root, "bottle", defects={"broken_large": 3})
    remove_image(folder)

    report = import_dataset(folder, skip_invalid=True)

    assert report.problems == [("ground_truth/broken_large/001_mask.png",
                                "mask without image (no image of its name in test/broken_large/)")]
    assert "ground_truth/broken_large/001_mask.png,mask without image" in report.dataset.problem_report
    assert Image.objects.filter(is_anomalous=True).count() == 2


def test_pixel_limit_comes_from_the_settings(data_root, settings):
    folder = make_mvtec(data_root, "bottle", train=1, test_good=0, defects={})
    settings.DEFECTBENCH_MAX_IMAGE_PIXELS = 1000  # the 32x32 = 1024 pixel images are above it

    errors = failure_of(folder)

    assert len(errors) == 1
    assert errors[0].startswith("train/good/000.png: refused as a possible decompression bomb")
    assert db_counts() == (0, 0, 0)
    # Pillow's own limit is restored afterwards.
    assert PILImage.MAX_IMAGE_PIXELS != 1000


def test_every_problem_is_listed_one_per_file(data_root):
    folder = make_mvtec(data_root, "bottle", defects={"broken_large": 4})
    corrupt(folder)
    resize_mask(folder)  # mask of 001, whose image is also corrupt: its size cannot be compared
    (folder / "ground_truth/broken_large/002_mask.png").unlink()
    empty_mask_path = folder / "ground_truth/broken_large/003_mask.png"
    write_mask(empty_mask_path, box=None)

    errors = failure_of(folder)

    # 002 lost its mask: no problem, it would import as an anomalous image needing a mask
    assert errors == [
        "test/broken_large/001.png: not a readable image (unknown or corrupt image format)",
        "ground_truth/broken_large/003_mask.png: mask is empty (no defect pixel) for an anomalous image",
    ]
    assert "Nothing was imported (2 problems):" in str(ImportFailed(errors))
    assert db_counts() == (0, 0, 0)


def test_unknown_layout_is_refused(data_root):
    write_png(data_root / "holiday" / "beach.png")

    errors = failure_of(data_root / "holiday")

    assert len(errors) == 1 and "unknown dataset layout" in errors[0] and "mvtec:" in errors[0]
    assert failure_of(data_root / "holiday", layout="coco") == [
        "Unknown layout 'coco'; expected auto, mvtec, btad, folder, beside, manifest, polygons."
    ]
    assert db_counts() == (0, 0, 0)


# --- Paths outside the data roots -----------------------------------------------------------


@pytest.fixture
def outside(tmp_path_factory):
    """A valid dataset outside the allowed roots."""
    return make_mvtec(tmp_path_factory.mktemp("elsewhere"), "bottle")


# Reviewers read these messages (a batch inspection's folder): they name the path as given, never
# the data roots nor where a link points; the server log has both.


def test_folder_outside_the_data_roots(data_root, outside, caplog):
    errors = failure_of(outside)

    assert errors == [f"{outside} is outside the allowed data roots (DEFECTBENCH_DATA_ROOTS)"]
    assert str(data_root.parent) not in errors[0]
    assert str(data_root.parent) in caplog.text
    assert db_counts() == (0, 0, 0)


def test_dotdot_traversal_out_of_the_data_roots(data_root, outside, caplog):
    sneaky = Path(os.path.relpath(outside, data_root))  # ../../..../elsewhere0/bottle
    assert sneaky.parts[0] == ".."
    errors = failure_of(data_root / sneaky)

    assert errors == [f"{data_root / sneaky} is outside the allowed data roots (DEFECTBENCH_DATA_ROOTS)"]
    assert str(outside) not in errors[0] and f"resolves to {outside}" in caplog.text
    assert db_counts() == (0, 0, 0)


def test_symlink_pointing_outside_the_data_roots(data_root, outside, caplog):
    link = data_root / "looks-inside"
    link.symlink_to(outside, target_is_directory=True)

    errors = failure_of(link)

    assert errors == [f"{link} is outside the allowed data roots (DEFECTBENCH_DATA_ROOTS)"]
    assert str(outside) not in errors[0] and str(outside) in caplog.text
    assert db_counts() == (0, 0, 0)


def test_symlinked_image_pointing_outside_the_data_roots(data_root, outside, caplog):
    folder = make_mvtec(data_root, "bottle")
    target = folder / "train" / "good" / "000.png"
    target.unlink()
    target.symlink_to(outside / "train" / "good" / "000.png")

    errors = failure_of(folder)

    assert errors == ["train/good/000.png: a link to a file outside the allowed data roots"]
    assert str(outside / "train" / "good" / "000.png") in caplog.text
    assert db_counts() == (0, 0, 0)


def test_missing_folder(data_root):
    assert failure_of(data_root / "nope") == [f"{data_root / 'nope'} does not exist"]


# --- Zip upload ----------------------------------------------------------------------------


def zip_of(folder: Path, *, prefix: str = "", extra: dict | None = None) -> bytes:
    """A zip of ``folder``'s files (names relative to it, under ``prefix``) plus ``extra`` entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def upload(data: bytes, name: str = "bottles.zip") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/zip")


def leftovers(settings) -> list[str]:
    media = Path(settings.MEDIA_ROOT)
    return sorted(str(p.relative_to(media)) for p in media.rglob("*") if p.is_file())


def test_zip_of_product_folders(data_root, settings, admin_account):
    make_mvtec(data_root / "src", "bottle")
    make_mvtec(data_root / "src", "cable", defects={"bent": 1})

    report = import_zip(upload(zip_of(data_root / "src")), created_by=admin_account)

    assert report.dataset.name == "bottles"
    assert report.dataset.created_by == admin_account
    root = Path(report.dataset.root)
    assert root.parent.parent == Path(settings.MEDIA_ROOT).resolve() / "datasets"
    assert sorted(report.products) == ["bottle", "cable"]
    assert report.added == 7 + 6
    assert (root / "bottle" / "train" / "good" / "000.png").is_file()
    # The uploaded zip itself is not kept.
    assert not any(name.startswith("uploads/") for name in leftovers(settings))


def test_zip_of_one_products_folders_is_named_after_the_zip(data_root):
    make_mvtec(data_root / "src", "bottle")

    report = import_zip(upload(zip_of(data_root / "src" / "bottle"), name="my-bottle.zip"), layout="mvtec", name="Bottles 2024")

    assert report.dataset.name == "Bottles 2024"
    assert list(report.products) == ["Bottles-2024"]


def symlink_entry() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("bottle/train/good/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


EVIL_ENTRIES = {
    "dotdot": ("../evil.png", "../evil.png: path escapes the dataset folder ('..'); refused"),
    "nested dotdot": ("bottle/../../../evil.png", "bottle/../../../evil.png: path escapes the dataset folder ('..'); refused"),
    "absolute": ("/tmp/evil.png", "/tmp/evil.png: absolute path in the zip; refused"),
    "windows absolute": ("C:/evil.png", "C:/evil.png: absolute path in the zip; refused"),
    "symlink": (None, "bottle/train/good/link.png: symbolic link in the zip; refused"),
}


@pytest.mark.parametrize("entry, message", EVIL_ENTRIES.values(), ids=EVIL_ENTRIES.keys())
def test_zip_entries_escaping_the_target_are_refused(data_root, settings, entry, message):
    make_mvtec(data_root / "src", "bottle")
    name = entry if entry is not None else symlink_entry()
    data = zip_of(data_root / "src", extra={name: b"/etc/passwd" if entry is None else b"evil"})

    with pytest.raises(ImportFailed) as raised:
        import_zip(upload(data))

    assert raised.value.errors == [message]
    assert db_counts() == (0, 0, 0)
    assert leftovers(settings) == []
    assert not (Path(settings.MEDIA_ROOT) / "evil.png").exists()
    assert not (Path(settings.MEDIA_ROOT).parent / "evil.png").exists()


def test_zip_unpacking_above_the_size_limit(data_root, settings):
    make_mvtec(data_root / "src", "bottle")
    data = zip_of(data_root / "src")
    settings.DEFECTBENCH_MAX_UNPACKED_BYTES = 300

    with pytest.raises(ImportFailed) as raised:
        import_zip(upload(data))

    assert len(raised.value.errors) == 1
    assert raised.value.errors[0].startswith("the zip unpacks to ")
    assert raised.value.errors[0].endswith("more than the limit of 300 bytes (DEFECTBENCH_MAX_UNPACKED_BYTES)")
    assert db_counts() == (0, 0, 0)
    assert leftovers(settings) == []


def test_zip_bomb_compression_ratio(data_root, settings):
    make_mvtec(data_root / "src", "bottle")
    data = zip_of(data_root / "src", extra={"bottle/train/good/zeros.bmp": bytes(30 * 1024**2)})

    with pytest.raises(ImportFailed) as raised:
        import_zip(upload(data))

    assert any(
        error.startswith("bottle/train/good/zeros.bmp: compression ratio ")
        and error.endswith("is suspicious; refused as a possible zip bomb")
        for error in raised.value.errors
    )
    assert db_counts() == (0, 0, 0)
    assert leftovers(settings) == []


def test_not_a_zip(data_root, settings):
    with pytest.raises(ImportFailed) as raised:
        import_zip(upload(b"definitely not a zip", name="x.zip"))

    assert raised.value.errors[0].startswith("x.zip: not a readable zip file")
    assert leftovers(settings) == []


def test_bad_image_inside_the_zip_removes_the_extracted_folder(data_root, settings):
    make_mvtec(data_root / "src", "bottle")
    corrupt(data_root / "src" / "bottle")

    with pytest.raises(ImportFailed) as raised:
        import_zip(upload(zip_of(data_root / "src")))

    assert raised.value.errors == [
        "bottle/test/broken_large/001.png: not a readable image (unknown or corrupt image format)"
    ]
    assert db_counts() == (0, 0, 0)
    assert leftovers(settings) == []
    assert list((Path(settings.MEDIA_ROOT) / "datasets").iterdir()) == []


def test_zip_name_clash_is_refused_before_unpacking(data_root, settings):
    make_mvtec(data_root / "src", "bottle")
    import_zip(upload(zip_of(data_root / "src")))
    before = leftovers(settings)

    with pytest.raises(ImportFailed) as raised:
        import_zip(upload(zip_of(data_root / "src")))

    assert raised.value.errors[0].startswith("A dataset named 'bottles' already exists")
    assert Dataset.objects.count() == 1
    assert leftovers(settings) == before


def test_importing_a_copy_of_another_datasets_images_warns(data_root):
    """Issue 12: a folder whose images are already in another dataset is imported with a warning."""
    import shutil

    folder = make_mvtec(data_root, "bottle")
    first = import_dataset(folder)
    assert first.in_other_datasets == {}
    copy = data_root / "copy"
    shutil.copytree(folder, copy / "bottle")
    report = import_dataset(copy / "bottle", name="bottle-again")
    assert report.in_other_datasets == {first.dataset.name: 7}
    assert any("7 of these images are already in dataset" in line for line in report.summary_lines())
