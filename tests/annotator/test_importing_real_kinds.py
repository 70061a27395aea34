"""Real datasets as they come: beside and manifest layouts, every mask kind, the split made when
none is given, duplicates, partial imports with a problem report, and the real KolektorSDD."""
import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image as PILImage

from annotator.layouts import UnknownLayoutError, scan_dataset
from annotator.models import Dataset, Image
from annotator.services.importing import ImportFailed, import_dataset
from inference.engine.pixels import decode_mask
from tests.annotator.test_layouts import write_mask, write_png
from tests.inference.engine.test_engine_pixels import EXPECTED, mask_kinds, write_mask_kind

pytestmark = pytest.mark.django_db


def failure_of(path, **kwargs) -> list[str]:
    with pytest.raises(ImportFailed) as raised:
        import_dataset(path, **kwargs)
    return raised.value.errors


def make_beside(root: Path, *, good: int = 10, anomalous: int = 3, empty: int = 2, suffix="_mask",
                size=(32, 32)) -> Path:
    """A product with masks beside its images: anomalous ones, ones with an empty mask
    (defect-free), and defect-free ones without mask in good/."""
    shade = 5
    for index in range(anomalous):
        write_png(root / "parts" / f"a{index}.png", size, shade := shade + 3)
        write_mask(root / "parts" / f"a{index}{suffix}.png", size)
    for index in range(empty):
        write_png(root / "parts" / f"e{index}.png", size, shade := shade + 3)
        write_mask(root / "parts" / f"e{index}{suffix}.png", size, box=None)
    for index in range(good):
        write_png(root / "good" / f"g{index:02d}.png", size, shade := shade + 3)
    return root


# --- beside -----------------------------------------------------------------------------------


def test_beside_layout_is_detected_anomaly_from_the_mask_and_split_made(data_root):
    folder = make_beside(data_root / "widget")

    report = import_dataset(folder)

    assert report.layout == "beside"
    images = Image.objects.filter(product__dataset=report.dataset)
    anomalous = images.filter(is_anomalous=True)
    assert sorted(anomalous.values_list("path", "mask_path", "split", "defect_type")) == [
        (f"parts/a{i}.png", f"parts/a{i}_mask.png", "test", "defect") for i in range(3)
    ]
    # Empty masks mean defect-free; those images keep no mask.
    assert set(images.filter(path__startswith="parts/e").values_list("is_anomalous", "mask_path")) == {(False, "")}
    good = images.filter(is_anomalous=False)
    assert good.count() == 12 and good.filter(split="test").count() == round(12 * 0.2)
    text = str(report)
    assert "split made by DefectBench (no split given): seed 0, 20% of the defect-free images held out " \
           "for test (2 test, 10 train)" in text
    # Deterministic: a re-import changes nothing; another seed (kept with the dataset) changes it.
    assert import_dataset(folder).unchanged == 15
    test_before = set(good.filter(split="test").values_list("path", flat=True))
    report = import_dataset(folder, split_seed=7, test_share=0.5)
    assert report.dataset.import_options["split_seed"] == 7
    assert good.filter(split="test").count() == 6
    assert set(good.filter(split="test").values_list("path", flat=True)) != test_before
    assert import_dataset(folder).unchanged == 15  # the dataset's own seed and share are reused


@pytest.mark.parametrize("suffix", ["_mask", "_label", "_gt"])
def test_beside_default_suffixes(data_root, suffix):
    folder = make_beside(data_root / "w", suffix=suffix, good=2)
    assert import_dataset(folder).products["w"].anomalous == 3


def test_beside_custom_suffix_and_mask_extension(data_root):
    folder = data_root / "cam"
    for index in range(3):
        write_png(folder / "x" / f"{index}.jpg", fmt="JPEG", shade=10 + 20 * index)
        write_mask(folder / "x" / f"{index}.png")
        write_png(folder / "y" / f"{index}.jpg", fmt="JPEG", shade=11 + 20 * index)
        write_mask(folder / "y" / f"{index}-seg.png")
    report = import_dataset(folder / "x", layout="beside", mask_ext="png")
    assert report.products["x"].anomalous == 3
    report = import_dataset(folder / "y", mask_suffix="-seg")
    assert report.layout == "beside" and report.products["y"].anomalous == 3


def test_beside_problems_name_the_file(data_root):
    folder = make_beside(data_root / "w", good=2)
    write_mask(folder / "parts" / "ghost_mask.png")
    write_png(folder / "parts" / "lonely.png", shade=200)

    errors = failure_of(folder)

    # lonely.png (no mask, outside good/) is no problem: an anomalous image needing a mask
    assert errors == [
        "parts/ghost_mask.png: mask without image (no image named like it beside it)",
    ]
    assert Dataset.objects.count() == 0


