"""ONNX export of a package (PaDiM, PatchCore with its nearest neighbours and reweighted image score
in the graph, feature reconstruction, FCDD): onnxruntime gives the torch maps and the model's own image
scores within 1e-4 relative, and the thresholds and preprocessing travel in the model's metadata;
the models that cannot be exported are refused with the reason."""

import json

import numpy as np
import pytest

from inference.engine import BenchmarkConfig, registry, run_benchmark
from inference.engine.package import PackageError, load_package, save_package

from .synthetic import SMALL

CFG = dict(image_size=64, batch_size=4, device="cpu", techniques=("iou_curve", "normal_max"))


def _package(train, test, config, out):
    saved = {}
    report = run_benchmark(train, test, config, save_model=lambda m, r: saved.setdefault(
        "path", save_package(m, r, out)))
    return report, saved["path"]


def test_the_registry_says_which_models_export_and_each_has_a_graph_or_a_reason():
    from inference.engine.onnx_export import EXPORTABLE, GRAPHS

    from inference.engine import registry

    assert set(EXPORTABLE) == {"padim", "patchcore", "reconstruction", "fcdd"}
    assert set(GRAPHS) == {registry.get(name).cls for name in EXPORTABLE}
    for name, spec in registry.MODELS.items():
        assert (name in EXPORTABLE) != bool(spec.onnx_refusal), name


@pytest.mark.parametrize("model", ["padim", "patchcore", "reconstruction", "fcdd"])
def test_onnx_matches_the_torch_maps_and_image_scores(model, synthetic, tmp_path):
    import onnx
    import onnxruntime as ort
    from PIL import Image

    from inference.engine.onnx_export import export_onnx
    from inference.engine.package import prepare_image

    train, test = synthetic
    settings = {**SMALL[model], **({"num_neighbors": 3} if model == "patchcore" else {})}
    report, path = _package(train, test, BenchmarkConfig(model=model, **CFG, **settings), tmp_path / model)
    inspector = load_package(path)
    out = export_onnx(inspector, tmp_path / f"{model}.onnx")

    images = np.stack([prepare_image(Image.open(s.image_path), 64)[0] for s in test[:8]])
    torch_maps, torch_scores = inspector.maps_and_scores(images)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    onnx_maps, onnx_scores = session.run(None, {"images": np.ascontiguousarray(images.transpose(0, 3, 1, 2))})
    relative = np.abs(onnx_maps - torch_maps).max() / np.abs(torch_maps).max()
    assert relative <= 1e-4, relative
    np.testing.assert_allclose(onnx_scores, torch_scores, rtol=1e-4)
    if model == "patchcore":  # the reweighted score, not the map maximum, is what the graph returns
        assert np.abs(torch_scores - torch_maps.reshape(len(images), -1).max(1)).max() > 1e-3 * torch_scores.max()
    single_map, single_score = session.run(None, {"images": np.ascontiguousarray(images[:1].transpose(0, 3, 1, 2))})
    assert np.abs(single_map[0] - torch_maps[0]).max() / np.abs(torch_maps[0]).max() <= 1e-4  # any batch size
    assert single_score[0] == pytest.approx(torch_scores[0], rel=1e-4)

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert float(meta["defectbench.image_threshold"]) == report["image_decision"]["threshold"]
    assert meta["defectbench.image_score"] == registry.model_class(model).IMAGE_SCORE
    chosen = report["selection"]["chosen"]
    assert meta["defectbench.pixel_technique"] == chosen
    assert float(meta["defectbench.pixel_threshold"]) == report["techniques"][chosen]["threshold"]
    assert json.loads(meta["defectbench.preprocessing"])["image_size"] == 64
    assert json.loads(meta["defectbench.manifest"])["backbone"]["weights_sha256"]


@pytest.mark.parametrize("model, reason", [("cflow", "float64 log-sum-exp"), ("attribution", "gradient")])
def test_models_that_cannot_be_exported_are_refused_with_the_reason(model, reason, synthetic, tmp_path):
    from inference.engine.onnx_export import export_onnx

    train, test = synthetic
    config = BenchmarkConfig(model=model, layers=(2, 3), pretrained=False, **CFG, **SMALL[model])
    _, path = _package(train, test, config, tmp_path / model)
    with pytest.raises(PackageError, match=f"{model} packages cannot be exported to ONNX: .*{reason}"):
        export_onnx(load_package(path), tmp_path / f"{model}.onnx")


@pytest.mark.parametrize("model", ["patchcore", "reconstruction"])
def test_a_tiles_package_exports_one_graph_for_images_of_any_size(model, tmp_path):
    """The graph holds the package's tiling (scale, tiles, resize, blend): a 500 x 1250 image goes in
    at its own size and its map comes out at that size, as the Inspector's, with the same verdict;
    the metadata says the mode and the tile settings."""
    import onnx
    import onnxruntime as ort

    from inference.engine.onnx_export import export_onnx

    from .synthetic import make_wide_dataset, textured

    train, test = make_wide_dataset(tmp_path / "wide")
    config = BenchmarkConfig(model=model, resize="tiles", tile_size=96, tile_overlap=0.25, **CFG, **SMALL[model])
    report, path = _package(train, test, config, tmp_path / model)
    inspector = load_package(path)
    out = export_onnx(inspector, tmp_path / f"{model}.onnx")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(7)
    tall = textured(rng, 1250, 500)  # width 500, height 1250
    tall[700:760, 180:260] = 20
    small = textured(rng, 70, 90)  # smaller than one tile: edge-padded, the pad cut off again
    for image in (tall, small):
        (expected,) = inspector.inspect([image])
        maps, scores = session.run(None, {"images": np.ascontiguousarray(image.transpose(2, 0, 1)[None])})
        assert maps.shape == (1, *image.shape[:2]) == (1, expected.height, expected.width)
        relative = np.abs(maps[0] - expected.anomaly_map).max() / np.abs(expected.anomaly_map).max()
        assert relative <= 1e-4, relative
        assert scores[0] == pytest.approx(expected.score, rel=1e-4)
        assert (scores[0] >= expected.image_threshold) == expected.defective
    assert inspector.preprocessing.count(tall.shape[:2]) > 20  # many tiles, overlapping on both axes

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    pre = json.loads(meta["defectbench.preprocessing"])
    assert (pre["resize"], pre["tile_size"], pre["tile_overlap"], pre["scale"], pre["image_size"]) == \
        ("tiles", 96, 0.25, 1.0, 64)
    assert "any size" in pre["graph_input"]
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
