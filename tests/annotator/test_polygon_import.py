"""Polygon annotations as labelling tools export them (LabelMe JSON, COCO polygons and RLE): imported
with masks rasterised at the images' native size under the media root, problems named by path."""
import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image as PILImage
from pycocotools import mask as coco_mask

from annotator.layouts import detect_layout, scan_dataset
from annotator.models import Dataset, Image
from annotator.paths import servable_mask
from annotator.polygon_masks import RENDERED_FOLDER
from annotator.services.importing import ImportFailed, import_dataset, import_zip
from inference.engine.data import load_mask
from inference.engine.pixels import decode_mask, orientation_of
from tests.annotator.test_importing import upload, zip_of
from tests.annotator.test_layouts import write_png

pytestmark = pytest.mark.django_db

SIZE = (64, 32)  # width, height: not square, so a swapped size shows
# A polygon 2 px wide (x 10..11 with LabelMe's outline included), rows 5..20.
THIN = [[10, 5], [11, 5], [11, 20], [10, 20]]


def thin_expected(size=SIZE) -> np.ndarray:
    expected = np.zeros((size[1], size[0]), dtype=bool)
    expected[5:21, 10:12] = True
    return expected


def labelme(path: Path, image_path: str, shapes, *, size=SIZE, image_data: bool = True) -> Path:
    """A LabelMe file as LabelMe 4.5/5 writes it."""
    embedded = None
    if image_data:  # a picture that is NOT the image: it must never be used
        buffer = io.BytesIO()
        PILImage.new("RGB", (5, 5), (255, 0, 0)).save(buffer, format="PNG")
        embedded = base64.b64encode(buffer.getvalue()).decode()
    data = {"version": "4.5.6", "flags": {}, "imagePath": image_path, "imageData": embedded,
            "imageWidth": size[0], "imageHeight": size[1],
            "shapes": [{"label": label, "points": points, "group_id": None, "shape_type": kind, "flags": {}}
                       for label, kind, points in shapes]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def make_bsdata_like(folder: Path, *, good: int = 6) -> Path:
    """Images in data/, LabelMe files in label/, an index whose annotations entry is null for a
    defect-free image: the layout BSData is published in."""
    index = []
    write_png(folder / "data" / "pit_0.jpg", SIZE, 40, fmt="JPEG")
    labelme(folder / "label" / "pit_0.json", "pit_0.jpg", [("Pitting", "polygon", THIN)])
    write_png(folder / "data" / "pit_1.jpg", SIZE, 60, fmt="JPEG")
    labelme(folder / "label" / "pit_1.json", "pit_1.jpg",
            [("Pitting", "polygon", [[30, 10], [40, 10], [40, 20]]), ("Scratch", "rectangle", [[55, 30], [50, 25]])],
            image_data=False)
    index += [{"filename": f"pit_{i}.jpg", "annotations": f"pit_{i}.json"} for i in range(2)]
    for number in range(good):
        write_png(folder / "data" / f"good_{number}.jpg", SIZE, 80 + 20 * number, fmt="JPEG")
        index.append({"filename": f"good_{number}.jpg", "annotations": None})
    (folder / "image_data.json").write_text(json.dumps({"images": index}))
    return folder


def files_under(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def failure_of(path, **kwargs) -> list[str]:
    with pytest.raises(ImportFailed) as raised:
        import_dataset(path, **kwargs)
    return raised.value.errors


def decoded(image: Image) -> np.ndarray:
    return decode_mask(image.mask_file_path, orientation=orientation_of(image.file_path)).defect


# --- LabelMe ------------------------------------------------------------------------------------


def test_a_labelme_folder_imports_with_masks_at_native_size_under_the_media_root(data_root, settings):
    folder = make_bsdata_like(data_root / "screws")
    before = files_under(folder)

    report = import_dataset(folder)

    assert report.layout == "polygons" and detect_layout(folder) == "polygons"
    assert str(report).splitlines()[1] == "screws: 5 train/good, 1 test/good, 2 anomalous (2 with mask) — 8 added, 0 unchanged"
    assert "split made by DefectBench (no split given): seed 0" in str(report)
    anomalous = Image.objects.filter(is_anomalous=True).order_by("path")
    assert list(anomalous.values_list("path", "mask_path", "split", "defect_type", "width", "height")) == [
        ("data/pit_0.jpg", "label/pit_0.json", "test", "Pitting", 64, 32),
        ("data/pit_1.jpg", "label/pit_1.json", "test", "Pitting+Scratch", 64, 32),
    ]
    assert set(Image.objects.filter(is_anomalous=False).values_list("mask_path", flat=True)) == {""}
    thin, two = anomalous
    # The 2-px-wide polygon survives, pixel for pixel, at the image's own size.
    assert np.array_equal(decoded(thin), thin_expected())
    expected = np.zeros((32, 64), dtype=bool)
    expected[25:31, 50:56] = True  # rectangle drawn from its lower right corner, outline included
    mask = decoded(two)
    assert np.array_equal(mask[22:, 45:], expected[22:, 45:]) and mask[:22].sum() > 0
    media = Path(settings.MEDIA_ROOT)
    for image in anomalous:
        assert image.mask_file_path.is_relative_to(media / RENDERED_FOLDER)
        assert servable_mask(image.product.dataset.root, image.path, image.mask_path) == image.mask_file_path
    assert files_under(folder) == before  # nothing written beside the user's files
    # The engine reads the same mask; a re-import changes nothing.
    assert load_mask(str(thin.mask_file_path), 64, str(thin.file_path)).sum() > 0
    assert import_dataset(folder).unchanged == 8


def test_labelme_files_beside_their_images_are_detected_and_shown(data_root, client, admin_account):
    folder = data_root / "flat"
    write_png(folder / "a.png", SIZE, 10)
    labelme(folder / "a.json", "a.png", [("crack", "linestrip", [[5, 16], [60, 16]])], image_data=False)
    write_png(folder / "b.png", SIZE, 20)
    labelme(folder / "b.json", "b.png", [], image_data=False)  # looked at, nothing found: defect-free
    write_png(folder / "c.png", SIZE, 30)

    report = import_dataset(folder)

    assert report.layout == "polygons"
    assert sorted(Image.objects.values_list("path", "is_anomalous", "defect_type")) == [
        ("a.png", True, "crack"), ("b.png", False, "good"), ("c.png", False, "good")]
    image = Image.objects.get(path="a.png")
    line = np.zeros((32, 64), dtype=bool)
    line[12:22, 5:61] = True  # a line strip is 10 px wide, as LabelMe exports it
    assert np.array_equal(decoded(image), line)
    client.force_login(admin_account)
    response = client.get(f"/files/images/{image.pk}/mask")
    assert response.status_code == 200
    shown = np.asarray(PILImage.open(io.BytesIO(b"".join(response.streaming_content)))) > 0
    assert np.array_equal(shown, decoded(image))


def test_problems_name_the_files_relative_to_the_dataset_and_nothing_is_left(data_root, settings):
    folder = make_bsdata_like(data_root / "screws", good=3)
    labelme(folder / "label" / "ghost.json", "ghost.jpg", [("Pitting", "polygon", THIN)])
    write_png(folder / "data" / "small.jpg", (32, 16), 11, fmt="JPEG")
    labelme(folder / "label" / "small.json", "small.jpg", [("Pitting", "polygon", THIN)])  # states 64x32
    write_png(folder / "data" / "edge.jpg", SIZE, 12, fmt="JPEG")
    labelme(folder / "label" / "edge.json", "edge.jpg", [("Pitting", "polygon", [[50, 5], [90, 5], [60, 20]])])

    errors = failure_of(folder)

    assert errors == [
        "label/ghost.json: its image 'ghost.jpg' (imagePath) is not in the dataset",
        "label/edge.json: shape 1 (Pitting): point (90, 5) lies outside the 64x32 image data/edge.jpg",
        "label/small.json: the file states an image of 64x32, but data/small.jpg is 32x16",
    ]
    assert not any(str(data_root) in error for error in errors)
    assert Dataset.objects.count() == 0
    assert not (Path(settings.MEDIA_ROOT) / RENDERED_FOLDER).exists() or \
        not any(p.is_file() for p in (Path(settings.MEDIA_ROOT) / RENDERED_FOLDER).rglob("*"))
    # Skipping them imports the rest; the images whose annotation is unusable are left out.
    report = import_dataset(folder, skip_invalid=True)
    assert report.products["screws"].anomalous == 2
    assert not Image.objects.filter(path__in=["data/small.jpg", "data/edge.jpg"]).exists()
    assert 'label/small.json,"the file states an image of 64x32, but data/small.jpg is 32x16"' in report.dataset.problem_report


def test_an_exif_rotated_photo_gets_its_mask_upright(data_root):
    folder = data_root / "phone"
    stored = PILImage.new("RGB", (SIZE[1], SIZE[0]), (90, 90, 90))  # stored 32x64, shown 64x32
    exif = PILImage.Exif()
    exif[0x0112] = 6
    (folder / "data").mkdir(parents=True)
    stored.save(folder / "data" / "p.jpg", exif=exif.tobytes())
    labelme(folder / "label" / "p.json", "../data/p.jpg", [("dent", "polygon", THIN)])  # upright, as LabelMe shows it
    write_png(folder / "data" / "q.jpg", SIZE, 70, fmt="JPEG")

    import_dataset(folder)

    image = Image.objects.get(path="data/p.jpg")
    assert (image.width, image.height) == SIZE
    assert np.array_equal(decoded(image), thin_expected())


# --- COCO ---------------------------------------------------------------------------------------


def test_coco_polygons_and_rle_import_as_pycocotools_draws_them(data_root):
    folder = data_root / "coco"
    for number in range(5):
        write_png(folder / "images" / f"{number}.png", SIZE, 10 + 30 * number)
    blob = np.zeros((32, 64), dtype=np.uint8)
    blob[3:9, 40:47] = 1
    blob[20, 5] = 1  # a single pixel survives too
    compressed = coco_mask.encode(np.asfortranarray(blob))
    column_runs = [32 * 7 + 2, 3, 64 * 32 - (32 * 7 + 5)]  # uncompressed: column-major runs, zeros first
    coco = {
        "images": [{"id": n, "file_name": f"{n}.png", "width": 64, "height": 32} for n in range(5)]
        + [{"id": 9, "file_name": "deleted.png", "width": 64, "height": 32}],  # not kept, no annotation
        "categories": [{"id": 1, "name": "crack"}, {"id": 2, "name": "stain"}],
        "annotations": [
            {"id": 1, "image_id": 0, "category_id": 1, "iscrowd": 0,
             "segmentation": [[10, 5, 12, 5, 12, 20, 10, 20]]},
            {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 1,
             "segmentation": {"size": [32, 64], "counts": compressed["counts"].decode()}},
            {"id": 3, "image_id": 2, "category_id": 2, "iscrowd": 1,
             "segmentation": {"size": [32, 64], "counts": column_runs}},
        ],
    }
    (folder / "annotations").mkdir()
    (folder / "annotations" / "instances.json").write_text(json.dumps(coco))

    report = import_dataset(folder)

    assert report.layout == "polygons" and report.products["coco"].anomalous == 3
    rows = {image.path: image for image in Image.objects.all()}
    assert [rows[f"images/{n}.png"].defect_type for n in range(5)] == ["crack", "stain", "stain", "good", "good"]
    assert rows["images/0.png"].mask_path == "annotations/instances.json"
    polygon = np.zeros((32, 64), dtype=bool)
    polygon[5:20, 10:12] = True  # COCO's convention: 2 px wide, no outline added
    assert np.array_equal(decoded(rows["images/0.png"]), polygon)
    assert np.array_equal(decoded(rows["images/1.png"]), blob.astype(bool))
    runs = np.zeros((32, 64), dtype=bool)
    runs[2:5, 7] = True
    assert np.array_equal(decoded(rows["images/2.png"]), runs)


def test_coco_problems_are_named(data_root):
    folder = data_root / "coco"
    write_png(folder / "a.png", SIZE, 1)
    write_png(folder / "b.png", SIZE, 2)
    (folder / "coco.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32},
                   {"id": 2, "file_name": "gone.png", "width": 64, "height": 32},
                   {"id": 3, "file_name": "b.png", "width": 64, "height": 32}],
        "annotations": [{"id": 7, "image_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]},
                        {"id": 8, "image_id": 2, "segmentation": [[1, 1, 5, 1, 5, 5]]},
                        {"id": 9, "image_id": 3, "segmentation": {"size": [64, 32], "counts": [5, 10]}}]}))

    assert failure_of(folder, layout="polygons") == [
        "coco.json: image 2 (gone.png): its image 'gone.png' (file_name) is not in the dataset",
        "coco.json: image 1 (a.png): the file states an image of 32x32, but a.png is 64x32",
        "coco.json: image 3 (b.png): annotation 9: RLE of 32x64, but b.png is 64x32",
    ]