def test_beside_image_without_mask_outside_good_folders_imports_as_needing_a_mask(data_root):
    folder = make_beside(data_root / "w", good=2)
    write_png(folder / "parts" / "lonely.png", shade=200)

    report = import_dataset(folder)

    lonely = Image.objects.get(path="parts/lonely.png")
    assert (lonely.split, lonely.is_anomalous, lonely.defect_type, lonely.mask_path) == ("test", True, "defect", "")
    assert "anomalous without mask (needs a mask)" in str(report)


def test_auto_refusal_lists_what_it_found(data_root):
    for index in range(4):
        write_png(data_root / "holiday" / "day1" / f"{index}.png", shade=index + 40)
    with pytest.raises(ImportFailed) as raised:
        import_dataset(data_root / "holiday")
    message = raised.value.errors[0]
    assert "Found 4 image(s), 0 candidate mask(s)" in message and "1 folder(s)" in message
    assert "closest layout: manifest" in message


# --- every mask and image kind, imported --------------------------------------------------------


def test_every_mask_kind_imports_with_its_binary_mask_and_the_rules_reported(data_root):
    folder = data_root / "kinds"
    names = list(mask_kinds())
    h, w = EXPECTED.shape
    for index, name in enumerate(names):
        write_png(folder / f"k{index:02d}.png", size=(w, h), shade=index * 9)
        write_mask_kind(folder / f"k{index:02d}_mask", name)
    jpeg = folder / f"k{len(names):02d}"
    write_png(jpeg.with_suffix(".png"), size=(w, h), shade=250)
    PILImage.fromarray(np.where(EXPECTED, 255, 0).astype(np.uint8)).resize((w, h)).save(
        folder / f"k{len(names):02d}_mask.jpg", quality=95)

    report = import_dataset(folder)

    rows = Image.objects.filter(product__dataset=report.dataset, is_anomalous=True).order_by("path")
    assert rows.count() == len(names) + 1
    for row in rows:
        decoded = decode_mask(row.mask_file_path)
        assert decoded.defect.shape == (row.height, row.width)
        np.testing.assert_array_equal(decoded.defect, EXPECTED, err_msg=row.mask_path)
    expected_rules = {}
    for _picture, _ext, _opts, rule in mask_kinds().values():
        expected_rules[rule] = expected_rules.get(rule, 0) + 1
    expected_rules["threshold"] += 1  # the JPEG mask
    assert dict(report.mask_rules) == expected_rules
    text = str(report)
    assert "masks converted to binary: 2 by rule 'colour'" in text
    assert f"warning: 1 JPEG mask(s), whose edges are lossy (e.g. k{len(names):02d}_mask.jpg)" in text


def test_exif_oriented_jpeg_is_stored_upright_with_its_mask(data_root):
    folder = data_root / "cam"
    stored = PILImage.new("RGB", (40, 20), (90, 90, 90))
    exif = PILImage.Exif()
    exif[0x0112] = 6  # turn 90° clockwise to show
    (folder / "good").mkdir(parents=True)
    stored.save(folder / "shot.jpg", exif=exif)
    write_mask(folder / "shot_mask.png", size=(40, 20), box=(0, 0, 10, 5))  # drawn on stored pixels
    write_png(folder / "good" / "ok.png", size=(20, 40), shade=1)

    import_dataset(folder)

    row = Image.objects.get(path="shot.jpg")
    assert (row.width, row.height, row.is_anomalous) == (20, 40, True)


def test_mask_of_another_size_names_both(data_root):
    folder = make_beside(data_root / "w", good=2, anomalous=1, empty=0)
    write_mask(folder / "parts" / "a0_mask.png", size=(30, 32))
    assert failure_of(folder) == ["parts/a0_mask.png: mask 30x32 but image 32x32"]


# --- duplicates -------------------------------------------------------------------------------


def test_a_copied_folder_is_imported_once_and_reported(data_root):
    folder = make_beside(data_root / "w", good=5)
    import shutil
    shutil.copytree(folder / "parts", folder / "parts-copy")

    report = import_dataset(folder)

    assert report.added == 10
    assert len(report.duplicates) == 5
    assert ("parts-copy/a0.png", "parts/a0.png") in report.duplicates
    assert "5 duplicate image(s) imported once (same content)" in str(report)
    assert "parts-copy/a0.png,duplicate of parts/a0.png (same content); imported once" in report.dataset.problem_report


# --- manifest ---------------------------------------------------------------------------------


