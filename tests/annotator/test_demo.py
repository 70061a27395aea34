"""The synthetic demo dataset: deterministic, both kinds, all four categories, imports cleanly."""
import csv
import hashlib
import json
import time

import numpy as np
import pytest
from PIL import Image as PILImage
from scipy import ndimage

from annotator.layouts import scan_dataset
from annotator.models import Image, Label, Product
from annotator.services.demo import generate_demo_dataset


def file_hashes(root):
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_two_runs_write_identical_files(tmp_path):
    started = time.monotonic()
    first = generate_demo_dataset(tmp_path / "a" / "demo")
    elapsed = time.monotonic() - started
    second = generate_demo_dataset(tmp_path / "b" / "demo")

    assert file_hashes(first) == file_hashes(second)
    assert len(file_hashes(first)) == 2 * (20 + 6 + 16 + 16) + 2
    # make run and many tests generate it: it must stay quick (3 s budget, slack for a busy CI box).
    assert elapsed < 5, f"generation took {elapsed:.1f} s"
    assert file_hashes(generate_demo_dataset(tmp_path / "c" / "demo", seed=1)) != file_hashes(first)


def test_layout_products_and_masks(demo_dataset_dir):
    result = scan_dataset(demo_dataset_dir)

    assert result.errors == []
    assert result.layout == "mvtec"
    assert result.products == ["fabric", "widget"]
    for product, structural in (("widget", "missing_piece"), ("fabric", "hole")):
        images = [image for image in result.images if image.product == product]
        groups = {}
        for image in images:
            groups[(image.split, image.defect_type)] = groups.get((image.split, image.defect_type), 0) + 1
        assert groups == {
            ("train", "good"): 20,
            ("test", "good"): 6,
            ("test", structural): 4,
            ("test", "scratch"): 4,
            ("test", "stain"): 4,
            ("test", "mixed"): 4,
        }
        for image in images:
            if not image.is_anomalous:
                continue
            picture = PILImage.open(image.image_path)
            mask = np.asarray(PILImage.open(image.mask_path))
            assert picture.size == (128, 128) and mask.shape == (128, 128)
            assert set(np.unique(mask)) == {0, 255}
            components = ndimage.label(mask > 0)[1]
            if image.defect_type == "mixed":
                assert components >= 2, image.image_path
            # Visible: the defect region differs clearly from the same product without it.
            assert 0.002 < (mask > 0).mean() < 0.2


def test_defects_are_visible_against_good_images(demo_dataset_dir):
    """Mean absolute difference inside the mask is far above the noise between good images."""
    good = np.stack([
        np.asarray(PILImage.open(path), dtype=np.float64)
        for path in sorted((demo_dataset_dir / "widget" / "train" / "good").glob("*.png"))
    ])
    typical = good.mean(axis=0)
    noise = np.abs(good - typical).mean()
    for path in sorted((demo_dataset_dir / "widget" / "test" / "stain").glob("*.png")):
        mask = np.asarray(PILImage.open(demo_dataset_dir / "widget" / "ground_truth" / "stain" / f"{path.stem}_mask.png")) > 0
        image = np.asarray(PILImage.open(path), dtype=np.float64)
        assert np.abs(image - typical)[mask].mean() > 5 * noise


def test_labels_csv_covers_all_four_categories(demo_dataset_dir):
    with open(demo_dataset_dir / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))

    assert list(rows[0]) == ["image_path", "background", "defect_category"]
    assert len(rows) == 32
    assert {row["defect_category"] for row in rows} == {"structural", "surface", "contamination", "combined"}
    assert set(Label.Category.values) == {row["defect_category"] for row in rows}
    for row in rows:
        # Relative to the dataset folder's parent, like the MVTec bottle reference.
        assert (demo_dataset_dir.parent / row["image_path"]).is_file()
        assert row["image_path"].startswith("demo/")
        product = row["image_path"].split("/")[1]
        assert row["background"] == {"widget": "yes", "fabric": "no"}[product]
    by_type = {(row["image_path"].split("/")[3], row["defect_category"]) for row in rows}
    assert by_type == {
        ("missing_piece", "structural"), ("hole", "structural"), ("scratch", "surface"),
        ("stain", "contamination"), ("mixed", "combined"),
    }
    assert json.loads((demo_dataset_dir / "defectbench.json").read_text()) == {
        "products": {"fabric": {"kind": "texture"}, "widget": {"kind": "object"}}
    }


@pytest.mark.django_db
def test_demo_dataset_fixture_imports_cleanly(demo_dataset):
    assert demo_dataset.name == "demo"
    assert demo_dataset.layout == "mvtec"
    assert dict(Product.objects.filter(dataset=demo_dataset).values_list("name", "kind")) == {
        "widget": "object", "fabric": "texture"
    }
    images = Image.objects.filter(product__dataset=demo_dataset)
    assert images.count() == 84
    assert images.filter(is_anomalous=True).exclude(mask_path="").count() == 32
    assert images.filter(split="train").count() == 40
