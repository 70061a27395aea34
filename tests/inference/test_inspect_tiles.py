"""A PatchCore run fitted in ``tiles`` mode, deployed: the inspect API, a batch job and
``manage.py inspect`` take a 500 x 1250 image and give back its anomaly map, predicted mask and
picture at 500 x 1250 (the image's own size, never the model's square), with the verdict and score
the engine's Inspector gives the same image; the per-request pixel budget still refuses first."""
import csv
from io import BytesIO

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse
from PIL import Image
from rest_framework.test import APIClient

from inference.engine.package import load_package
from inference.models import InspectionJob, Status
from inference.services import deploy

pytestmark = pytest.mark.django_db

WIDTH, HEIGHT = 500, 1250
# Tiny and quick: 128 px tiles (one per demo image; 13 x 5 on a 500 x 1250 image), each at 64 px.
TILES = {"image_size": 64, "batch_size": 8, "resize": "tiles", "tile_size": 128, "tile_overlap": 0.25,
         "coreset_ratio": 0.1, "projection_dim": 16}


def fit_and_deploy_tiles_patchcore(dataset, admin):
    """A PatchCore run of the demo's fabric (a texture: what tiles are for) in tiles mode, executed
    in-process and deployed."""
    from inference.services.execution import execute_product_run
    from inference.services.runs import launch_run

    fabric = dataset.products.get(name="fabric")
    run = launch_run(admin, dataset, [fabric], model="patchcore", config=TILES, seed=1,
                     techniques=["iou_curve", "normal_max"])
    part = run.product_runs.get()
    assert execute_product_run(part.pk, finalize=True) == Status.SUCCEEDED
    part.refresh_from_db()
    assert part.package_path and part.report["config"]["resize"] == "tiles"
    return deploy.deploy(part, part.report["selection"]["chosen"], admin)


def tall_image(path, deployment):
    """A 500 x 1250 (width x height) picture written as PNG, and its pixels: the run's defect-free
    test images side by side (what the model knows, at a size it never saw) with one dark spot."""
    part = deployment.product_run
    path_of = {str(s.image_id): s.path for s in part.samples.all()}
    good = [np.asarray(Image.open(path_of[e["key"]]).convert("RGB")) for e in part.report["per_image"]
            if not e["anomalous"]]
    side = good[0].shape[0]
    rows = -(-HEIGHT // side)
    cols = -(-WIDTH // side)
    pixels = np.concatenate([np.concatenate([good[(r * cols + c) % len(good)] for c in range(cols)], axis=1)
                             for r in range(rows)], axis=0)[:HEIGHT, :WIDTH].copy()
    pixels[700:740, 180:240] = 15
    Image.fromarray(pixels).save(path)
    return pixels


def test_api_batch_and_cli_inspect_a_500_by_1250_image_at_its_own_size(bench_demo, admin_account, reviewer_account,
                                                                        client, settings, tmp_path):
    deployment = fit_and_deploy_tiles_patchcore(bench_demo, admin_account)
    package = deploy.package_root(deployment.product_run)
    folder = tmp_path / "data" / "new"
    folder.mkdir(parents=True)
    path = folder / "tall.png"
    pixels = tall_image(path, deployment)
    inspector = load_package(package)
    (expected,) = inspector.inspect([pixels], technique=deployment.technique)
    assert expected.anomaly_map.shape == (HEIGHT, WIDTH)
    product = deployment.product

    # API: the verdict and score of the Inspector, every PNG at the image's size
    api = APIClient()
    api.force_authenticate(reviewer_account)
    response = api.post(reverse("api-inspect", args=[product.pk]), {"images": [open(path, "rb")]}, format="multipart")
    assert response.status_code == 201, response.content
    (result,) = response.json()["results"]
    assert (result["width"], result["height"]) == (WIDTH, HEIGHT)
    assert result["verdict"] == ("defective" if expected.defective else "good")
    assert result["score"] == pytest.approx(expected.score, rel=1e-6)
    assert result["image_threshold"] == expected.image_threshold
    assert result["defect_area_fraction"] == pytest.approx(expected.defect_area_fraction)
    assert all(0 <= x0 < x1 <= WIDTH and 0 <= y0 < y1 <= HEIGHT for x0, y0, x1, y1 in
               (c["bbox"] for c in result["components"]))
    client.force_login(reviewer_account)
    shown = {}
    for key in ("image", "map", "mask"):
        served = client.get(result["urls"][key])
        assert served.status_code == 200, key
        shown[key] = Image.open(BytesIO(b"".join(served.streaming_content)))
        assert shown[key].size == (WIDTH, HEIGHT), key
    assert (np.asarray(shown["mask"]) > 0).tolist() == expected.predicted_mask.tolist()
    assert (np.asarray(shown["image"]) == pixels).all()  # the upload itself, not a resized copy
    assert expected.defective and 0 < result["defect_area_fraction"] < 0.2  # the spot, not the whole image
    page = client.get(reverse("inspect-page", args=[product.pk])).content.decode()
    assert "128 px tiles overlapping 0.25" in page  # the page says how the deployed model sees an image

    # The per-request pixel budget is checked on the header before anything is decoded.
    settings.DEFECTBENCH_INSPECT_MAX_PIXELS_PER_REQUEST = WIDTH * HEIGHT - 1
    jobs = InspectionJob.objects.count()
    refused = api.post(reverse("api-inspect", args=[product.pk]), {"images": [open(path, "rb")]}, format="multipart")
    assert refused.status_code == 400 and "pixels per request" in refused.content.decode()
    assert InspectionJob.objects.count() == jobs
    settings.DEFECTBENCH_INSPECT_MAX_PIXELS_PER_REQUEST = WIDTH * HEIGHT

    # A batch job over a folder in the data roots: the same result, the same sizes
    settings.DEFECTBENCH_DATA_ROOTS = [*settings.DEFECTBENCH_DATA_ROOTS, tmp_path / "data"]
    batch = deploy.start_batch(product, reviewer_account, folder=str(folder))
    assert deploy.execute_batch(batch.pk) == Status.SUCCEEDED
    batch.refresh_from_db()
    (entry,) = batch.results
    assert (entry["verdict"], entry["width"], entry["height"]) == (result["verdict"], WIDTH, HEIGHT)
    assert entry["score"] == pytest.approx(expected.score, rel=1e-6)
    for key in ("image", "map", "mask"):
        assert Image.open(batch.artifacts_root / entry["files"][key]).size == (WIDTH, HEIGHT), key
    gallery = client.get(reverse("inspection-detail", args=[batch.pk])).content.decode()
    assert "tall.png" in gallery and ("Defective (1)" if expected.defective else "Good (1)") in gallery

    # manage.py inspect: the map (.npy) and the mask (PNG) at the image's size
    out, maps = tmp_path / "inspect.csv", tmp_path / "maps"
    call_command("inspect", str(package), str(path), "--output", str(out), "--maps", str(maps), "--threads", "1")
    (row,) = list(csv.DictReader(out.open()))
    assert row["verdict"] == result["verdict"] and float(row["score"]) == pytest.approx(expected.score, rel=1e-5)
    (map_file,) = maps.glob("*_map.npy")
    (mask_file,) = maps.glob("*_mask.png")
    saved = np.load(map_file)
    assert saved.shape == (HEIGHT, WIDTH) and np.allclose(saved, expected.anomaly_map)
    assert Image.open(mask_file).size == (WIDTH, HEIGHT)
