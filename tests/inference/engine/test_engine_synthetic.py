"""Synthetic defects: masks of changed pixels only, log-uniform sizes, three sources, no other image."""

import numpy as np

from inference.engine import synthetic


def _textured(n=6, size=64, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, (n, size, size, 3)).astype(np.uint8)
    return base


def test_seeded_and_the_mask_is_exactly_the_changed_pixels():
    images = _textured()
    a, masks, source, kinds = synthetic.synthetic_defects(images, seed=1, per_image=2)
    b, _, _, _ = synthetic.synthetic_defects(images, seed=1, per_image=2)
    assert np.array_equal(a, b) and len(a) == 12 and list(source) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    for img, mask, s in zip(a, masks, source):
        assert mask.sum() >= synthetic.MIN_PIXELS
        assert np.array_equal(img[~mask], images[s][~mask])  # nothing outside the mask changed
        moved = np.abs(img.astype(int) - images[s].astype(int)).max(axis=-1)
        assert (moved[mask] > synthetic.CHANGE_TOLERANCE).all()  # every masked pixel visibly changed
    assert set(kinds) <= set(synthetic.KINDS)


def test_background_pasted_on_identical_background_is_not_a_defect():
    """A flat image: a moved patch of it changes nothing, so no pixel may be labelled a defect
    from a patch that did not change (the old whole-rectangle masks labelled all of it)."""
    flat = np.full((1, 48, 48, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    made = synthetic._patch(flat[0], rng)
    made = np.clip(np.rint(made), 0, 255).astype(np.uint8)
    mask = synthetic.changed_pixels(flat[0], made)
    assert np.array_equal(mask, (np.abs(made.astype(int) - 128) > synthetic.CHANGE_TOLERANCE).any(-1))


def test_sizes_span_tiny_to_large_log_uniformly_and_every_source_appears():
    images = _textured(n=40, size=96, seed=2)
    _, masks, _, kinds = synthetic.synthetic_defects(images, seed=0, per_image=3)
    shares = masks.reshape(len(masks), -1).mean(axis=1)
    assert shares.min() < 2e-3 and shares.max() > 2e-2  # tiny pits and large regions both
    logs = np.log10(shares)
    assert np.ptp(logs) > 1.5  # spread over more than an order and a half of magnitude
    assert set(kinds) == set(synthetic.KINDS)


def test_each_defect_is_made_from_its_own_image_only():
    """No pixel from another image: a defect in image 0 uses only values image 0 could give it."""
    images = np.zeros((2, 32, 32, 3), np.uint8)
    images[0] = 50
    images[1] = 250  # a donor from image 1 would bring values near 250 into image 0
    out, masks, source, kinds = synthetic.synthetic_defects(images, seed=3, per_image=10)
    for img, mask, s, kind in zip(out, masks, source, kinds):
        if s == 0 and kind == "patch":
            assert img[mask].max() <= 70 if mask.any() else True


def test_perlin_noise_is_smooth_and_bounded():
    noise = synthetic.perlin((64, 64), 4, np.random.default_rng(0))
    assert noise.shape == (64, 64) and np.abs(noise).max() <= 1.5
    assert np.abs(np.diff(noise, axis=0)).max() < 0.3  # neighbouring pixels differ little
