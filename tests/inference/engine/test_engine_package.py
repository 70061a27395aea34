"""Model packages: a run's fitted model saved, reloaded with every check, and inspecting new images."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from inference.engine import BenchmarkConfig, run_benchmark
from inference.engine.package import PackageError, load_package, read_manifest, save_package

CFG = dict(image_size=64, n_features=20, batch_size=4, device="cpu", techniques=("iou_curve", "f1", "normal_max"))


def _run_and_package(train, test, config, out):
    saved = {}

    def save(model, report):
        saved["path"] = save_package(model, report, out, source={"run": 7, "product": "synthetic"})

    report = run_benchmark(train, test, config, save_model=save)
    return report, saved["path"]


@pytest.fixture(scope="module")
def padim_package(synthetic, tmp_path_factory):
    """PaDiM on the real EfficientNet-Lite0 weights (so the backbone check has something to compare)."""
    train, test = synthetic
    return _run_and_package(train, test, BenchmarkConfig(**CFG), tmp_path_factory.mktemp("pkg") / "padim")


def _report_images(report, test):
    path_of = {s.report_key: s.image_path for s in test}
    return [(path_of[e["key"]], e) for e in report["per_image"]]


def test_padim_package_reproduces_the_runs_scores_and_verdicts(padim_package, synthetic):
    report, path = padim_package
    manifest = read_manifest(path)
    assert manifest["model"]["name"] == "padim" and manifest["source"] == {"run": 7, "product": "synthetic"}
    assert manifest["preprocessing"]["image_size"] == 64
    assert manifest["thresholds"]["image"]["value"] == report["image_decision"]["threshold"]
    assert manifest["thresholds"]["pixel_technique"] == report["selection"]["chosen"]
    for name, result in report["techniques"].items():
        if result["threshold"] is not None:
            assert manifest["thresholds"]["pixel"][name]["value"] == result["threshold"]
    assert len(manifest["backbone"]["weights_sha256"]) == 64 and "lite0" in manifest["backbone"]["weights_source"].lower()

    inspector = load_package(path, image_size=64)
    rows = _report_images(report, synthetic[1])
    found = inspector.inspect_files([p for p, _ in rows])
    for (p, entry), result in zip(rows, found):
        assert result.score == pytest.approx(entry["score"], rel=1e-5)
        assert result.defective == entry["predicted_anomalous"]
        assert result.anomaly_map.shape == (64, 64)


def test_inspecting_arrays_of_another_size_gives_boxes_in_that_image(padim_package, synthetic):
    _, path = padim_package
    inspector = load_package(path)
    anomalous = next(s for s in synthetic[1] if s.is_anomalous)
    big = np.asarray(Image.open(anomalous.image_path).convert("RGB").resize((160, 96)))
    (result,) = inspector.inspect([big], names=["big"], technique="normal_max")
    assert (result.width, result.height) == (160, 96) and result.technique == "normal_max"
    assert result.defect_area_fraction == pytest.approx(float(result.predicted_mask.mean()))
    for c in result.components:
        x0, y0, x1, y1 = c.bbox
        assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 96
        assert c.peak >= result.pixel_threshold
    assert sum(c.area_fraction for c in result.components) == pytest.approx(result.defect_area_fraction)
    with pytest.raises(PackageError, match="no 'roc' threshold"):
        inspector.inspect([big], technique="roc")


def test_a_package_is_refused_under_another_image_size_or_backbone_weights(padim_package, tmp_path):
    import torch

    from inference.engine.backbones import lite0_timm_state_dict

    _, path = padim_package
    with pytest.raises(PackageError, match="fitted on 64 px images; it cannot inspect at 128 px"):
        load_package(path, image_size=128)

    weights = lite0_timm_state_dict()  # ordered: the loader maps tensors by position
    weights["conv_stem.weight"] = weights["conv_stem.weight"] + 0.01
    other = tmp_path / "other-lite0.pth"
    torch.save(weights, other)
    with pytest.raises(PackageError, match="backbone weights differ"):
        load_package(path, weights_path=str(other))

    # A manifest edited to another image size: the statistics' feature grid gives it away.
    edited = tmp_path / "edited"
    shutil.copytree(path, edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["preprocessing"]["image_size"] = manifest["model"]["settings"]["image_size"] = 96
    (edited / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="feature grid"):
        load_package(edited)

    # Changed weights file.
    damaged = tmp_path / "damaged"
    shutil.copytree(path, damaged)
    with open(damaged / "model.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(PackageError, match="changed or damaged"):
        load_package(damaged)

    with pytest.raises(PackageError, match="not a model package"):
        load_package(tmp_path)


def test_cflow_package_round_trip_with_a_random_backbone(synthetic, tmp_path):
    train, test = synthetic
    config = BenchmarkConfig(model="cflow", epochs=1, coupling_blocks=2, condition_vector=16, fiber_batch_size=512,
                             layers=(2, 3), pretrained=False, **CFG)
    report, path = _run_and_package(train, test, config, tmp_path / "cflow")
    assert (path / "backbone.safetensors").is_file()
    inspector = load_package(path)
    rows = _report_images(report, test)
    found = inspector.inspect_files([p for p, _ in rows])
    for (_, entry), result in zip(rows, found):
        assert result.score == pytest.approx(entry["score"], rel=1e-5)
        assert result.defective == entry["predicted_anomalous"]
