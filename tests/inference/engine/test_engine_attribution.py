"""The attribution family's maps on tiny synthetic images (random-weight backbone, a few seconds):
every VAE attribution target and FCDD give a finite map of the image's size that is higher on an
obvious defect than around it; the targets are one vocabulary and the default is a genuine
attribution (bench/attribution_study.py measured the choice; README, Models)."""

import numpy as np
import pytest
import torch

from inference.engine import BenchmarkConfig, registry
from inference.engine.attribution import TARGETS, VaeAttention
from inference.engine.backbones import Backbone
from inference.engine.data import load_masks, make_loader
from inference.engine.fcdd import Fcdd, fcdd_loss

SIZE = 64


def test_the_targets_are_one_vocabulary_and_the_default_is_a_genuine_attribution(backbone):
    setting = registry.SETTINGS["attribution_target"]
    assert setting.choices == TARGETS == tuple(registry.ATTRIBUTION_TARGETS)
    assert set(registry.ATTRIBUTION_BASELINES) <= set(TARGETS)
    default = BenchmarkConfig().attribution_target
    assert default == setting.default and default in TARGETS
    assert default not in registry.ATTRIBUTION_BASELINES
    for name, what in registry.ATTRIBUTION_TARGETS.items():
        assert f"{name} = {what}" in setting.help
    with pytest.raises(ValueError, match="attribution_target must be one of elbo, latent"):
        VaeAttention(backbone, target="gradient")


def test_fcdd_is_a_position_free_model_of_the_attribution_family():
    spec = registry.get("fcdd")
    assert spec.family == "attribution" and not spec.position_specific and not spec.onnx_refusal


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return Backbone(weights="random", device="cpu")


@pytest.fixture(scope="module")
def defects(synthetic):
    """The synthetic test folder's defective images (a dark disc or a bright bar) and their masks."""
    _, test = synthetic
    bad = [s for s in test if s.is_anomalous]
    images, _ = next(iter(make_loader(bad, SIZE, len(bad))))
    return images, load_masks(bad, SIZE)


@pytest.fixture(scope="module")
def vae(synthetic, backbone):
    train, _ = synthetic
    model = VaeAttention(backbone, latent_dim=4, epochs=3, image_size=SIZE)
    model.fit(make_loader(train, SIZE, 4))
    return model


def _defect_above_background(maps: np.ndarray, masks: np.ndarray) -> float:
    """Share of the defective images whose map is higher on the defect than off it, on average."""
    return float(np.mean([m[g].mean() > m[~g].mean() for m, g in zip(maps, masks)]))


@pytest.mark.parametrize("target", [t for t in TARGETS if t != "latent"])
def test_each_target_maps_the_defect_above_its_surroundings(target, vae, defects):
    images, masks = defects
    vae.target = target
    maps, scores = vae.anomaly_maps(images)
    assert maps.shape == (len(images), SIZE, SIZE) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and np.isfinite(scores).all()
    np.testing.assert_allclose(scores, maps.reshape(len(maps), -1).max(1), rtol=1e-6)
    assert _defect_above_background(maps, masks) >= 0.75, target


def test_the_latent_deviation_target_needs_the_training_latent_mean(vae, defects):
    images, _ = defects
    assert vae.latent_mean is not None and tuple(vae.latent_mean.shape) == (4,)
    state = vae.state()
    tensors = {k: v for k, v in state["tensors"].items() if k != "latent_mean"}
    state = {"tensors": tensors, "settings": {**state["settings"], "attribution_target": "latent_deviation"}}
    with pytest.raises(ValueError, match="no latent_mean tensor"):
        VaeAttention.load(state, vae.backbone)
    state["settings"]["attribution_target"] = "elbo"  # older packages (no latent mean) still load for the others
    assert VaeAttention.load(state, vae.backbone).anomaly_maps(images[:1])[0].shape == (1, SIZE, SIZE)


def test_fcdd_maps_the_defect_above_its_surroundings(synthetic, backbone, defects):
    train, _ = synthetic
    images, masks = defects
    model = Fcdd(backbone, epochs=3, image_size=SIZE)
    steps = []
    model.fit(make_loader(train, SIZE, 4), step=steps.append)
    assert steps[-1] == 1.0 and len(model.history) == 3
    maps, scores = model.anomaly_maps(images)
    assert maps.shape == (len(images), SIZE, SIZE) and np.isfinite(maps).all() and (maps >= 0).all()
    assert _defect_above_background(maps, masks) >= 0.75
    again = Fcdd.load(model.state(), backbone).anomaly_maps(images)
    np.testing.assert_array_equal(again[0], maps)


def test_fcdd_loss_pulls_normal_cells_down_and_pushes_anomalous_ones_up():
    a = torch.full((2, 1, 4, 4), 0.5, requires_grad=True)
    y = torch.zeros(2, 1, 4, 4)
    y[1, 0, :2, :2] = 1.0  # the second image's top-left cells are anomalous
    fcdd_loss(a, y).backward()
    grad = a.grad[:, 0]
    assert (grad[0] > 0).all()  # normal image: lower A everywhere
    assert (grad[1, :2, :2] < 0).all() and (grad[1, 2:, 2:] > 0).all()
