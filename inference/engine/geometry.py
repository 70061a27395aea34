"""How an image of any size enters a model and how its map and mask come back (``resize``).

Every model takes ``image_size``² inputs and returns ``image_size``² maps; this module turns an
image of any native size into those inputs and the maps back into one map at the image's native
size, with nothing in between that distorts it:

* ``squash``: the whole image resized to ``image_size``² (today's behaviour: comparable with
  published numbers; a non-square image is distorted).
* ``keep_aspect``: the long side scaled to ``image_size``, the short side padded (edge pixels
  repeated) to ``image_size`` -- a square, hence a multiple of every backbone stride. The pad is
  cut off the map before anything reads it: no statistic, score or metric sees it.
* ``tiles``: the image scaled by ``scale`` (1 = native resolution) and covered by overlapping
  ``tile_size``² tiles (the last tile of a row/column flush with the edge), each tile resized to
  ``image_size``² for the model; the maps are blended back, averaged where tiles overlap.

Metrics are computed on one *evaluation canvas* per run (:func:`evaluation_canvas`): the median
native size of the test images, scaled down (aspect kept) only when it holds more than
``eval_max_pixels`` pixels. Maps reach it bilinearly; ground-truth masks by *area*
(:func:`area_resample_mask`): a canvas pixel is defective when any part of it covers a defective
native pixel, so a crack thinner than a canvas pixel is never lost (nearest neighbour drops it).

Torch-free (numpy and PIL): the web process's launch checks use :func:`geometry_problem`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

RESIZE_MODES = ("squash", "keep_aspect", "tiles")


def _overlap_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in): length of target interval i (in source units) overlapping source pixel j."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    j = np.arange(n_in)[None, :]
    return np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)


def area_fraction(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Share of each pixel of a ``shape`` grid covered by the defective pixels of ``mask`` (exact)."""
    from scipy import sparse

    h, w = mask.shape
    # Each target pixel overlaps at most a few source pixels per axis: as sparse matrices the two
    # products cost the mask's size, not (target x source)^2 (a 900^2 mask to 512^2: 0.2 s -> 5 ms).
    ay = sparse.csr_matrix(_overlap_matrix(shape[0], h))
    ax = sparse.csr_matrix(_overlap_matrix(shape[1], w))
    covered = ay @ (ax @ mask.astype(np.float64).T).T
    return covered / (np.asarray(ay.sum(1)) * np.asarray(ax.sum(1)).T)


def area_resample_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``mask`` (bool HxW) on a ``shape`` grid: defective where any part of the pixel covers a
    defective pixel (never nearest neighbour, which drops regions thinner than the step)."""
    if tuple(mask.shape) == tuple(shape):
        return mask.astype(bool, copy=True)
    return area_fraction(mask, shape) > 1e-9


def resize_map(amap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A float map resized bilinearly (PIL, 32-bit float) to ``shape`` (H, W)."""
    if tuple(amap.shape) == tuple(shape):
        return amap.astype(np.float32, copy=False)
    im = Image.fromarray(np.ascontiguousarray(amap, dtype=np.float32), "F")
    return np.asarray(im.resize((int(shape[1]), int(shape[0])), Image.BILINEAR), dtype=np.float32)


def evaluation_canvas(shapes: Sequence[tuple[int, int]], max_pixels: int) -> tuple[int, int]:
    """The (H, W) every map and mask of a run is evaluated on: the median native size of the
    images, scaled down (aspect kept) to at most ``max_pixels`` pixels."""
    h = int(np.median([s[0] for s in shapes]))
    w = int(np.median([s[1] for s in shapes]))
    if h * w > max_pixels:
        f = math.sqrt(max_pixels / (h * w))
        h, w = max(1, int(h * f)), max(1, int(w * f))
    return h, w


