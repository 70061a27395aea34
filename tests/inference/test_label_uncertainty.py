"""Two annotators who disagree on 10 images of a bottle-like product: the breakdowns weighted by
their votes, against the same figures computed here from the run's per-image pixel counts, and
the "depends on disputed labels" tag on the results page and in the CSV."""
import csv
import hashlib
import io

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image as PILImage

from annotator.models import Dataset, Image, Product
from annotator.services import review
from annotator.services.labels import save_label
from inference.models import RunSample, Status
from inference.services.execution import execute_product_run
from inference.services.runs import launch_run
from tests.inference.conftest import SMALL

SIZE = 64
# folder -> (count, defect square (rows, cols) drawn into the image or None, mask square)
STRUCTURAL = "broken_large"  # a black square the model sees, both annotators: structural
DISPUTED = "contamination"  # a defect no model can see; annotator A: contamination, B: structural
STAIN = "stain"  # a red square, both annotators: contamination


def _picture(rng, defect=None, colour=(0, 0, 0)):
    """A grey backdrop with a light disc (a bottle seen from above), a little noise, an optional square."""
    y, x = np.mgrid[:SIZE, :SIZE]
    pixels = np.full((SIZE, SIZE, 3), 110.0)
    pixels[(y - 32) ** 2 + (x - 32) ** 2 < 24 ** 2] = 170.0
    pixels += rng.normal(0, 2, pixels.shape)
    if defect is not None:
        (r0, r1), (c0, c1) = defect
        pixels[r0:r1, c0:c1] = colour
    return PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _save(root, rel, picture):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mask(root, rel, square):
    (r0, r1), (c0, c1) = square
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[r0:r1, c0:c1] = 255
    _save(root, rel, PILImage.fromarray(mask))


def _bottle_like(root) -> Product:
    """10 train and 6 test defect-free images, 8 structural, 10 disputed and 4 stained anomalous ones."""
    rng = np.random.default_rng(0)
    dataset = Dataset.objects.create(name="bottle-like", layout=Dataset.Layout.MVTEC, root=str(root), label_overlap=2)
    product = Product.objects.create(dataset=dataset, name="bottle")

    def add(split, folder, k, picture, mask_square=None):
        rel = f"bottle/{split}/{folder}/{k:03d}.png"
        checksum = _save(root, rel, picture)
        mask_rel = ""
        if mask_square is not None:
            mask_rel = f"bottle/ground_truth/{folder}/{k:03d}_mask.png"
            _mask(root, mask_rel, mask_square)
        return Image.objects.create(product=product, split=split, is_anomalous=mask_square is not None,
                                    defect_type=folder, path=rel, mask_path=mask_rel, width=SIZE, height=SIZE,
                                    checksum=checksum)

    for k in range(10):
        add("train", "good", k, _picture(rng))
    for k in range(6):
        add("test", "good", k, _picture(rng))
    square = ((20, 36), (20, 36))
    images = {STRUCTURAL: [add("test", STRUCTURAL, k, _picture(rng, square), square) for k in range(8)],
              DISPUTED: [add("test", DISPUTED, k, _picture(rng), ((30, 46), (30, 46))) for k in range(10)],
              STAIN: [add("test", STAIN, k, _picture(rng, ((10, 22), (40, 52)), (220, 30, 30)), ((10, 22), (40, 52)))
                      for k in range(4)]}
    return product, images


@pytest.fixture
def disputed_run(db, settings, tmp_path, make_user, admin_account, reviewer_account):
    root = tmp_path / "data" / "bottle-like"
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path / "data"]
    product, images = _bottle_like(root)
    a, b = make_user("annotator-a"), make_user("annotator-b")
    for folder, category in ((STRUCTURAL, "structural"), (STAIN, "contamination")):
        for image in images[folder]:
            for annotator in (a, b):
                save_label(image=image, annotator=annotator, background=True, category=category)
    for n, image in enumerate(images[DISPUTED]):
        save_label(image=image, annotator=a, background=True, category="contamination")
        save_label(image=image, annotator=b, background=True, category="structural")
        if n < 5:  # half of them settled by a reviewer, the others still open (no final label)
            review.decide(image=image, reviewer=reviewer_account, background=True, category="contamination")
    run = launch_run(admin_account, product.dataset, [product], model="padim", config=SMALL, seed=0,
                     techniques=["iou_curve", "f1"])
    part = run.product_runs.get()
    assert execute_product_run(part.pk, finalize=True) == Status.SUCCEEDED
    part.refresh_from_db()
    return run, part, images