def test_manifest_csv_and_jsonl(data_root):
    folder = data_root / "m"
    write_png(folder / "img" / "a.png", shade=1)
    write_png(folder / "img" / "b.png", shade=2)
    write_png(folder / "img" / "c.png", shade=3)
    write_mask(folder / "lbl" / "c.png")
    (folder / "list.csv").write_text(
        "image,mask,split,defect_type,product\n"
        "img/a.png,,train,,\nimg/b.png,,test,good,\nimg/c.png,lbl/c.png,,scratch,\n")
    report = import_dataset(folder / "list.csv")
    assert report.layout == "manifest" and report.dataset.root == str(folder.resolve())
    assert sorted(Image.objects.values_list("path", "split", "is_anomalous", "defect_type", "mask_path")) == [
        ("img/a.png", "train", False, "good", ""),
        ("img/b.png", "test", False, "good", ""),
        ("img/c.png", "test", True, "scratch", "lbl/c.png"),
    ]
    other = data_root / "j"
    write_png(other / "a.png", shade=4)
    write_png(other / "b.png", shade=5)
    write_mask(other / "b_m.png")
    (other / "manifest.jsonl").write_text(
        json.dumps({"image": "a.png"}) + "\n" + json.dumps({"image": "b.png", "mask": "b_m.png", "product": "p"}) + "\n")
    report = import_dataset(other / "manifest.jsonl")
    assert set(report.products) == {"j", "p"}
    assert Image.objects.get(path="b.png").is_anomalous


def test_manifest_anomalous_row_without_mask_imports_as_needing_a_mask(data_root):
    folder = data_root / "m"
    for index in range(3):
        write_png(folder / f"g{index}.png", shade=index + 1)
    write_png(folder / "d.png", shade=9)
    (folder / "manifest.csv").write_text(
        "image,mask,split,defect_type\ng0.png,,train,\ng1.png,,train,\ng2.png,,test,good\nd.png,,,scratch\n")

    report = import_dataset(folder / "manifest.csv")

    assert Image.objects.filter(path="d.png").values_list("split", "is_anomalous", "defect_type", "mask_path").get() \
        == ("test", True, "scratch", "")
    assert "1 anomalous (0 with mask, 1 anomalous without mask (needs a mask))" in str(report)


def test_manifest_errors_point_at_the_line(data_root):
    folder = data_root / "m"
    write_png(folder / "a.png", shade=1)
    (folder / "manifest.csv").write_text(
        "image,mask,split,colour\n"
        "a.png,,train,red\n"
        "missing.png,,,\n"
        "a.png,,,\n"
        "../escape.png,,,\n"
        "a.png,,valid,\n")
    errors = failure_of(folder / "manifest.csv")
    assert errors == [
        "manifest.csv line 2: unknown column(s) colour (expected image, mask, split, defect_type, product)",
        "manifest.csv line 3: unknown column(s) colour (expected image, mask, split, defect_type, product)",
        "manifest.csv line 4: unknown column(s) colour (expected image, mask, split, defect_type, product)",
        "manifest.csv line 5: unknown column(s) colour (expected image, mask, split, defect_type, product)",
        "manifest.csv line 6: unknown column(s) colour (expected image, mask, split, defect_type, product)",
        "manifest.csv line 3: image 'missing.png' does not exist",
        "manifest.csv line 4: image a.png is listed already on line 2",
        "manifest.csv line 5: image '../escape.png' must be a path relative to the manifest, inside its folder",
        "manifest.csv line 6: image a.png is listed already on line 2",
    ]
    assert Dataset.objects.count() == 0


def test_manifest_check_errors_name_the_line(data_root):
    folder = data_root / "m"
    (folder).mkdir()
    (folder / "bad.png").write_bytes(b"not a png")
    (folder / "manifest.csv").write_text("image\nbad.png\n")
    assert failure_of(folder / "manifest.csv") == [
        "manifest.csv line 2: bad.png: not a readable image (unknown or corrupt image format)"]


