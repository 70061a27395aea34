"""Images of any size: ground truth resampled by area, keep_aspect / tiles preprocessing, thin
scratches found at native resolution, and position-specific models refused with the reason."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.engine import BenchmarkConfig, Sample, run_benchmark
from inference.engine.data import load_canvas_masks
from inference.engine.geometry import Preprocessing, area_resample_mask, evaluation_canvas, geometry_problem


def _crack_mask(h=400, w=1000, width=2) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[50:350, 501:501 + width] = True  # vertical crack, 2 px wide
    mask[200:200 + width, 100:900] = True  # horizontal crack
    return mask


@pytest.mark.parametrize("max_pixels", [400 * 1000, 100 * 1000, 20 * 1000, 4096])
def test_a_two_pixel_crack_survives_in_the_ground_truth_at_every_evaluation_resolution(tmp_path, max_pixels):
    mask = _crack_mask()
    img_path, mask_path = tmp_path / "img.png", tmp_path / "mask.png"
    Image.fromarray(np.zeros((400, 1000, 3), np.uint8)).save(img_path)
    Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
    sample = Sample(str(img_path), str(mask_path), "crack")
    canvas = evaluation_canvas([(400, 1000)], max_pixels)
    assert canvas[0] * canvas[1] <= max_pixels and abs(canvas[1] / canvas[0] - 2.5) < 0.05
    got = load_canvas_masks([sample], canvas)[0]
    # the crack is still there along its whole length: every row and column it crosses holds defect pixels
    rows = np.flatnonzero(got.any(axis=1))
    assert rows.min() <= 50 * canvas[0] / 400 + 1 and rows.max() >= 350 * canvas[0] / 400 - 2
    assert got[:, int(501 * canvas[1] / 1000)].sum() >= 0.7 * 300 * canvas[0] / 400
    assert got[int(200 * canvas[0] / 400)].sum() >= 0.7 * 800 * canvas[1] / 1000


def test_area_resampling_keeps_a_full_mask_full_and_an_empty_one_empty():
    for shape in [(7, 13), (300, 50), (1000, 400)]:
        assert area_resample_mask(np.ones((400, 1000), bool), shape).all()
        assert not area_resample_mask(np.zeros((400, 1000), bool), shape).any()


@pytest.mark.parametrize("native", [(120, 300), (300, 120), (64, 64), (40, 90)])
def test_keep_aspect_and_tiles_give_back_a_map_at_the_image_size_without_the_pad(native):
    h, w = native
    image = np.zeros((h, w, 3), np.uint8)
    image[:, w // 2:] = 200  # right half bright
    for prep in (Preprocessing("keep_aspect", 64), Preprocessing("tiles", 64, tile_size=64, tile_overlap=0.25)):
        inputs = prep.inputs(image)
        assert len(inputs) == prep.count(native) and all(x.shape == (64, 64, 3) for x in inputs)
        # an "identity model": the map is the input's brightness; the pad (edge repeated) would add
        # bright or dark pixels the image does not have if it leaked into the map
        maps = [x[..., 0].astype(np.float32) for x in inputs]
        amap, score = prep.assemble(maps, [float(m.max()) for m in maps], native)
        assert amap.shape == native
        assert abs(amap[:, : w // 2 - 3].mean()) < 5 and abs(amap[:, w // 2 + 3:].mean() - 200) < 5
        assert score == pytest.approx(200, abs=1)


def test_position_specific_models_are_refused_with_the_reason():
    sizes = [(100, 200), (100, 250), (120, 120)]
    assert geometry_problem(Preprocessing("squash"), True, "PaDiM", sizes) is None
    assert geometry_problem(Preprocessing("keep_aspect"), True, "PaDiM", [(100, 200)] * 3) is None
    assert "one geometry" in geometry_problem(Preprocessing("keep_aspect"), True, "PaDiM", sizes)
    assert "tiles" in geometry_problem(Preprocessing("tiles"), True, "PaDiM", [(100, 200)] * 3)
    assert geometry_problem(Preprocessing("tiles"), False, "PatchCore", sizes) is None


def _scratch_set(root: Path, h=160, w=480, n_train=6, n_good=3, n_bad=5, seed=0, sizes=None):
    """Fine-grained texture, large non-square images; defects are 1-3 px dark scratches."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)

    shape = iter(sizes or [])

    def texture():
        nonlocal h, w
        h, w = next(shape, (h, w))
        img = 150 + rng.normal(0, 6, (h, w, 1)) + np.array([0, -10, -20])
        return img

    def save(name, img, mask=None):
        p = root / f"{name}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p)
        mp = None
        if mask is not None:
            mp = root / f"{name}_mask.png"
            Image.fromarray(mask.astype(np.uint8) * 255).save(mp)
        return str(p), (str(mp) if mp else None)

    train = [Sample(*save(f"train{i}", texture()), "good", key=f"train{i}") for i in range(n_train)]
    test = [Sample(*save(f"good{i}", texture()), "good", key=f"good{i}") for i in range(n_good)]
    for i in range(n_bad):
        img, mask = texture(), np.zeros((h, w), bool)
        for _ in range(2):
            width = int(rng.integers(1, 4))
            y0, x0 = int(rng.integers(10, h - 10)), int(rng.integers(20, w // 2))
            length, slope = int(rng.integers(w // 4, w // 2)), rng.uniform(-0.3, 0.3)
            for x in range(x0, min(w, x0 + length)):
                y = int(round(y0 + slope * (x - x0)))
                if 0 <= y and y + width <= h:
                    mask[y:y + width, x] = True
        img[mask] = 60
        test.append(Sample(*save(f"bad{i}", img, mask), "scratch", key=f"bad{i}"))
    return train, test


def test_thin_scratches_on_large_non_square_images_are_found_with_tiles_and_lost_when_squashed(tmp_path):
    train, test = _scratch_set(tmp_path / "scratches")
    common = dict(model="patchcore", image_size=64, batch_size=16, device="cpu", techniques=("iou_curve",),
                  coreset_ratio=0.1)
    tiles = run_benchmark(train, test, BenchmarkConfig(resize="tiles", tile_size=64, tile_overlap=0.25, **common))
    squash = run_benchmark(train, test, BenchmarkConfig(resize="squash", **common))
    t, s = tiles["whole_folder"], squash["whole_folder"]
    assert t["pixel_auroc"] >= 0.95, t
    # measured: tiles 0.984 / AUPRO 0.933, squash 0.922 / 0.686 (the scratches shrink 7.5x across)
    assert s["pixel_auroc"] <= t["pixel_auroc"] - 0.04, (s, t)
    assert s["aupro"] <= t["aupro"] - 0.15, (s, t)
    assert tiles["config"]["resize"] == "tiles" and tiles["config"]["tile_size"] == 64


def test_images_of_three_sizes_benchmark_without_distortion_and_padim_is_refused_on_them(tmp_path):
    sizes = [(120, 300), (200, 200), (90, 240)] * 6  # aspect 2.5, 1 and 2.7, in turn
    train, test = _scratch_set(tmp_path / "mixed", n_train=6, n_good=4, n_bad=5, sizes=sizes)
    common = dict(image_size=64, batch_size=8, device="cpu", techniques=("iou_curve", "f1"), coreset_ratio=0.1)
    for resize in ("keep_aspect", "tiles"):
        report = run_benchmark(train, test, BenchmarkConfig(model="patchcore", resize=resize, tile_size=64, **common),
                               artifacts_dir=tmp_path / resize)
        assert report["whole_folder"]["pixel_auroc"] > 0.8, (resize, report["whole_folder"])
        overlay = Image.open(tmp_path / resize / report["per_image"][0]["artifacts"]["overlay"])
        assert overlay.size == (240, 120)  # the canvas: median width x median height, not a square
    with pytest.raises(ValueError, match="PaDiM models each map position separately.*240x90"):
        run_benchmark(train, test, BenchmarkConfig(model="padim", resize="keep_aspect", **common))
    with pytest.raises(ValueError, match="VAE attribution.*tiles"):
        run_benchmark(train, test, BenchmarkConfig(model="attribution", resize="tiles", **common))


def test_a_keep_aspect_package_records_its_preprocessing_and_inspects_at_the_image_size(tmp_path):
    """PaDiM (packable today; PatchCore is not yet): one non-square geometry, letterboxed."""
    from inference.engine.package import load_package, read_manifest, save_package

    train, test = _scratch_set(tmp_path / "wide", h=100, w=300, n_train=6, n_good=4, n_bad=5)
    saved = {}

    def save(model, report):
        saved["path"] = save_package(model, report, tmp_path / "pkg")

    report = run_benchmark(train, test, BenchmarkConfig(model="padim", resize="keep_aspect", image_size=64,
                                                        n_features=20, batch_size=8, device="cpu",
                                                        techniques=("iou_curve", "f1")),
                           save_model=save)
    pre = read_manifest(saved["path"])["preprocessing"]
    assert pre["resize"] == "keep_aspect" and "pad" in pre["resize_method"]
    inspector = load_package(saved["path"], device="cpu")
    assert inspector.prepare_size is None
    bad = next(s for s in test if s.mask_path)
    (result,) = inspector.inspect_files([bad.image_path])
    mask = np.asarray(Image.open(bad.mask_path)) > 0
    assert result.anomaly_map.shape == mask.shape == (100, 300) == (result.height, result.width)
    assert result.anomaly_map[mask].mean() > result.anomaly_map[~mask].mean()
    assert report["config"]["resize"] == "keep_aspect"
