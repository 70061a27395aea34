"""Synthetic defect images for the engine tests (written to a temporary folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from inference.engine import Sample

# Small, fast settings per model for 64 px synthetic images (every registered model must appear;
# "name-variant" keys cover a second setting of one model).
SMALL = {
    "padim": dict(n_features=20),
    "patchcore": dict(coreset_ratio=0.1, projection_dim=16),
    "reconstruction": dict(epochs=2, latent_dim=8),
    "attribution": dict(epochs=2, latent_dim=4),
    "attribution-latent": dict(epochs=2, latent_dim=4, attribution_target="latent"),
    "attribution-latent_deviation": dict(epochs=2, latent_dim=4, attribution_target="latent_deviation"),
    "fcdd": dict(epochs=2),
    "cflow": dict(epochs=1, coupling_blocks=2, condition_vector=16, fiber_batch_size=256),
}


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 0.5 + 0.15 * np.sin(6 * np.pi * xx) * np.cos(4 * np.pi * yy)
    img = np.stack([base, base * 0.9, base * 0.8], axis=-1) + rng.normal(0, 0.02, (size, size, 3))
    return np.clip(img, 0, 1)


def make_dataset(root: Path, size: int = 64, n_train: int = 10, n_good: int = 4, n_per_defect: int = 4,
                 seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Train: good images. Test: good + 'spot' (dark disc, surface) + 'bar' (bright bar, structural)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "mask").mkdir(parents=True, exist_ok=True)

    def save(name: str, img: np.ndarray, mask: np.ndarray | None) -> tuple[str, str | None]:
        p = root / "img" / f"{name}.png"
        Image.fromarray((img * 255).astype(np.uint8)).save(p)
        mp = None
        if mask is not None:
            mp = root / "mask" / f"{name}.png"
            Image.fromarray((mask * 255).astype(np.uint8)).save(mp)
        return str(p), (str(mp) if mp else None)

    train = []
    for i in range(n_train):
        p, _ = save(f"train_{i}", _texture(rng, size), None)
        train.append(Sample(p, None, "good", key=f"train/good/{i}"))
    test = []
    for i in range(n_good):
        p, _ = save(f"good_{i}", _texture(rng, size), None)
        test.append(Sample(p, None, "good", key=f"test/good/{i}"))
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n_per_defect):
        img = _texture(rng, size)
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 8) ** 2
        img[mask] = 0.05
        p, mp = save(f"spot_{i}", img, mask)
        test.append(Sample(p, mp, "spot", category="surface", background=bool(i % 2), key=f"test/spot/{i}"))
    for i in range(n_per_defect):
        img = _texture(rng, size)
        r0 = int(rng.integers(size // 4, 3 * size // 4))
        mask = np.zeros((size, size), bool)
        mask[r0 : r0 + size // 10, size // 6 : 5 * size // 6] = True
        img[mask] = 0.98
        p, mp = save(f"bar_{i}", img, mask)
        test.append(Sample(p, mp, "bar", category="structural", background=False, key=f"test/bar/{i}"))
    return train, test


def textured(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A uint8 HxWx3 picture of a fine periodic texture with noise, at any size (not square)."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = 140 + 30 * np.sin(xx / 7.0) * np.cos(yy / 11.0)
    noisy = base[..., None] + rng.normal(0, 5, (height, width, 3)) + np.array([0, -10, -20])
    return np.clip(noisy, 0, 255).astype(np.uint8)


def make_wide_dataset(root: Path, height: int = 160, width: int = 240, n_train: int = 3, n_good: int = 2,
                      n_bad: int = 2, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Non-square images for the ``tiles`` mode: train good, test good + dark rectangles."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    def save(name, img, mask=None):
        path = root / f"{name}.png"
        Image.fromarray(img).save(path)
        if mask is None:
            return str(path), None
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / f"{name}_mask.png")
        return str(path), str(root / f"{name}_mask.png")

    train = [Sample(*save(f"train{i}", textured(rng, height, width)), "good", key=f"train/{i}") for i in range(n_train)]
    test = [Sample(*save(f"good{i}", textured(rng, height, width)), "good", key=f"good/{i}") for i in range(n_good)]
    for i in range(n_bad):
        img, mask = textured(rng, height, width), np.zeros((height, width), bool)
        mask[height // 3 + 8 * i: height // 3 + 8 * i + height // 6, width // 3: width // 3 + width // 5] = True
        img[mask] = 20
        test.append(Sample(*save(f"bad{i}", img, mask), "spot", key=f"bad/{i}"))
    return train, test