@pytest.mark.real_data
def test_manifest_for_the_bottle_imports_what_the_mvtec_layout_does(settings, tmp_path, real_bottle_root):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path, real_bottle_root.parent]
    by_layout = scan_dataset(real_bottle_root)
    folder = tmp_path / "bottle-manifest"
    folder.mkdir()
    (folder / "bottle").symlink_to(real_bottle_root)
    with open(folder / "manifest.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["image", "mask", "split", "defect_type"])
        for image in by_layout.images:
            writer.writerow([
                "bottle/" + by_layout.relative(image.image_path),
                "bottle/" + by_layout.relative(image.mask_path) if image.mask_path else "",
                image.split, image.defect_type,
            ])

    report = import_dataset(folder / "manifest.csv", name="bottle-manifest")
    mvtec = import_dataset(real_bottle_root)

    def rows(dataset):
        return sorted((path.removeprefix("bottle/"), split, anomalous, defect, checksum)
                      for path, split, anomalous, defect, checksum in Image.objects.filter(
                          product__dataset=dataset).values_list("path", "split", "is_anomalous", "defect_type", "checksum"))

    assert report.added == mvtec.added == 292
    assert rows(report.dataset) == rows(mvtec.dataset)


# --- partial imports --------------------------------------------------------------------------


def test_skip_invalid_imports_97_of_100_and_names_the_3(data_root):
    folder = data_root / "hundred"
    for index in range(90):
        write_png(folder / "good" / f"g{index:03d}.png", shade=index)
    for index in range(10):
        write_png(folder / "parts" / f"p{index}.png", shade=100 + index)
        write_mask(folder / "parts" / f"p{index}_mask.png")
    (folder / "good" / "g005.png").write_bytes(b"broken")
    write_mask(folder / "parts" / "p3_mask.png", size=(8, 8))
    write_mask(folder / "parts" / "p7_mask.png", size=(8, 8))

    errors = failure_of(folder)
    assert len(errors) == 3 and Dataset.objects.count() == 0

    report = import_dataset(folder, skip_invalid=True)

    assert report.added == 97
    problems = list(csv.reader(io.StringIO(report.dataset.problem_report)))
    assert problems[0] == ["path", "problem"]
    assert sorted(row[0] for row in problems[1:]) == ["good/g005.png", "parts/p3_mask.png", "parts/p7_mask.png"]
    assert "3 problem(s), files left out" in str(report)


def test_command_flags(data_root, capsys):
    folder = make_beside(data_root / "w", good=4)
    (folder / "good" / "g00.png").write_bytes(b"broken")
    with pytest.raises(CommandError, match="Nothing was imported"):
        call_command("import_dataset", str(folder))
    out = io.StringIO()
    call_command("import_dataset", str(folder), "--skip-invalid", "--split-seed", "3", "--test-share", "0.5",
                 "--good-folders", "good,fine", stdout=out, stderr=io.StringIO())
    assert "seed 3, 50% of the defect-free images" in out.getvalue()
    assert "1 problem(s), files left out" in out.getvalue()


# --- the real KolektorSDD -------------------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.parametrize("layout", ["auto", "beside"])
def test_real_kolektorsdd_imports_as_it_comes(settings, real_kolektor_root, layout):
    settings.DEFECTBENCH_DATA_ROOTS = [real_kolektor_root.parent]
    out = io.StringIO()
    started = time.monotonic()
    call_command("import_dataset", str(real_kolektor_root), "--layout", layout, stdout=out, stderr=io.StringIO())
    seconds = time.monotonic() - started
    text = out.getvalue()

    assert "kolektorsdd: 112 train/good, 28 test/good, 20 anomalous (20 with mask) — 160 added, 0 unchanged" in text
    assert "8 duplicate image(s) imported once (same content): kos13/kos08/Part0.jpg = kos08/Part0.jpg" in text
    assert "split made by DefectBench (no split given): seed 0" in text
    images = Image.objects.all()
    assert images.count() == 160 and images.filter(is_anomalous=True, split="test").exclude(mask_path="").count() == 20
    assert not images.filter(path__startswith="kos13/kos08/").exists()
    heights = set(images.values_list("height", flat=True))
    assert set(images.values_list("width", flat=True)) == {500} and len(heights) > 1
    first_split = sorted(images.values_list("path", "split"))
    Image.objects.all().delete()
    Dataset.objects.all().delete()
    call_command("import_dataset", str(real_kolektor_root), stdout=io.StringIO(), stderr=io.StringIO())
    assert sorted(Image.objects.values_list("path", "split")) == first_split  # deterministic
    print(f"kolektorsdd import: {seconds:.1f} s")


def test_a_zip_like_folder_with_its_own_manifest_is_read_by_it(data_root):
    folder = data_root / "listed"
    write_png(folder / "pics" / "a.png", shade=1)
    write_png(folder / "pics" / "b.png", shade=2)
    write_mask(folder / "pics" / "b.seg.png")
    (folder / "manifest.csv").write_text("image,mask\npics/a.png,\npics/b.png,pics/b.seg.png\n")
    report = import_dataset(folder)
    assert report.layout == "manifest" and report.products["listed"].anomalous == 1


def test_the_model_choices_are_the_layouts():
    from annotator.layouts import LAYOUTS

    assert tuple(Dataset.Layout.values) == LAYOUTS
