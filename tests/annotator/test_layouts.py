"""Which folder layouts are recognised, and how images are paired with masks (no database)."""
import shutil
from pathlib import Path

import pytest
from PIL import Image as PILImage

from annotator.layouts import UnknownLayoutError, detect_layout, scan_dataset

# --- Builders shared by the annotator tests ------------------------------------------------


def write_png(path: Path, size=(32, 32), shade: int = 120, mode: str = "RGB", fmt: str | None = None) -> Path:
    """A small real image whose content depends on ``shade`` (so checksums differ)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = PILImage.new(mode, size, (shade, shade // 2, 255 - shade) if mode == "RGB" else shade)
    picture.putpixel((0, 0), (shade % 7,) * 3 if mode == "RGB" else shade % 7)
    picture.save(path, format=fmt)
    return path


def write_mask(path: Path, size=(32, 32), box=(8, 8, 16, 16), value: int = 255, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = PILImage.new("L", size, 0)
    if box:
        mask.paste(value, box)
    mask.save(path, format=fmt)
    return path


def make_mvtec(root: Path, product: str = "bottle", *, train: int = 3, test_good: int = 2,
               defects: dict | None = None, size=(32, 32)) -> Path:
    """An MVTec AD product folder under ``root``; returns it."""
    defects = {"broken_large": 2} if defects is None else defects
    folder = root / product
    shade = 10
    for index in range(train):
        write_png(folder / "train" / "good" / f"{index:03d}.png", size, shade := shade + 3)
    for index in range(test_good):
        write_png(folder / "test" / "good" / f"{index:03d}.png", size, shade := shade + 3)
    for defect, count in defects.items():
        for index in range(count):
            write_png(folder / "test" / defect / f"{index:03d}.png", size, shade := shade + 3)
            write_mask(folder / "ground_truth" / defect / f"{index:03d}_mask.png", size)
    return folder


def make_btad(root: Path, product: str = "01", *, train: int = 3, test_ok: int = 2, ko: int = 2,
              image_ext: str = ".bmp", mask_ext: str = ".png") -> Path:
    folder = root / product
    shade = 20
    for index in range(train):
        write_png(folder / "train" / "ok" / f"{index:04d}{image_ext}", shade=(shade := shade + 3))
    for index in range(test_ok):
        write_png(folder / "test" / "ok" / f"{index:04d}{image_ext}", shade=(shade := shade + 3))
    for index in range(ko):
        write_png(folder / "test" / "ko" / f"{index:04d}{image_ext}", shade=(shade := shade + 3))
        write_mask(folder / "ground_truth" / "ko" / f"{index:04d}{mask_ext}")
    return folder


def make_folder_product(root: Path, product: str = "gadget", *, good: int = 10, anomalous: int = 2,
                        anomalous_dir: str = "anomalous", mask_suffix: str = "", test_good: int = 0) -> Path:
    folder = root / product
    shade = 30
    for index in range(good):
        write_png(folder / "good" / f"g{index:02d}.png", shade=(shade := shade + 3))
    for index in range(test_good):
        write_png(folder / "test_good" / f"t{index:02d}.png", shade=(shade := shade + 3))
    for index in range(anomalous):
        write_png(folder / anomalous_dir / f"a{index:02d}.jpg", shade=(shade := shade + 3), fmt="JPEG")
        write_mask(folder / "masks" / f"a{index:02d}{mask_suffix}.png")
    return folder


# --- MVTec AD ------------------------------------------------------------------------------


def test_mvtec_product_folder_is_detected_and_scanned(tmp_path):
    folder = make_mvtec(tmp_path, "bottle", train=3, test_good=2, defects={"broken_large": 2, "contamination": 1})
    (folder / "license.txt").write_text("CC BY-NC-SA")
    (folder / "readme.txt").write_text("read me")
    (folder / "train" / "good" / ".DS_Store").write_bytes(b"junk")

    assert detect_layout(folder) == "mvtec"
    result = scan_dataset(folder)

    assert result.errors == []
    assert result.layout == "mvtec"
    assert result.products == ["bottle"]
    by_group = {}
    for image in result.images:
        by_group.setdefault((image.split, image.defect_type, image.is_anomalous), []).append(image)
    assert {key: len(value) for key, value in by_group.items()} == {
        ("train", "good", False): 3,
        ("test", "good", False): 2,
        ("test", "broken_large", True): 2,
        ("test", "contamination", True): 1,
    }
    broken = by_group[("test", "broken_large", True)][0]
    assert broken.image_path == folder / "test" / "broken_large" / "000.png"
    assert broken.image_path.is_absolute()
    assert broken.mask_path == folder / "ground_truth" / "broken_large" / "000_mask.png"
    assert all(image.mask_path is None for image in by_group[("train", "good", False)])


def test_mvtec_folder_of_products(tmp_path):
    make_mvtec(tmp_path / "mvtec_ad", "bottle")
    make_mvtec(tmp_path / "mvtec_ad", "carpet", defects={"hole": 1})

    assert detect_layout(tmp_path / "mvtec_ad") == "mvtec"
    result = scan_dataset(tmp_path / "mvtec_ad")
    assert result.errors == []
    assert result.products == ["bottle", "carpet"]
    assert result.relative(result.images[0].image_path).startswith("bottle/")


def test_mvtec_image_without_mask_is_anomalous_without_mask(tmp_path):
    folder = make_mvtec(tmp_path, "bottle", defects={"broken_large": 4})
    (folder / "ground_truth" / "broken_large" / "003_mask.png").unlink()

    result = scan_dataset(folder)

    assert result.errors == []
    image = next(image for image in result.images if image.image_path.name == "003.png")
    assert (image.split, image.is_anomalous, image.defect_type, image.mask_path) == ("test", True, "broken_large", None)
    assert sum(image.is_anomalous and image.mask_path is not None for image in result.images) == 3


def test_unexpected_files_and_folders_are_reported(tmp_path):
    folder = make_mvtec(tmp_path, "bottle")
    (folder / "test" / "broken_large" / "notes.docx").write_bytes(b"x")
    (folder / "train" / "broken").mkdir()

    errors = scan_dataset(folder).errors

    assert any(e.startswith("test/broken_large/notes.docx: not an image file type") for e in errors)
    assert any(e.startswith("train/broken: training images must all be in train/good/") for e in errors)


def test_all_accepted_extensions_in_any_case(tmp_path):
    folder = make_mvtec(tmp_path, "bottle", train=0, test_good=0, defects={})
    for index, (ext, fmt) in enumerate(
        [(".png", "PNG"), (".JPG", "JPEG"), (".jpeg", "JPEG"), (".bmp", "BMP"), (".tif", "TIFF"), (".TIFF", "TIFF")]
    ):
        write_png(folder / "train" / "good" / f"{index}{ext}", fmt=fmt)

    result = scan_dataset(folder)

    assert result.errors == []
    assert len(result.images) == 6


# --- BTAD ----------------------------------------------------------------------------------


def test_btad_masks_have_the_image_stem_and_any_extension(tmp_path):
    make_btad(tmp_path / "btad", "01", image_ext=".bmp", mask_ext=".png")
    make_btad(tmp_path / "btad", "03", image_ext=".bmp", mask_ext=".bmp")

    assert detect_layout(tmp_path / "btad") == "btad"
    result = scan_dataset(tmp_path / "btad")

    assert result.errors == []
    assert result.products == ["01", "03"]
    ko = [image for image in result.images if image.is_anomalous]
    assert len(ko) == 4
    assert {image.defect_type for image in ko} == {"ko"}
    assert {image.mask_path.suffix for image in ko} == {".png", ".bmp"}
    assert all(image.mask_path.stem == image.image_path.stem for image in ko)
    ok = [image for image in result.images if not image.is_anomalous]
    assert {(image.split, image.defect_type) for image in ok} == {("train", "ok"), ("test", "ok")}


def test_btad_single_product_and_missing_mask(tmp_path):
    folder = make_btad(tmp_path, "02")
    (folder / "ground_truth" / "ko" / "0001.png").unlink()

    assert detect_layout(folder) == "btad"
    result = scan_dataset(folder)
    assert result.errors == []
    image = next(image for image in result.images if image.image_path.name == "0001.bmp" and image.split == "test")
    assert (image.split, image.is_anomalous, image.defect_type, image.mask_path) == ("test", True, "ko", None)


# --- Plain folder --------------------------------------------------------------------------


def test_folder_layout_puts_every_fifth_sorted_good_image_in_test(tmp_path):
    folder = make_folder_product(tmp_path, "gadget", good=10, anomalous=2)

    assert detect_layout(folder) == "folder"
    result = scan_dataset(folder)

    assert result.errors == []
    test_good = sorted(image.image_path.name for image in result.images if image.split == "test" and not image.is_anomalous)
    assert test_good == ["g04.png", "g09.png"]
    assert sum(image.split == "train" for image in result.images) == 8
    anomalous = [image for image in result.images if image.is_anomalous]
    assert [(image.split, image.defect_type, image.mask_path.name) for image in anomalous] == [
        ("test", "anomalous", "a00.png"), ("test", "anomalous", "a01.png")
    ]
    # The same on every scan.
    assert scan_dataset(folder).images == result.images


def test_folder_layout_with_test_good_folder_defect_dir_and_mask_suffix(tmp_path):
    folder = make_folder_product(
        tmp_path / "mine", "gadget", good=6, test_good=2, anomalous=1, anomalous_dir="defect", mask_suffix="_mask"
    )

    result = scan_dataset(tmp_path / "mine", layout="folder")

    assert result.errors == []
    splits = sorted((image.split, image.image_path.parent.name) for image in result.images)
    assert splits.count(("train", "good")) == 6
    assert splits.count(("test", "test_good")) == 2
    defect = [image for image in result.images if image.is_anomalous][0]
    assert defect.defect_type == "defect"
    assert defect.mask_path == folder / "masks" / "a00_mask.png"


def test_folder_layout_missing_mask(tmp_path):
    folder = make_folder_product(tmp_path, "gadget", good=2, anomalous=1)
    (folder / "masks" / "a00.png").unlink()

    result = scan_dataset(folder)
    assert result.errors == []
    image = next(image for image in result.images if image.is_anomalous)
    assert (image.image_path.name, image.split, image.defect_type, image.mask_path) == ("a00.jpg", "test", "anomalous", None)


def test_folder_layout_without_any_mask_folder(tmp_path):
    """Photos of good parts and of defective ones, nobody drew a mask: good/ and defect/ only."""
    folder = make_folder_product(tmp_path, "gadget", good=5, anomalous=2, anomalous_dir="defect")
    shutil.rmtree(folder / "masks")

    assert detect_layout(folder) == "folder"
    result = scan_dataset(folder)
    assert result.errors == []
    anomalous = [image for image in result.images if image.is_anomalous]
    assert [(image.defect_type, image.mask_path) for image in anomalous] == [("defect", None), ("defect", None)]


# --- Masks without an image (every layout reports them, as beside always did) ------------------


@pytest.mark.parametrize("layout", ["mvtec", "btad", "folder"])
def test_a_mask_without_its_image_is_reported(tmp_path, layout):
    """A mask whose image was renamed or deleted is an error naming it, not silently dropped."""
    if layout == "mvtec":
        folder = make_mvtec(tmp_path, "bottle", defects={"broken_large": 2})
        (folder / "test" / "broken_large" / "001.png").unlink()
        write_mask(folder / "ground_truth" / "contamination" / "000_mask.png")  # a folder with no test/ folder
        expected = ["ground_truth/broken_large/001_mask.png: mask without image (no image of its name in "
                    "test/broken_large/)",
                    "ground_truth/contamination/000_mask.png: mask without image (no image of its name in "
                    "test/contamination/)"]
    elif layout == "btad":
        folder = make_btad(tmp_path, "01", ko=2)
        (folder / "test" / "ko" / "0000.bmp").unlink()
        expected = ["ground_truth/ko/0000.png: mask without image (no image of its name in test/ko/)"]
    else:
        folder = make_folder_product(tmp_path, "gadget", good=5, anomalous=2)
        write_mask(folder / "masks" / "renamed.png")
        expected = ["masks/renamed.png: mask without image (no image of its name in anomalous/ or defect/)"]

    result = scan_dataset(folder, layout=layout)

    assert sorted(result.errors) == expected
    assert all(image.image_path.exists() for image in result.images)


def test_masks_without_image_in_a_folder_of_products_name_the_product(tmp_path):
    make_mvtec(tmp_path / "set", "bottle")
    gadget = make_folder_product(tmp_path / "other", "gadget", good=5, anomalous=1)
    (tmp_path / "set" / "bottle" / "test" / "broken_large" / "000.png").unlink()
    write_mask(gadget / "masks" / "lost_mask.png")

    assert scan_dataset(tmp_path / "set").errors == [
        "bottle/ground_truth/broken_large/000_mask.png: mask without image (no image of its name in "
        "bottle/test/broken_large/)"]
    assert scan_dataset(tmp_path / "other", layout="folder").errors == [
        "gadget/masks/lost_mask.png: mask without image (no image of its name in gadget/anomalous/ or "
        "gadget/defect/)"]


# --- Unknown and ambiguous -----------------------------------------------------------------


def test_unknown_layout_says_what_was_expected(tmp_path):
    write_png(tmp_path / "pictures" / "cat.png")
    (tmp_path / "pictures" / "holiday").mkdir()

    with pytest.raises(UnknownLayoutError) as raised:
        detect_layout(tmp_path / "pictures")

    message = str(raised.value)
    assert "unknown dataset layout" in message
    assert "mvtec:  <product>/train/good/" in message
    assert "btad:   <product>/train/ok/" in message
    assert "folder: <product>/good/" in message
    with pytest.raises(UnknownLayoutError):
        scan_dataset(tmp_path / "pictures")


def test_ambiguous_layouts_are_refused(tmp_path):
    make_mvtec(tmp_path / "mixed", "bottle")
    make_btad(tmp_path / "mixed", "01")

    with pytest.raises(UnknownLayoutError, match="ambiguous layout.*btad: 01; mvtec: bottle"):
        detect_layout(tmp_path / "mixed")


def test_explicit_layout_that_does_not_match(tmp_path):
    folder = make_mvtec(tmp_path, "bottle")

    with pytest.raises(UnknownLayoutError, match="no product folder in the btad layout"):
        scan_dataset(folder, layout="btad")
    with pytest.raises(UnknownLayoutError, match="Unknown layout 'coco'"):
        scan_dataset(folder, layout="coco")


def test_a_stray_folder_beside_product_folders_is_reported(tmp_path):
    make_mvtec(tmp_path / "data", "bottle")
    (tmp_path / "data" / "notes").mkdir()
    (tmp_path / "data" / "labels.csv").write_text("image_path,background,defect_category\n")

    result = scan_dataset(tmp_path / "data")

    assert result.errors == ["notes/: not a product folder in the mvtec layout"]


def test_notes_and_metadata_files_are_ignored(tmp_path):
    folder = make_mvtec(tmp_path, "bottle")
    (folder / "defectbench.json").write_text("{}")
    (folder / "labels.csv").write_text("image_path,background,defect_category\n")
    (folder / "test" / "broken_large" / "notes.txt").write_text("two are blurry")
    (folder / "LICENSE").write_text("CC BY-NC-SA")

    result = scan_dataset(folder)

    assert result.errors == []
    assert len(result.images) == 7