# --- Zip upload and the benchmark's folder scan ---------------------------------------------------


def test_a_zipped_labelme_folder_uploads(data_root, settings, admin_account):
    make_bsdata_like(data_root / "src", good=3)

    report = import_zip(upload(zip_of(data_root / "src"), name="screws.zip"), created_by=admin_account)

    assert report.layout == "polygons" and report.products["screws"].anomalous == 2
    mask = Image.objects.get(path="data/pit_0.jpg").mask_file_path
    assert mask.is_relative_to(Path(settings.MEDIA_ROOT) / RENDERED_FOLDER)
    assert np.array_equal(decode_mask(mask).defect, thin_expected())


def test_a_folder_of_products_finds_the_polygon_product(data_root, tmp_path):
    make_bsdata_like(data_root / "screws", good=2)
    write_png(data_root / "notes" / "x.png")

    scan = scan_dataset(data_root, mask_dir=tmp_path / "masks")

    assert scan.layout == "polygons" and scan.products == ["screws"]
    assert scan.errors == ["notes/: not a product folder in the polygons layout"]
    masks = [image.mask_path for image in scan.images if image.mask_path]
    assert len(masks) == 2 and all(m.is_relative_to(tmp_path / "masks") for m in masks)


# --- The real BSData --------------------------------------------------------------------------------


