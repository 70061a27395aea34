"""Synthetic defects in defect-free images: the label-free threshold's stand-in for labelled ones.

The ``synthetic`` threshold technique fits the IoU curve on defects made here, so a product with
no labelled defect yet still gets a localisation threshold. What makes that threshold land near
the one real defects would give is how much the synthetic ones look like them, so:

* **The mask is exactly the pixels that changed** (by more than :data:`CHANGE_TOLERANCE` grey
  levels in some channel): a pasted patch of background on background changes nothing and is not
  labelled a defect, as the old whole-rectangle masks were.
* **Sizes are log-uniform** from :data:`MIN_AREA` to :data:`MAX_AREA` of the image, so tiny pits
  weigh as much as large stains in the IoU curve's mean over defects, and so is each defect's
  **strength** (re-lighting gain, texture blend, scratch contrast), from barely visible to obvious.
* **Three sources**, one drawn per defect: a *patch* of the same image moved, turned and
  re-lit (CutPaste, Li et al. 2021); a *blob* of thresholded Perlin noise filled with a foreign
  texture (DRAEM, Zavrtanik et al. 2021; the texture here is the image itself turned, colour-
  shifted and blurred, as no texture set ships with the app); a *scratch*, a thin curved stroke
  lighter or darker than its surroundings.
* **Every defect is made from its own image only**, so no pixel of another image (a test-part
  image in particular) reaches the validation part: the runner may make them for every
  defect-free test-folder image once and keep, per split, those whose image is in validation.
"""

from __future__ import annotations

import math

import numpy as np

CHANGE_TOLERANCE = 8  # grey levels (of 255) a pixel must move by to count as changed
MIN_AREA, MAX_AREA = 2e-4, 0.1  # share of the image, log-uniform in between
KINDS = ("patch", "blob", "scratch")
MIN_PIXELS = 4  # a defect that changed fewer pixels is redrawn
ATTEMPTS = 20