def _pooled_iou(report, technique, weights):
    """IoU from the report's per-image [TP, FP, FN] counts, each image weighted (0 = left out)."""
    tp = fp = fn = 0.0
    for entry in report["per_image"]:
        w = weights.get(entry["key"], 0.0)
        t, f, n = entry["counts"][technique]
        tp, fp, fn = tp + w * t, fp + w * f, fn + w * n
    return tp / (tp + fp + fn)


def test_weighted_breakdown_is_the_hand_computed_one_and_the_page_flags_it(disputed_run, client, admin_account):
    run, part, images = disputed_run
    keys = {folder: [str(i.pk) for i in group] for folder, group in images.items()}
    shares = RunSample.objects.get(product_run=part, image=images[DISPUTED][0])
    assert (shares.category_shares, shares.background_shares) == ({"contamination": 0.5, "structural": 0.5},
                                                                   {"true": 1.0})
    assert RunSample.objects.get(product_run=part, image=images[STRUCTURAL][0]).category_shares is None

    report = part.report
    technique = report["selection"]["chosen"]
    in_test = {entry["key"] for entry in report["per_image"]}
    disputed_in_test = [k for k in keys[DISPUTED] if k in in_test]
    assert disputed_in_test  # the split puts some of the 10 in the test part

    structural = report["breakdowns"]["by_category"]["structural"]
    final = _pooled_iou(report, technique, {k: 1.0 for k in keys[STRUCTURAL]})
    weighted = _pooled_iou(report, technique, {**{k: 1.0 for k in keys[STRUCTURAL]},
                                               **{k: 0.5 for k in keys[DISPUTED]}})
    lu = structural["label_uncertainty"]
    assert structural["segmentation"][technique]["iou"] == pytest.approx(final, rel=1e-12)
    assert lu["final_iou"]["value"] == pytest.approx(final, rel=1e-12)
    assert lu["weighted"][technique]["iou"] == pytest.approx(weighted, rel=1e-12)
    structural_in_test = [k for k in keys[STRUCTURAL] if k in in_test]
    assert lu["n_disputed"] == len(disputed_in_test)
    assert lu["weight_total"] == len(structural_in_test) + 0.5 * len(disputed_in_test)
    # the disputed images' defects cannot be seen: counting half of each in structural pulls its IoU
    # down, far below what resampling structural's own test images does
    assert weighted < lu["final_iou"]["low"] <= final
    assert lu["technique"] == technique and lu["depends_on_disputed_labels"] is True

    contamination = report["breakdowns"]["by_category"]["contamination"]
    settled = [str(i.pk) for i in images[DISPUTED][:5]]
    assert contamination["segmentation"][technique]["iou"] == pytest.approx(
        _pooled_iou(report, technique, {**{k: 1.0 for k in keys[STAIN]}, **{k: 1.0 for k in settled}}), rel=1e-12)
    assert contamination["label_uncertainty"]["weighted"][technique]["iou"] == pytest.approx(
        _pooled_iou(report, technique, {**{k: 1.0 for k in keys[STAIN]}, **{k: 0.5 for k in keys[DISPUTED]}}),
        rel=1e-12)
    assert report["breakdowns"]["by_defect_type"][STRUCTURAL]["label_uncertainty"] is None

    client.force_login(admin_account)
    html = client.get(reverse("benchmark-detail", args=[run.pk])).content.decode()
    assert "IoU weighted by annotators' votes" in html
    assert f"{weighted:.3f}" in html
    flagged = [name for key in ("by_category", "by_background")
               for name, block in report["breakdowns"][key].items()
               if (block["label_uncertainty"] or {}).get("depends_on_disputed_labels")]
    assert "structural" in flagged
    assert html.count('class="tag warn disputed-labels"') == len(flagged)
    assert "depends on disputed labels" in html and "how the disputed labels are settled" in html

    rows = list(csv.DictReader(io.StringIO(
        client.get(reverse("benchmark-download", args=[run.pk, "csv"])).content.decode())))
    row = next(r for r in rows if r["subset"] == "category:structural" and r["technique"] == technique)
    assert float(row["iou_weighted_by_votes"]) == pytest.approx(weighted, rel=1e-9)
    assert row["depends_on_disputed_labels"] == "True"