@pytest.mark.real_data
def test_real_bsdata_imports_as_published(settings, real_bsdata_root):
    settings.DEFECTBENCH_DATA_ROOTS = [real_bsdata_root.parent]
    before = files_under(real_bsdata_root)
    out = io.StringIO()
    started = time.monotonic()
    call_command("import_dataset", str(real_bsdata_root), "--layout", "auto", stdout=out, stderr=io.StringIO())
    seconds = time.monotonic() - started
    text = out.getvalue()

    assert "(polygons, created)" in text
    assert "bsdata: 275 train/good, 69 test/good, 84 anomalous (84 with mask) — 428 added, 0 unchanged" in text
    images = Image.objects.all()
    anomalous = images.filter(is_anomalous=True)
    assert images.count() == 428 and anomalous.count() == 84
    assert set(anomalous.values_list("defect_type", flat=True)) == {"Pitting"}
    assert set(images.values_list("width", "height")) == {(1130, 460)}
    index = json.loads((real_bsdata_root / "image_data.json").read_text())["images"]
    labelled = {f"data/{entry['filename']}" for entry in index if entry["annotations"] is not None}
    assert set(anomalous.values_list("path", flat=True)) == labelled  # the publisher's ground truth
    media = Path(settings.MEDIA_ROOT) / RENDERED_FOLDER
    shares = []
    for image in anomalous:
        assert image.mask_file_path.is_relative_to(media)
        mask = decoded(image)
        assert mask.shape == (460, 1130)
        shares.append(mask.mean())
    assert 0.001 < float(np.median(shares)) < 0.004  # pits of ~0.2 % of the image: none lost
    assert files_under(real_bsdata_root) == before
    print(f"bsdata import: {seconds:.1f} s")


