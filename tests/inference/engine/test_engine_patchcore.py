"""PatchCore: the greedy coreset, the chunked nearest-neighbour search, position-free scoring."""

import numpy as np
import pytest
import torch

from inference.engine.patchcore import greedy_coreset, locally_aware_features, nearest


def _brute_force_coreset(x: torch.Tensor, n: int, first: int) -> list[int]:
    chosen = [first]
    for _ in range(n - 1):
        d = torch.cdist(x.double(), x[chosen].double()).min(1).values
        chosen.append(int(torch.argmax(d)))
    return chosen


def test_greedy_coreset_is_the_k_center_selection_and_seeded():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    idx = greedy_coreset(x, 20, projection_dim=None, seed=3, chunk=64)
    assert idx.tolist() == _brute_force_coreset(x, 20, int(idx[0]))
    assert torch.equal(idx, greedy_coreset(x, 20, None, seed=3))
    assert not torch.equal(idx, greedy_coreset(x, 20, None, seed=4))
    # on a random projection the centres still find every one of 10 separated clusters
    g = torch.Generator().manual_seed(1)
    centres = 20 * torch.randn(10, 32, generator=g)
    clustered = (centres.repeat_interleave(100, 0) + torch.randn(1000, 32, generator=g))
    proj = greedy_coreset(clustered, 10, projection_dim=8, seed=3)
    assert sorted((proj // 100).tolist()) == list(range(10))


def test_chunked_nearest_neighbours_equal_brute_force():
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(1000, 16, generator=g), torch.randn(50, 16, generator=g)
    d, i = nearest(queries, bank, (bank * bank).sum(1), k=5, chunk=128)
    full = torch.cdist(queries.double(), bank.double())
    ref_d, ref_i = full.topk(5, largest=False)
    assert torch.equal(i, ref_i)
    np.testing.assert_allclose(d.numpy(), ref_d.numpy(), rtol=1e-4, atol=1e-4)


def test_locally_aware_features_average_each_3x3_neighbourhood():
    a = torch.zeros(1, 1, 8, 8)
    a[0, 0, 4, 4] = 9.0
    b = torch.ones(1, 2, 4, 4)
    f = locally_aware_features([a, b])
    assert f.shape == (1, 3, 8, 8)
    assert f[0, 0, 3:6, 3:6].eq(1.0).all() and f[0, 0, 0, 0] == 0
    assert f[0, 1:].eq(1.0).all()


def test_position_free_a_shifted_normal_image_stays_normal(synthetic):
    """PatchCore compares a patch with every normal patch, wherever it was: a normal texture moved
    by a quarter of the image scores like the normal images, while a defect still stands out."""
    from inference.engine import BenchmarkConfig, registry
    from inference.engine.backbones import Backbone
    from inference.engine.data import make_loader

    train, test = synthetic
    torch.manual_seed(0)
    bb = Backbone(weights="random", layers=(2, 3), device="cpu")
    model = registry.build(BenchmarkConfig(model="patchcore", image_size=64, coreset_ratio=0.5), bb)
    model.fit(make_loader(train, 64, 4))
    x, _ = next(iter(make_loader(test, 64, len(test))))
    _, scores = model.anomaly_maps(x)
    good = x[[i for i, s in enumerate(test) if not s.is_anomalous]]
    shifted = torch.roll(good, shifts=(16, 16), dims=(2, 3))
    _, shifted_scores = model.anomaly_maps(shifted)
    anomalous = np.array([s.is_anomalous for s in test])
    assert shifted_scores.max() < scores[anomalous].min()


def _fitted_patchcore(synthetic, **settings):
    from inference.engine import BenchmarkConfig, registry
    from inference.engine.backbones import Backbone
    from inference.engine.data import make_loader

    train, test = synthetic
    torch.manual_seed(0)
    bb = Backbone(weights="random", layers=(2, 3), device="cpu")
    model = registry.build(BenchmarkConfig(model="patchcore", image_size=64, **settings), bb)
    model.fit(make_loader(train, 64, 4))
    x, _ = next(iter(make_loader(test, 64, len(test))))
    return model, x, np.array([s.is_anomalous for s in test])


def test_one_neighbour_scores_by_the_nearest_distance_not_zero(synthetic):
    """k = 1: the softmax over one distance is 1, so the paper's reweighting would give every image
    score 0; the score is the largest patch distance itself, and defects still outrank normals."""
    model, x, anomalous = _fitted_patchcore(synthetic, coreset_ratio=0.5, num_neighbors=1)
    _, scores = model.anomaly_maps(x)
    emb = model.embed(x[:1])[0]
    dist, _ = nearest(emb, model.bank, model.bank_sq, k=1)
    assert scores[0] == pytest.approx(float(dist.max()), rel=1e-6)
    assert (scores > 0).all() and scores[anomalous].min() > scores[~anomalous].max()


def test_coreset_ratio_one_keeps_every_patch_without_running_the_selection(synthetic, monkeypatch):
    import inference.engine.patchcore as patchcore

    def no_selection(*args, **kwargs):
        raise AssertionError("the greedy selection ran although every patch is kept")

    monkeypatch.setattr(patchcore, "greedy_coreset", no_selection)
    model, _, _ = _fitted_patchcore(synthetic, coreset_ratio=1.0)
    assert model.bank.shape[0] == model.n_patches > 0


def test_settings_that_cannot_work_are_refused():
    from inference.engine.patchcore import PatchCore

    for bad in (dict(num_neighbors=0), dict(coreset_ratio=0.0), dict(projection_dim=-1)):
        with pytest.raises(ValueError, match="PatchCore's"):
            PatchCore(backbone=None, **bad)


def test_patchcore_runs_end_to_end_on_a_user_supplied_dinov2_file(synthetic, tmp_path):
    """DINOv2 ViT-S/14 from the user's own file (random weights saved here): a whole benchmark."""
    import timm

    from inference.engine import BenchmarkConfig, run_benchmark

    path = tmp_path / "dinov2.pth"
    torch.save(timm.create_model("vit_small_patch14_dinov2", pretrained=False).state_dict(), path)
    train, test = synthetic
    report = run_benchmark(train, test, BenchmarkConfig(
        model="patchcore", backbone="vit_small_patch14_dinov2", weights_path=str(path), image_size=56,
        batch_size=4, device="cpu", coreset_ratio=0.5, techniques=("iou_curve", "normal_fpr")))
    assert report["config"]["backbone"] == "vit_small_patch14_dinov2"
    assert report["whole_folder"]["pixel_auroc"] is not None
    assert report["model_info"]["weights"] == str(path)