def perlin(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise in about [-1, 1] with ``cells`` lattice cells across the image."""
    h, w = shape
    angles = rng.uniform(0, 2 * math.pi, (cells + 1, cells + 1))
    grad = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    y = np.linspace(0, cells, h, endpoint=False)
    x = np.linspace(0, cells, w, endpoint=False)
    yi, xi = np.floor(y).astype(int), np.floor(x).astype(int)
    yf, xf = (y - yi)[:, None], (x - xi)[None, :]

    def corner(dy, dx):
        g = grad[(yi + dy)[:, None], (xi + dx)[None, :]]
        return g[..., 0] * (yf - dy) + g[..., 1] * (xf - dx)

    fade = lambda t: t * t * t * (t * (t * 6 - 15) + 10)  # noqa: E731
    u, v = fade(xf), fade(yf)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return (top * (1 - v) + bottom * v) * math.sqrt(2)


def _area(rng, size: int) -> float:
    return math.exp(rng.uniform(math.log(MIN_AREA), math.log(MAX_AREA))) * size * size


def _strength(rng, low: float, high: float) -> float:
    """How strongly a defect departs from its image, log-uniform from barely visible to obvious:
    a threshold fitted on only obvious defects lands too high for real, subtler ones."""
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _patch(image, rng):
    size = image.shape[0]
    area = _area(rng, size)
    aspect = math.exp(rng.uniform(math.log(1 / 3), math.log(3)))
    h = int(np.clip(round(math.sqrt(area / aspect)), 2, size - 1))
    w = int(np.clip(round(math.sqrt(area * aspect)), 2, size - 1))
    y0, x0 = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
    patch = np.rot90(image[y0:y0 + h, x0:x0 + w], int(rng.integers(1, 4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    gain = _strength(rng, 0.05, 0.4)
    patch = np.clip(patch.astype(np.float32) * (1 + gain if rng.random() < 0.5 else 1 - gain), 0, 255)
    ph, pw = patch.shape[:2]
    y1, x1 = int(rng.integers(0, size - ph + 1)), int(rng.integers(0, size - pw + 1))
    out = image.astype(np.float32)
    out[y1:y1 + ph, x1:x1 + pw] = patch
    return out


def _foreign_texture(image, rng):
    """The image turned, its channels permuted and shifted, and box-blurred: texture that does not
    line up with what it covers."""
    tex = np.rot90(image, int(rng.integers(1, 4))).astype(np.float32)
    tex = tex[..., rng.permutation(3)]
    tex = 255.0 - tex if rng.random() < 0.5 else tex
    k = int(rng.integers(1, 4))
    if k > 1:  # separable box blur
        kernel = np.ones(k) / k
        tex = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 0, tex)
        tex = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, tex)
    return tex


def _blob(image, rng):
    size = image.shape[0]
    share = _area(rng, size) / (size * size)
    # one blob around a random centre: Perlin noise, weighted by the distance from the centre
    noise = perlin((size, size), int(2 ** rng.integers(1, 4)), rng)
    cy, cx = rng.uniform(0, size, 2)
    yy, xx = np.mgrid[0:size, 0:size]
    radius = math.sqrt(share / math.pi) * size
    field = noise * 0.5 * radius - np.hypot(yy - cy, xx - cx)
    region = field >= np.quantile(field, 1.0 - share)
    beta = _strength(rng, 0.15, 1.0)
    tex = _foreign_texture(image, rng)
    out = image.astype(np.float32)
    out[region] = (1 - beta) * out[region] + beta * tex[region]
    return out


def _scratch(image, rng):
    size = image.shape[0]
    length = math.exp(rng.uniform(math.log(0.05), math.log(0.6))) * size
    width = float(rng.uniform(0.7, 2.5))
    p0 = rng.uniform(0, size, 2)
    angle = rng.uniform(0, 2 * math.pi)
    p2 = p0 + length * np.array([math.sin(angle), math.cos(angle)])
    bend = rng.normal(0, 0.25 * length, 2)
    p1 = (p0 + p2) / 2 + bend
    t = np.linspace(0, 1, max(8, int(length * 2)))[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2  # quadratic Bezier, (n, 2)
    yy, xx = np.mgrid[0:size, 0:size]
    near = np.full((size, size), np.inf)
    for y, x in curve:
        near = np.minimum(near, np.hypot(yy - y, xx - x))
    stroke = near <= width
    shift = _strength(rng, 15.0, 110.0) * (1 if rng.random() < 0.5 else -1)
    out = image.astype(np.float32)
    out[stroke] += shift
    return np.clip(out, 0, 255)


_MAKERS = {"patch": _patch, "blob": _blob, "scratch": _scratch}


def changed_pixels(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Pixels moved by more than :data:`CHANGE_TOLERANCE` in some channel: the synthetic mask."""
    return (np.abs(after.astype(np.int16) - before.astype(np.int16)) > CHANGE_TOLERANCE).any(axis=-1)


def synthetic_defects(images: np.ndarray, seed: int, per_image: int = 1):
    """Synthetic defects in defect-free uint8 images (N, S, S, 3), ``per_image`` for each.

    Returns (images, masks, source index, kind) — seeded; each made from its own image only.
    An image so flat that nothing changes after :data:`ATTEMPTS` draws gives an empty mask
    (the IoU curve then ignores it).
    """
    rng = np.random.default_rng([seed, 13, 2])
    n = len(images)
    out = np.repeat(images, per_image, axis=0).copy()
    masks = np.zeros(out.shape[:3], dtype=bool)
    source = np.repeat(np.arange(n), per_image)
    kinds = []
    for k in range(len(out)):
        image = images[source[k]]
        kind = KINDS[int(rng.integers(len(KINDS)))]
        for _ in range(ATTEMPTS):
            made = np.clip(np.rint(_MAKERS[kind](image, rng)), 0, 255).astype(np.uint8)
            mask = changed_pixels(image, made)
            if mask.sum() >= MIN_PIXELS:
                break
        out[k] = np.where(mask[..., None], made, image)
        masks[k] = mask
        kinds.append(kind)
    return out, masks, source, kinds
