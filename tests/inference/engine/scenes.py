"""Synthetic products for the alignment measure: one part on a noisy backdrop, either in the same
place every time (aligned) or moved and rotated at random (like parts lying on a table)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def _part(size: int = 160) -> Image.Image:
    """An asymmetric part (an L-shaped bracket with a round boss), so no rotation maps it onto itself."""
    part = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(part)
    draw.rectangle([20, 60, 140, 90], fill=200)
    draw.rectangle([110, 20, 140, 90], fill=200)
    draw.ellipse([30, 100, 70, 140], fill=120)
    return part


def write_scenes(root: Path, count: int = 10, moved: bool = False, seed: int = 0) -> list[str]:
    """``count`` PNG scenes under ``root``; their paths, sorted."""
    return write_scene_files([Path(root) / f"{k:03d}.png" for k in range(count)], moved, seed)


def write_scene_files(paths, moved: bool = False, seed: int = 0, size: int = 256) -> list[str]:
    """A scene written at each of ``paths`` (PNG, RGB); the paths as strings."""
    rng = np.random.default_rng(seed)
    written = []
    for path in map(Path, paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        backdrop = Image.fromarray((60 + rng.normal(0, 8, (size, size))).clip(0, 255).astype(np.uint8))
        dx, dy = (int(v) for v in rng.integers(-45, 46, 2)) if moved else (0, 0)
        part = _part().rotate(float(rng.uniform(0, 360)) if moved else 0.0, expand=True,
                              resample=Image.Resampling.BILINEAR)
        backdrop.paste(part, (48 + dx, 48 + dy), part.point(lambda v: 255 if v else 0))
        backdrop.convert("RGB").save(path)
        written.append(str(path))
    return written
