"""PaDiM: streaming statistics equal brute force; Mahalanobis; blur."""

import numpy as np
import pytest
import torch

from inference.engine.backbones import Backbone
from inference.engine.common import gaussian_blur, gaussian_kernel1d
from inference.engine.data import make_loader
from inference.engine.padim import REGULARISATION, GaussianAccumulator, Padim, unpack_symmetric


@pytest.mark.parametrize("offset,scale", [(10.0, 3.0), (1000.0, 0.5)])
def test_streaming_mean_and_covariance_equal_float64_brute_force(offset, scale):
    """float32 shifted sums give the float64 statistics of the same data to ~1e-6 relative,
    even far from the origin (a naive float32 sum of squares would lose most digits at 1000)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(23, 7, 5, generator=g, dtype=torch.float64) * scale + offset).float()  # (N, P, d)
    acc = GaussianAccumulator(7, 5, chunk=3)  # chunks that do not divide P
    for s in range(0, 23, 4):  # uneven batches
        acc.update(x[s : s + 4])
    xd = x.double()
    torch.testing.assert_close(acc.mean(), xd.mean(0), rtol=1e-7, atol=0)
    cov = acc.covariance()
    for p in range(7):
        torch.testing.assert_close(cov[p], torch.cov(xd[:, p].T), rtol=1e-5, atol=1e-6 * scale**2)


def test_inverses_replace_the_sums_in_the_same_buffer():
    x = torch.randn(30, 6, 4, generator=torch.Generator().manual_seed(1))
    acc = GaussianAccumulator(6, 4, chunk=4)
    acc.update(x)
    cov = acc.covariance()
    buffer = acc.sum_outer
    packed = acc.invert_in_place(REGULARISATION)
    assert packed.data_ptr() == buffer.data_ptr() and packed.dtype == torch.float32
    inv = unpack_symmetric(packed, 4, acc.gather_idx)
    expected = torch.linalg.inv(cov + REGULARISATION * torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(inv.double(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="already"):
        acc.update(x)


def test_padim_fit_inverse_and_mahalanobis(synthetic):
    train, _ = synthetic
    bb = Backbone(weights="random", device="cpu")
    model = Padim(bb, n_features=20, seed=1, image_size=64)
    loader = make_loader(train, 64, batch_size=3)
    model.fit(loader)
    assert len(model.channel_indices) == 20
    # brute force from all embeddings at once
    emb = torch.cat([model.embed(x) for x, _ in loader]).double()  # (N, P, d)
    n, P, d = emb.shape
    mean = emb.mean(0)
    torch.testing.assert_close(model.mean.double(), mean, rtol=1e-5, atol=1e-5)
    for p in (0, P // 2, P - 1):
        cov = torch.cov(emb[:, p].T) + REGULARISATION * torch.eye(d, dtype=torch.float64)
        inv = torch.linalg.inv(cov)
        torch.testing.assert_close(model.inverse_covariance(p, p + 1)[0].double(), inv, rtol=2e-3, atol=2e-3)
        delta = emb[0, p] - mean[p]
        dist = model.mahalanobis(emb[:1].float())[0, p].double()
        torch.testing.assert_close(dist, torch.sqrt(delta @ inv @ delta), rtol=1e-3, atol=1e-3)
    assert model.memory_bytes() == P * d * 4 + P * d * (d + 1) // 2 * 4
    x, _ = next(iter(loader))
    maps = model.predict(x)
    assert maps.shape == (3, 64, 64) and maps.dtype == np.float32
    # an image's map does not depend on its batch mates
    np.testing.assert_allclose(model.predict(x[:1])[0], maps[0], rtol=1e-4, atol=1e-4)


def test_seeded_channel_subset():
    bb = Backbone(weights="random", device="cpu")
    a = Padim(bb, n_features=30, seed=5).channel_indices
    assert a == Padim(bb, n_features=30, seed=5).channel_indices
    assert a != Padim(bb, n_features=30, seed=6).channel_indices
    assert len(Padim(bb, n_features=10_000).channel_indices) == sum(bb.channels)


def test_gaussian_blur_kernel():
    k = gaussian_kernel1d(4.0)
    assert len(k) == 33 and abs(float(k.sum()) - 1) < 1e-6
    const = torch.full((1, 1, 40, 40), 3.0)
    torch.testing.assert_close(gaussian_blur(const, 4.0), const)
    impulse = torch.zeros(1, 1, 64, 64)
    impulse[0, 0, 32, 32] = 1
    out = gaussian_blur(impulse, 4.0)
    assert abs(float(out.sum()) - 1) < 1e-5 and out[0, 0, 32, 32] == out.max()
