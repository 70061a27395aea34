"""Every registry model can be deployed: its run's fitted model is saved as a package, loaded with
every check, and inspects the run's test images exactly as the run's report scored them (the
model's own image score and the image verdict per image), the manifest saying how that score is
computed; a stored state that does not fit is refused with the reason."""

import json
import shutil

import pytest
import torch

from inference.engine import BenchmarkConfig, registry, run_benchmark
from inference.engine.package import (PackableModel, PackageError, load_package, packable_models, read_manifest,
                                      save_package, sha256_file)

from .synthetic import SMALL


def _config(variant: str, **overrides) -> BenchmarkConfig:
    settings = dict(model=variant.split("-")[0], image_size=64, pretrained=False, device="cpu", batch_size=4,
                    techniques=("iou_curve", "normal_max"), **SMALL[variant])
    settings.update(overrides)
    return BenchmarkConfig(**settings)


@pytest.fixture(scope="module", params=sorted(SMALL))
def packaged(request, synthetic, tmp_path_factory):
    """(variant, report, package folder) of one small run per model variant, random-weight backbone."""
    train, test = synthetic
    saved = {}
    out = tmp_path_factory.mktemp("packages") / request.param
    report = run_benchmark(train, test, _config(request.param),
                           save_model=lambda model, r: saved.setdefault("path", save_package(model, r, out)))
    return request.param, report, saved["path"]


def test_every_registry_model_is_packable():
    assert packable_models() == tuple(registry.MODELS)
    for name in registry.MODELS:
        cls = registry.model_class(name)
        rule = cls.IMAGE_SCORE
        assert isinstance(rule, str) and rule and "\n" not in rule, name
        assert callable(cls.package_state) and callable(cls.from_state), name


def test_the_package_inspects_every_test_image_as_the_run_reported(packaged, synthetic):
    variant, report, path = packaged
    name = variant.split("-")[0]
    manifest = read_manifest(path)
    assert manifest["model"]["name"] == name
    assert manifest["thresholds"]["image"]["score"] == registry.model_class(name).IMAGE_SCORE

    inspector = load_package(path, image_size=64)
    assert isinstance(inspector.model, PackableModel)
    assert inspector.image_score_rule == registry.model_class(name).IMAGE_SCORE
    path_of = {s.report_key: s.image_path for s in synthetic[1]}
    entries = report["per_image"]
    assert entries and report["image_decision"]["threshold"] is not None
    found = inspector.inspect_files([path_of[e["key"]] for e in entries])
    for entry, result in zip(entries, found):
        assert result.score == pytest.approx(entry["score"], rel=1e-6, abs=1e-9), entry["key"]
        assert result.defective == entry["predicted_anomalous"], entry["key"]
    if name == "patchcore":  # its reweighted score is not the map maximum the packages used to report
        assert any(abs(r.score - float(r.anomaly_map.max())) > 1e-3 * abs(r.score) for r in found)


def _repackaged(path, tmp_path, change):
    """A copy of the package whose ``model.safetensors`` is ``change(state)``, its hash updated
    (so only the state's fit to the settings is tested)."""
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "edited"
    shutil.copytree(path, copy)
    state = change(load_file(str(copy / "model.safetensors")))
    save_file(state, str(copy / "model.safetensors"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["weights"]["sha256"] = sha256_file(copy / "model.safetensors")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


# One tensor of each new packable model cut to a shape its settings cannot give, and what the refusal says.
MISFITS = {
    "patchcore": ("bank", "memory bank has shape"),
    "reconstruction": ("net.0.weight", "autoencoder does not fit these settings"),
    "attribution": ("mu.weight", "VAE \\(for a 8x8 feature grid\\) does not fit"),
}


@pytest.mark.parametrize("packaged", sorted(MISFITS), indirect=True)
def test_a_state_that_does_not_fit_its_settings_is_refused_with_the_reason(packaged, tmp_path):
    name, _, path = packaged
    tensor, message = MISFITS[name]
    key = next(k for k in read_manifest(path)["weights"]["tensors"] if k == tensor or k.endswith("." + tensor))
    misfit = _repackaged(path, tmp_path, lambda state: {**state, key: state[key][..., :-1].contiguous()})
    with pytest.raises(PackageError, match=message):
        load_package(misfit)

    # Another model's state is not taken for this one's.
    cls = registry.model_class(name)
    with pytest.raises(ValueError, match="not a fitted"):
        cls.from_state({"mean": torch.zeros(3), "inv_cov": torch.zeros(3)}, _config(name),
                       load_package(path).model.backbone)