def _positions(length: int, tile: int, stride: int) -> list[int]:
    """Tile starts covering ``length``: every ``stride``, the last flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


@dataclass(frozen=True)
class Preprocessing:
    """The geometry of one run or package: the same object serves fit, evaluation and inspection."""

    resize: str = "squash"
    image_size: int = 256
    tile_size: int = 256
    tile_overlap: float = 0.25
    scale: float = 1.0

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, not {self.resize!r}")

    @classmethod
    def from_config(cls, config) -> "Preprocessing":
        get = (lambda k, d: config.get(k, d)) if isinstance(config, dict) else (lambda k, d: getattr(config, k, d))
        return cls(resize=get("resize", "squash"), image_size=int(get("image_size", 256)),
                   tile_size=int(get("tile_size", 256)), tile_overlap=float(get("tile_overlap", 0.25)),
                   scale=float(get("scale", 1.0)))

    def to_manifest(self) -> dict:
        d = {"resize": self.resize, "image_size": self.image_size}
        if self.resize == "tiles":
            d.update(tile_size=self.tile_size, tile_overlap=self.tile_overlap, scale=self.scale)
        return d

    def describe(self) -> str:
        return {"squash": f"PIL bilinear to {self.image_size} x {self.image_size}",
                "keep_aspect": f"long side PIL bilinear to {self.image_size}, short side padded (edge) to "
                               f"{self.image_size}; the pad is cut off every map",
                "tiles": f"scaled x{self.scale:g}, {self.tile_size} px tiles overlapping {self.tile_overlap:g}, "
                         f"each resized to {self.image_size}; maps averaged where tiles overlap"}[self.resize]

    # ---- image -> model inputs --------------------------------------------------------------
    def _letterbox(self, h: int, w: int) -> tuple[int, int]:
        """The (h, w) of the image inside the ``keep_aspect`` square."""
        f = self.image_size / max(h, w)
        return max(1, round(h * f)), max(1, round(w * f))

    def _tiles(self, h: int, w: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
        """Scaled (h, w) and the (top, left) of every tile on it."""
        sh, sw = max(1, round(h * self.scale)), max(1, round(w * self.scale))
        stride = max(1, int(round(self.tile_size * (1.0 - self.tile_overlap))))
        return (sh, sw), [(t, l) for t in _positions(sh, self.tile_size, stride)
                          for l in _positions(sw, self.tile_size, stride)]

    def count(self, native: tuple[int, int]) -> int:
        """How many model inputs :meth:`inputs` makes of an image of this (H, W)."""
        return len(self._tiles(*native)[1]) if self.resize == "tiles" else 1

    def inputs(self, image: np.ndarray) -> list[np.ndarray]:
        """uint8 ``image_size``² x 3 model inputs of one uint8 HxWx3 image."""
        h, w = image.shape[:2]
        size = self.image_size
        pil = Image.fromarray(image)
        if self.resize == "squash":
            return [np.asarray(pil.resize((size, size), Image.BILINEAR), dtype=np.uint8)]
        if self.resize == "keep_aspect":
            lh, lw = self._letterbox(h, w)
            inner = np.asarray(pil.resize((lw, lh), Image.BILINEAR), dtype=np.uint8)
            return [np.pad(inner, ((0, size - lh), (0, size - lw), (0, 0)), mode="edge")]
        return list(self.tile_inputs(image))

    def tile_inputs(self, image: np.ndarray) -> Iterator[np.ndarray]:
        """``tiles``: the model inputs of one uint8 HxWx3 image one at a time, in :meth:`inputs`'
        order (row by row), so a caller holds one tile at a time, not all of them."""
        h, w = image.shape[:2]
        (sh, sw), starts = self._tiles(h, w)
        scaled = image if (sh, sw) == (h, w) else np.asarray(
            Image.fromarray(image).resize((sw, sh), Image.BILINEAR), dtype=np.uint8)
        t, size = self.tile_size, self.image_size
        if sh < t or sw < t:  # smaller than one tile: pad (edge); the pad is cut off in assemble
            scaled = np.pad(scaled, ((0, max(0, t - sh)), (0, max(0, t - sw)), (0, 0)), mode="edge")
        for top, left in starts:
            tile = scaled[top:top + t, left:left + t]
            if t != size:
                tile = np.asarray(Image.fromarray(tile).resize((size, size), Image.BILINEAR), dtype=np.uint8)
            yield np.ascontiguousarray(tile)

    # ---- model maps -> one map at native size -------------------------------------------------
    def assemble(self, maps: Sequence[np.ndarray], scores: Sequence[float],
                 native: tuple[int, int]) -> tuple[np.ndarray, float]:
        """(map at the native (H, W), image score) from the maps/scores of :meth:`inputs`.

        Scores: ``squash`` the model's own; ``keep_aspect`` the maximum of the map without the
        pad; ``tiles`` the largest tile score (no tile is pad unless the image is smaller than one).
        """
        h, w = native
        if self.resize == "squash":
            return resize_map(maps[0], (h, w)), float(scores[0])
        if self.resize == "keep_aspect":
            lh, lw = self._letterbox(h, w)
            valid = maps[0][:lh, :lw]
            return resize_map(valid, (h, w)), float(valid.max())
        blend = TileBlend(self, native)
        blend.add(maps)
        return blend.result(), float(max(scores))

    def geometry(self, native: tuple[int, int]) -> tuple:
        """What a position-specific model's positions mean for an image of this size: equal
        values = the same positions (``squash``: always; ``keep_aspect``: the letterbox)."""
        if self.resize == "squash":
            return ("squash",)
        if self.resize == "keep_aspect":
            return ("keep_aspect", self._letterbox(*native))
        return ("tiles",)


class TileBlend:
    """``tiles``: the maps of one image's tiles blended into its map as they come (in
    :meth:`Preprocessing.tile_inputs`' order), so an inspection never holds every tile's map:
    summed where tiles overlap and divided by how many tiles cover each pixel (separable: the
    row count times the column count), cut to the scaled image, resized to the native size."""

    def __init__(self, preprocessing: Preprocessing, native: tuple[int, int]):
        self.preprocessing, self.native = preprocessing, native
        (self.sh, self.sw), self.starts = preprocessing._tiles(*native)
        t = preprocessing.tile_size
        self.total = np.zeros((max(self.sh, t), max(self.sw, t)), dtype=np.float64)
        self.added = 0

    def add(self, maps: Sequence[np.ndarray]) -> None:
        t = self.preprocessing.tile_size
        for m in maps:
            top, left = self.starts[self.added]
            self.total[top:top + t, left:left + t] += resize_map(m, (t, t))
            self.added += 1

    def result(self) -> np.ndarray:
        if self.added != len(self.starts):
            raise ValueError(f"{self.added} tile maps for {len(self.starts)} tiles")
        t = self.preprocessing.tile_size
        rows = np.zeros(self.total.shape[0])
        cols = np.zeros(self.total.shape[1])
        for top in sorted({top for top, _ in self.starts}):
            rows[top:top + t] += 1.0
        for left in sorted({left for _, left in self.starts}):
            cols[left:left + t] += 1.0
        self.total /= np.maximum(rows[:, None] * cols[None, :], 1.0)
        return resize_map(self.total[:self.sh, :self.sw].astype(np.float32), self.native)


def geometry_problem(preprocessing: Preprocessing, position_specific: bool, model_label: str,
                     native_sizes: Sequence[tuple[int, int]]) -> str | None:
    """Why a model cannot run with this preprocessing on images of these sizes, or None.

    A position-specific model (one statistic per map position) learns what is normal *at each
    position*; positions mean the same part of the product only when every image maps to the
    same geometry. Tiles never do (a position is a place in some tile, anywhere on the part).
    """
    if not position_specific:
        return None
    if preprocessing.resize == "tiles":
        return (f"{model_label} models each map position separately and needs aligned images of one geometry; "
                f"tiles put every part of the image at every position. Use squash or keep_aspect, or a "
                f"position-free model (PatchCore, feature reconstruction).")
    geometries = {preprocessing.geometry(s) for s in native_sizes}
    if len(geometries) > 1:
        sizes = sorted({f"{w}x{h}" for h, w in native_sizes})
        return (f"{model_label} models each map position separately and needs images of one geometry; with "
                f"resize={preprocessing.resize} these images ({', '.join(sizes[:5])}{', ...' if len(sizes) > 5 else ''}) "
                f"map to different shapes. Use squash, or a position-free model (PatchCore, feature reconstruction).")
    return None