# --- Rasterisation of the other LabelMe shapes ---------------------------------------------------


def test_labelme_circles_points_and_mask_shapes_follow_labelme(tmp_path):
    from annotator.polygon_masks import read_annotations, rasterise

    patch = np.zeros((3, 4), dtype=np.uint8)
    patch[1, :] = 255
    buffer = io.BytesIO()
    PILImage.fromarray(patch, "L").save(buffer, format="PNG")
    source = labelme(tmp_path / "shapes.json", "x.png", [
        ("pit", "circle", [[20, 16], [23, 16]]), ("dot", "point", [[50, 5]])], image_data=False)
    data = json.loads(source.read_text())
    data["shapes"].append({"label": "blob", "shape_type": "mask", "points": [[60, 29], [63, 31]],
                           "mask": base64.b64encode(buffer.getvalue()).decode()})
    source.write_text(json.dumps(data))
    (annotation,) = read_annotations(source)

    mask = rasterise(annotation, *SIZE)

    assert annotation.defect_type == "blob+dot+pit"
    ys, xs = np.nonzero(mask[:, :40])
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (17, 23, 13, 19)  # radius 3, outline included
    ys, xs = np.nonzero(mask[:12, 40:])
    assert (xs.min() + 40, xs.max() + 40, ys.min(), ys.max()) == (45, 55, 0, 10)  # LabelMe's point: radius 5
    expected_patch = np.zeros((3, 4), dtype=bool)
    expected_patch[1, :] = True
    assert np.array_equal(mask[29:32, 60:64], expected_patch)  # pasted at its box
