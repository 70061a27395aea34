"""How aligned a product's defect-free images are: is its layout the same at the same pixels? (no Django)

Position-specific models (``ModelSpec.position_specific``: PaDiM, the VAE, CFLOW) learn what is
normal at each map position, so they need every part in the same place and pose. The measure asks
directly how much of that a fixed pixel grid captures:

* Up to ``MAX_IMAGES`` defect-free images (evenly spread over the sorted paths) are read as grey,
  squashed to ``SIZE`` x ``SIZE`` and centred (each image's mean removed, so brightness is ignored).
* Each is paired with the next (cyclically). For a pair, ``r0`` is the normalised cross-correlation
  of the two as they are, ``r_best`` the highest over every circular shift (one FFT) of the second
  rotated by each of ``ANGLES`` (the identity included, so ``r_best >= r0``).
* ``r**2`` is the share of one image's variance the other explains. ``aligned share`` =
  ``r0**2 / r_best**2``: of the structure the two images share once registered, the part they
  already share at the same pixels. ``layout`` = ``r_best**2``: how much structure they share
  at all. Both are medians over the pairs (one odd image does not decide).

The product counts as *not aligned* when it has a layout (``layout >= LAYOUT_MIN``) and less than
half of it is in place (``aligned share < ALIGNED_MIN``). Why these two numbers:

* ``ALIGNED_MIN = 0.5``: below it most of the structure a per-position statistic could model is
  somewhere else in the next image, so a per-position model sees mostly misplaced content.
* ``LAYOUT_MIN = 0.25`` (``r_best >= 0.5``, a "large" correlation by Cohen's convention): below it
  the images share little structure even registered (a stationary texture, noise), so there is no
  layout to misplace; per-position statistics then pool like a texture's, and the ratio of two
  small correlations would only be noise.

Cost: reading at most ``MAX_IMAGES`` thumbnails and ``MAX_IMAGES * len(ANGLES)`` FFTs of 64 x 64,
well under a second plus the image reads.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image as PILImage

SIZE = 64
ANGLES = tuple(range(0, 360, 15))
MAX_IMAGES = 24
ALIGNED_MIN = 0.5
LAYOUT_MIN = 0.25


@dataclass(frozen=True)
class Alignment:
    aligned_share: float | None  # median r0^2 / r_best^2 over the pairs
    layout: float | None  # median r_best^2
    pairs: int

    @property
    def aligned(self) -> bool | None:
        """False when the images share a layout that is mostly out of place; None when unmeasured."""
        if self.aligned_share is None:
            return None
        return not (self.layout >= LAYOUT_MIN and self.aligned_share < ALIGNED_MIN)

    def as_dict(self) -> dict:
        return {**asdict(self), "aligned": self.aligned}


def thumbnail(path: str) -> np.ndarray:
    with PILImage.open(path) as image:
        image.draft("L", (SIZE * 2, SIZE * 2))  # JPEG: decode at a reduced scale
        grey = image.convert("L").resize((SIZE, SIZE), PILImage.Resampling.BOX)
    values = np.asarray(grey, np.float64)
    return values - values.mean()


def _rotated(values: np.ndarray, angle: int) -> np.ndarray:
    if angle == 0:
        return values
    # Rotated about the centre; the corners that come in are the mean (0 after centring).
    return np.asarray(PILImage.fromarray(values.astype(np.float32), mode="F")
                      .rotate(angle, resample=PILImage.Resampling.BILINEAR, fillcolor=0.0), np.float64)


def pair_correlations(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(r0, r_best): the correlation of centred ``a`` and ``b`` as they are, and the highest over
    every circular shift of ``b`` rotated by each angle of ``ANGLES``."""
    norm_a = np.linalg.norm(a)
    if norm_a == 0 or np.linalg.norm(b) == 0:
        return 0.0, 0.0
    r0 = float((a * b).sum() / (norm_a * np.linalg.norm(b)))
    fa = np.conj(np.fft.rfft2(a))
    best = r0
    for angle in ANGLES:
        turned = _rotated(b, angle)
        turned = turned - turned.mean()
        norm = np.linalg.norm(turned)
        if norm == 0:
            continue
        # A circular shift keeps the norm, so one inverse FFT gives every shift's correlation.
        correlation = np.fft.irfft2(fa * np.fft.rfft2(turned), s=a.shape)
        best = max(best, float(correlation.max() / (norm_a * norm)))
    return r0, best


def measure(thumbnails: Sequence[np.ndarray]) -> Alignment:
    count = len(thumbnails)
    if count < 2:
        return Alignment(None, None, 0)
    shares, layouts = [], []
    for k in range(count if count > 2 else 1):
        r0, best = pair_correlations(thumbnails[k], thumbnails[(k + 1) % count])
        if best <= 0:
            continue
        shares.append(max(r0, 0.0) ** 2 / best ** 2)  # a negative correlation shares nothing in place
        layouts.append(best ** 2)
    if not shares:
        return Alignment(0.0, 0.0, 0)
    return Alignment(round(float(np.median(shares)), 4), round(float(np.median(layouts)), 4), len(shares))


def spread(paths: Sequence[str], limit: int = MAX_IMAGES) -> list[str]:
    """At most ``limit`` of ``paths``, evenly spread over them (deterministic)."""
    paths = list(paths)
    if len(paths) <= limit:
        return paths
    return [paths[int(i)] for i in np.linspace(0, len(paths) - 1, limit).round()]


def measure_paths(paths: Sequence[str]) -> Alignment:
    """The alignment of the defect-free images at ``paths`` (sorted by the caller)."""
    return measure([thumbnail(p) for p in spread(paths)])