@pytest.mark.real_data
def test_real_bottle_with_two_annotators_who_disagree_on_ten_images(db, settings, real_bottle_root, real_labels_csv,
                                                                     make_user, admin_account, client):
    """MVTec AD bottle imported; annotator A gives the reference labels, annotator B the same except
    broken_small/000-009, small breaks B reads as surface scratches (left unsettled: no final label).
    PaDiM at 64 px with random weights: the numbers are poor, the arithmetic is what is checked."""
    from annotator.services import label_csv
    from annotator.services.importing import import_dataset

    settings.DEFECTBENCH_DATA_ROOTS = [real_bottle_root.parent]
    dataset = import_dataset(real_bottle_root).dataset
    reference = real_labels_csv.read_text()
    disputed = {f"bottle/test/broken_small/{k:03d}.png" for k in range(10)}
    second = "".join(line.rsplit(",", 1)[0] + ",surface\n" if line.split(",")[0] in disputed else line
                     for line in reference.splitlines(keepends=True))
    a, b = make_user("annotator-a"), make_user("annotator-b")
    for annotator, text in ((a, reference), (b, second)):
        assert label_csv.import_labels(text, dataset=dataset, importer=admin_account, annotator=annotator).applied
    product = dataset.products.get()
    run = launch_run(admin_account, dataset, [product], model="padim", seed=0, techniques=["iou_curve", "f1"],
                     config={"image_size": 64, "pretrained": False, "n_features": 50, "batch_size": 32})
    part = run.product_runs.get()
    assert execute_product_run(part.pk, finalize=True) == Status.SUCCEEDED
    part.refresh_from_db()
    report = part.report

    ids = dict(Image.objects.filter(product=product).values_list("path", "pk"))
    votes = {}  # report key -> (A's category, B's category)
    for line_a, line_b in zip(reference.splitlines()[1:], second.splitlines()[1:]):
        path = line_a.split(",")[0]
        votes[str(ids[path.removeprefix("bottle/")])] = (line_a.rsplit(",", 1)[1], line_b.rsplit(",", 1)[1])
    assert sum(1 for x, y in votes.values() if x != y) == 10
    technique = report["selection"]["chosen"]
    by_category = report["breakdowns"]["by_category"]
    assert set(by_category) == {"structural", "surface", "contamination", "combined"}
    for name, block in by_category.items():
        final = {k: 1.0 for k, (x, y) in votes.items() if x == y == name}
        weighted = {k: ((x == name) + (y == name)) / 2 for k, (x, y) in votes.items()}
        lu = block["label_uncertainty"]
        if block["segmentation"]:
            assert block["segmentation"][technique]["iou"] == pytest.approx(
                _pooled_iou(report, technique, final), rel=1e-12), name
        if lu["weighted"].get(technique):
            assert lu["weighted"][technique]["iou"] == pytest.approx(
                _pooled_iou(report, technique, weighted), rel=1e-12), name
    structural = by_category["structural"]
    assert structural["label_uncertainty"]["weighted"][technique]["iou"] != structural["segmentation"][technique]["iou"]
    # surface exists only by B's votes: no final-label image, so it depends on the disputed labels
    surface = by_category["surface"]
    assert surface["n_anomalous_test"] == surface["n_anomalous_validation"] == 0
    assert surface["label_uncertainty"]["depends_on_disputed_labels"] is True

    client.force_login(admin_account)
    html = client.get(reverse("benchmark-detail", args=[run.pk])).content.decode()
    flagged = [name for key in ("by_category", "by_background")
               for name, block in report["breakdowns"][key].items()
               if (block["label_uncertainty"] or {}).get("depends_on_disputed_labels")]
    assert html.count('class="tag warn disputed-labels"') == len(flagged)
    assert f"{surface['label_uncertainty']['weighted'][technique]['iou']:.3f}" in html
