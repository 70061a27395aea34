"""ONNX export of a PaDiM package: onnxruntime gives the torch maps within 1e-4 relative, and the
thresholds and preprocessing travel in the model's metadata."""

import json

import numpy as np
import pytest

from inference.engine import BenchmarkConfig, run_benchmark
from inference.engine.package import PackageError, load_package, save_package

CFG = dict(image_size=64, n_features=20, batch_size=4, device="cpu", techniques=("iou_curve", "normal_max"))


def _package(train, test, config, out):
    saved = {}
    report = run_benchmark(train, test, config, save_model=lambda m, r: saved.setdefault(
        "path", save_package(m, r, out)))
    return report, saved["path"]


def test_padim_onnx_matches_the_torch_maps(synthetic, tmp_path):
    import onnx
    import onnxruntime as ort

    from inference.engine.onnx_export import export_onnx
    from inference.engine.package import prepare_image

    train, test = synthetic
    report, path = _package(train, test, BenchmarkConfig(**CFG), tmp_path / "padim")
    inspector = load_package(path)
    out = export_onnx(inspector, tmp_path / "padim.onnx")

    from PIL import Image

    images = np.stack([prepare_image(Image.open(s.image_path), 64)[0] for s in test[:6]])
    torch_maps = inspector.maps(images)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    onnx_maps, onnx_scores = session.run(None, {"images": np.ascontiguousarray(images.transpose(0, 3, 1, 2))})
    relative = np.abs(onnx_maps - torch_maps).max() / np.abs(torch_maps).max()
    assert relative <= 1e-4, relative
    np.testing.assert_allclose(onnx_scores, torch_maps.reshape(len(images), -1).max(1), rtol=1e-4)
    single, _ = session.run(None, {"images": np.ascontiguousarray(images[:1].transpose(0, 3, 1, 2))})
    assert np.abs(single[0] - torch_maps[0]).max() / np.abs(torch_maps[0]).max() <= 1e-4  # any batch size

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert float(meta["defectbench.image_threshold"]) == report["image_decision"]["threshold"]
    chosen = report["selection"]["chosen"]
    assert meta["defectbench.pixel_technique"] == chosen
    assert float(meta["defectbench.pixel_threshold"]) == report["techniques"][chosen]["threshold"]
    assert json.loads(meta["defectbench.preprocessing"])["image_size"] == 64
    assert json.loads(meta["defectbench.manifest"])["backbone"]["weights_sha256"]


def test_cflow_export_is_refused_with_the_reason(synthetic, tmp_path):
    from inference.engine.onnx_export import export_onnx

    train, test = synthetic
    config = BenchmarkConfig(model="cflow", epochs=1, coupling_blocks=2, condition_vector=16, fiber_batch_size=512,
                             layers=(2, 3), pretrained=False, **CFG)
    _, path = _package(train, test, config, tmp_path / "cflow")
    with pytest.raises(PackageError, match="cflow packages cannot be exported to ONNX"):
        export_onnx(load_package(path), tmp_path / "cflow.onnx")
