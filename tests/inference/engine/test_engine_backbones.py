"""Backbones: EfficientNet-Lite0 weight mapping, offline-only weights, layer selection."""

import pytest
import torch

from inference.engine import backbones
from inference.engine.backbones import Backbone, BackboneWeightsError, map_state_dict_by_position


@pytest.fixture(scope="module")
def lite0_pair():
    import timm

    source = backbones._load_state_dict_file(backbones.lite0_weights_file())
    mapped = backbones.lite0_timm_state_dict()
    with torch.device("meta"):
        target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    return source, mapped, target


def test_lite0_every_key_mapped_with_matching_shape(lite0_pair):
    source, mapped, target = lite0_pair
    assert len(source) == len(target) == len(mapped)
    assert list(mapped) == list(target)
    for (sk, sv), (mk, mv) in zip(source.items(), mapped.items()):
        assert sv.shape == target[mk].shape
        assert torch.equal(sv, mv), (sk, mk)
    # the position mapping pairs layers of the same role
    assert list(source)[0] == "_conv_stem.weight" and list(mapped)[0] == "conv_stem.weight"
    assert list(source)[-1] == "_fc.bias" and list(mapped)[-1] == "classifier.bias"


def test_lite0_pretrained_loads_real_weights(lite0_pair):
    _, mapped, _ = lite0_pair
    bb = Backbone(weights="pretrained", device="cpu")
    assert bb.strides == [4, 8, 16] and bb.channels == [24, 40, 112]
    assert bb.mean == (0.5, 0.5, 0.5) and bb.std == (0.5, 0.5, 0.5)
    own = bb.model.state_dict()
    for k, v in own.items():
        assert torch.equal(v, mapped[k]), k
    # trained BN statistics, not the defaults of a fresh model
    assert not torch.allclose(own["bn1.running_var"], torch.ones_like(own["bn1.running_var"]))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    rnd = Backbone(weights="random", device="cpu")
    for a, b in zip(bb(x), rnd(x)):
        assert a.shape == b.shape
        assert not torch.allclose(a, b)


def test_position_mapping_errors():
    a = {"x": torch.zeros(2), "y": torch.zeros(3)}
    with pytest.raises(BackboneWeightsError, match="2 tensors"):
        map_state_dict_by_position(a, {"p": torch.zeros(2)})
    with pytest.raises(BackboneWeightsError, match="shape"):
        map_state_dict_by_position(a, {"p": torch.zeros(2), "q": torch.zeros(4)})


@pytest.mark.parametrize("name", ["resnet18", "wide_resnet50_2"])
def test_missing_resnet_weights_clear_error(name, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setenv(backbones.WEIGHTS_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(BackboneWeightsError) as exc:
        Backbone(name, device="cpu")
    msg = str(exc.value)
    assert name in msg and str(tmp_path / f"{name}.pth") in msg and "Hugging Face cache" in msg
    assert "never downloaded" in msg


def test_resnet18_local_weights_file(tmp_path, monkeypatch):
    import timm

    ref = timm.create_model("resnet18", pretrained=False)
    torch.nn.init.normal_(ref.conv1.weight)
    torch.save(ref.state_dict(), tmp_path / "resnet18.pth")
    monkeypatch.setenv(backbones.WEIGHTS_DIR_ENV, str(tmp_path))
    bb = Backbone("resnet18", device="cpu")
    assert bb.weights_source == str(tmp_path / "resnet18.pth")
    assert torch.equal(bb.model.state_dict()["conv1.weight"], ref.state_dict()["conv1.weight"])
    assert bb.strides == [4, 8, 16]


def test_layer_selection_and_errors():
    bb = Backbone(layers=("blocks.2", "blocks.4"), weights="random", device="cpu")
    assert bb.strides == [8, 16]
    assert Backbone(layers=(1,), weights="random", device="cpu").strides == [4]
    with pytest.raises(ValueError, match="unknown layer"):
        Backbone(layers=("nope",), weights="random", device="cpu")
    with pytest.raises(ValueError, match="unknown backbone"):
        Backbone("vgg16", weights="random")


def test_lite0_features_equal_the_full_timm_model_without_the_unused_blocks(lite0_pair):
    """The stride-32 blocks after the deepest requested layer are dropped; features are unchanged."""
    import timm

    _, mapped, _ = lite0_pair
    bb = Backbone(weights="pretrained", device="cpu")
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True, out_indices=(1, 2, 3))
    full.load_state_dict({k: mapped[k] for k in full.state_dict()})
    full.eval()
    assert len(bb.model.blocks) == 5 < len(full.blocks) == 7  # blocks.4 (stride 16) is the deepest used
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = full(x)
    for got, want in zip(bb(x), expected, strict=True):
        torch.testing.assert_close(got, want)
    deepest = Backbone(layers=("blocks.6",), weights="random", device="cpu")
    assert len(deepest.model.blocks) == 7
