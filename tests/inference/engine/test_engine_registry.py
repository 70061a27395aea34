"""The model registry and the protocol every registered model implements: fit, batch-independent
maps, and state/load giving identical maps (what a later deploy step relies on)."""

import io

import numpy as np
import pytest
import torch

from inference.engine import BenchmarkConfig, registry
from inference.engine.backbones import BACKBONES, Backbone
from inference.engine.data import make_loader

from .synthetic import SMALL


def test_every_setting_is_an_engine_setting_with_its_default_inside_the_bounds():
    config = BenchmarkConfig()
    for setting in registry.SETTINGS.values():
        assert hasattr(config, setting.name)
        assert setting.help and len(setting.help.splitlines()) == 1
        assert setting.clean(setting.default) == setting.default, setting.name
    for spec in registry.MODELS.values():
        assert spec.family in registry.FAMILIES
        assert set(spec.settings) <= set(registry.SETTINGS)
    assert registry.DEFAULT_MODEL in registry.MODELS
    assert tuple(BACKBONES) == registry.BACKBONE_NAMES


def test_settings_are_checked_with_a_readable_message():
    with pytest.raises(ValueError, match="image_size must lie between 32 and 1024"):
        registry.SETTINGS["image_size"].clean(4)
    with pytest.raises(ValueError, match="Device must be one of"):
        registry.SETTINGS["device"].clean("tpu")
    assert registry.SETTINGS["pretrained"].clean("off") is False
    for bad in (256.7, "256.7", True):
        with pytest.raises(ValueError, match="image_size must be a whole number"):
            registry.SETTINGS["image_size"].clean(bad)
    assert registry.SETTINGS["image_size"].clean(256.0) == 256
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        registry.get("nope")


def test_small_settings_cover_every_model():
    assert {k.split("-")[0] for k in SMALL} == set(registry.MODELS)


@pytest.fixture(scope="module", params=sorted(SMALL))
def fitted(request, synthetic):
    variant = request.param
    name = variant.split("-")[0]
    train, test = synthetic
    spec = registry.get(name)
    config = BenchmarkConfig(model=name, image_size=64, pretrained=False, device="cpu", batch_size=4,
                             **SMALL[variant])
    torch.manual_seed(0)
    backbone = Backbone(weights="random", layers=spec.default_layers, device="cpu")
    model = registry.build(config, backbone)
    val = make_loader([s for s in test if not s.is_anomalous][:2], 64, 4) if spec.uses_validation else None
    fractions = []
    model.fit(make_loader(train, 64, 4), val, step=fractions.append)
    assert fractions and fractions[-1] == pytest.approx(1.0) and fractions == sorted(fractions)
    x, _ = next(iter(make_loader(test, 64, len(test))))
    return name, model, backbone, x


def test_maps_are_batch_independent_and_scores_rank_the_defects(fitted):
    name, model, _, x = fitted
    maps, scores = model.anomaly_maps(x)
    assert maps.shape == (len(x), 64, 64) and maps.dtype == np.float32 and np.isfinite(maps).all()
    assert scores.shape == (len(x),) and np.isfinite(scores).all()
    alone, alone_score = model.anomaly_maps(x[5:6])
    np.testing.assert_allclose(alone[0], maps[5], rtol=1e-5, atol=1e-5)
    assert alone_score[0] == pytest.approx(scores[5], rel=1e-5)


def test_state_is_tensors_and_json_settings_and_load_gives_identical_maps(fitted):
    import json

    name, model, backbone, x = fitted
    state = model.state()
    assert set(state) == {"tensors", "settings"}
    assert all(isinstance(t, torch.Tensor) for t in state["tensors"].values())
    settings = json.loads(json.dumps(state["settings"]))  # JSON-able, and survives the round trip
    assert settings["model"] == name
    buffer = io.BytesIO()
    torch.save(state["tensors"], buffer)
    buffer.seek(0)
    tensors = torch.load(buffer, weights_only=True)
    loaded = registry.load({"tensors": tensors, "settings": settings}, backbone)
    a, sa = model.anomaly_maps(x)
    b, sb = loaded.anomaly_maps(x)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)


def test_load_refuses_another_backbone(fitted):
    name, model, _, _ = fitted
    other = Backbone(weights="random", layers=(1,), device="cpu")
    with pytest.raises(ValueError, match="fitted on"):
        registry.load(model.state(), other)
