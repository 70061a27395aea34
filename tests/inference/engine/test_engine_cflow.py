"""CFLOW: positional encoding, training on good images, batch-independent maps."""

import math

import numpy as np
import pytest
import torch

from inference.engine import BenchmarkConfig
from inference.engine.backbones import Backbone
from inference.engine.cflow import Cflow, positional_encoding_2d
from inference.engine.data import make_loader


def test_positional_encoding():
    pe = positional_encoding_2d(8, 3, 5)
    assert pe.shape == (8, 3, 5)
    cols = torch.arange(5.0)
    rows = torch.arange(3.0)
    torch.testing.assert_close(pe[0], torch.sin(cols).expand(3, 5))
    torch.testing.assert_close(pe[1], torch.cos(cols).expand(3, 5))
    torch.testing.assert_close(pe[2], torch.sin(cols / 100).expand(3, 5))
    torch.testing.assert_close(pe[4], torch.sin(rows).unsqueeze(1).expand(3, 5))
    with pytest.raises(ValueError):
        positional_encoding_2d(6, 2, 2)


@pytest.fixture(scope="module")
def fitted(synthetic):
    train, test = synthetic
    cfg = BenchmarkConfig(model="cflow", image_size=64, epochs=2, coupling_blocks=2, condition_vector=16,
                          fiber_batch_size=256, batch_size=4, pretrained=False, early_stopping_patience=1,
                          layers=(2, 3))
    torch.manual_seed(0)
    bb = Backbone(weights="random", layers=cfg.layers, device="cpu")
    model = Cflow(bb, cfg)
    val = [s for s in test if s.defect_type == "good"][:2]
    model.fit(make_loader(train, 64, 4), make_loader(val, 64, 4))
    return model, test, bb


def test_training_history_and_validation_early_stopping(fitted):
    model, _, _ = fitted
    info = model.describe()
    assert 1 <= info["epochs_run"] <= 2 and info["best_epoch"] >= 1
    assert all("val_loss" in h and math.isfinite(h["train_loss"]) for h in model.history)
    assert len(model.reference_logp) == 2 and all(math.isfinite(v) for v in model.reference_logp)


def test_map_does_not_depend_on_batch_mates(fitted):
    model, test, bb = fitted
    x, _ = next(iter(make_loader(test[:5], 64, 5)))
    together = model.predict(x)
    alone = model.predict(x[2:3])[0]
    with_others = model.predict(torch.cat([x[4:5], x[2:3], x[0:1]]))[1]
    assert together.shape == (5, 64, 64) and np.isfinite(together).all()
    # the decoders score each image on its own: bit-identical; the CNN backbone may pick a
    # different convolution algorithm for another batch size, hence the float32-rounding tolerance
    np.testing.assert_allclose(alone, together[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(alone, with_others, rtol=1e-5, atol=1e-5)
    assert not np.allclose(together[0], together[2])  # images do differ
