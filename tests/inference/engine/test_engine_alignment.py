"""The alignment measure separates a product whose part sits in the same place from one whose part
is moved and rotated, and does not call a texture (no layout at all) unaligned."""
import numpy as np
from PIL import Image

from inference.engine import alignment

from .scenes import write_scenes


def test_aligned_parts_and_moved_rotated_parts_are_told_apart(tmp_path):
    same = alignment.measure_paths(write_scenes(tmp_path / "same", moved=False))
    moved = alignment.measure_paths(write_scenes(tmp_path / "moved", moved=True))
    assert same.aligned is True and same.aligned_share > 0.9
    assert moved.aligned is False and moved.aligned_share < 0.3
    # Both have a clear layout: registration finds the part again in the moved set.
    assert same.layout > 0.8 and moved.layout > 0.5
    assert moved.pairs == 10


def test_a_texture_has_no_layout_and_is_not_called_unaligned(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for k in range(8):
        noise = rng.normal(128, 40, (128, 128)).clip(0, 255).astype(np.uint8)
        Image.fromarray(noise).save(tmp_path / f"{k}.png")
        paths.append(str(tmp_path / f"{k}.png"))
    measured = alignment.measure_paths(paths)
    assert measured.layout < alignment.LAYOUT_MIN
    assert measured.aligned is True


def test_fewer_than_two_images_are_not_measured(tmp_path):
    assert alignment.measure_paths(write_scenes(tmp_path, count=1)).aligned is None
    assert alignment.spread(list("abcdefghij"), 4) == ["a", "d", "g", "j"]
