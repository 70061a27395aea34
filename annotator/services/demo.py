"""A small synthetic dataset in MVTec AD layout, the same bytes on every run.

Two products, so both kinds and all four product-agnostic defect categories are present:

* ``widget`` — an object (a shaded metal disc with a groove) on a plain backdrop (kind object);
* ``fabric`` — a woven texture filling the frame (kind texture).

Each has 20 ``train/good``, 6 ``test/good`` and 4 anomalous test images of each defect type:

=================  ==================  ===============  =================
category           widget              fabric           what it looks like
=================  ==================  ===============  =================
structural         ``missing_piece``   ``hole``         part of the product gone
surface            ``scratch``         ``scratch``      a thin line
contamination      ``stain``           ``stain``        a brown blob of foreign matter
combined           ``mixed``           ``mixed``        a scratch and a stain, apart
=================  ==================  ===============  =================

Masks are binary 0/255 PNGs at ``ground_truth/<defect>/<stem>_mask.png``. ``defectbench.json``
declares the product kinds for the importer and ``labels.csv`` the intended labels, in the format
of ``shared/data/labels/mvtec_bottle_reference.csv`` (``image_path,background,defect_category``,
paths relative to the dataset folder's parent, e.g. ``demo/widget/test/scratch/000.png``).
Only NumPy and Pillow (no Django); PNGs are written without timestamps, so files are identical
byte for byte between runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

PRODUCTS = {"widget": "object", "fabric": "texture"}
DEFECTS = {
    "widget": {"missing_piece": "structural", "scratch": "surface", "stain": "contamination", "mixed": "combined"},
    "fabric": {"hole": "structural", "scratch": "surface", "stain": "contamination", "mixed": "combined"},
}
TRAIN_GOOD = 20
TEST_GOOD = 6
PER_DEFECT = 4


def _grid(size: int):
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    return xs, ys


def _widget_backdrop(rng, size):
    xs, ys = _grid(size)
    base = 0.22 + 0.06 * ys / size + rng.normal(0, 0.008, (size, size))
    return np.stack([base, base * 1.04, base * 1.12], axis=-1)


def _widget(rng, size):
    """(image float HxWx3 in 0..1, object mask, geometry) of a good widget."""
    xs, ys = _grid(size)
    cx = size / 2 + rng.uniform(-0.02, 0.02) * size
    cy = size / 2 + rng.uniform(-0.02, 0.02) * size
    radius = size * rng.uniform(0.31, 0.33)
    dist = np.hypot(xs - cx, ys - cy)
    inside = dist <= radius
    shade = 0.55 + 0.25 * np.sqrt(np.clip(1 - dist / radius, 0, 1))
    shade += 0.12 * (-(xs - cx) - (ys - cy)) / (radius * 1.414)
    groove = np.exp(-(((dist - 0.62 * radius) / (0.035 * size)) ** 2))
    shade -= 0.25 * groove
    shade += rng.normal(0, 0.01, (size, size))
    metal = np.stack([shade * 0.92, shade * 0.9, shade * 0.84], axis=-1)
    image = _widget_backdrop(rng, size)
    image[inside] = metal[inside]
    return image, inside, (cx, cy, radius)


def _fabric(rng, size):
    xs, ys = _grid(size)
    period = size / 16
    px, py = rng.uniform(0, period, 2)
    warp = np.sin(2 * np.pi * (xs + px) / period)
    weft = np.sin(2 * np.pi * (ys + py) / period)
    value = 0.5 + 0.14 * warp * weft + 0.05 * np.sin(2 * np.pi * (xs + ys) / (period * 2.3))
    value += rng.normal(0, 0.02, (size, size))
    image = np.stack([value * 0.55, value * 0.62, value * 0.95], axis=-1)
    return image, np.ones((size, size), bool), (size / 2, size / 2, size / 2)


def _segment_mask(size, start, end, width):
    xs, ys = _grid(size)
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((xs - x0) * dx + (ys - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
    return np.hypot(xs - (x0 + t * dx), ys - (y0 + t * dy)) <= width


def _point_in(rng, geometry, spread, size):
    cx, cy, radius = geometry
    angle = rng.uniform(0, 2 * np.pi)
    r = radius * spread * np.sqrt(rng.uniform(0.1, 1))
    margin = 0.12 * size
    return (
        float(np.clip(cx + r * np.cos(angle), margin, size - margin)),
        float(np.clip(cy + r * np.sin(angle), margin, size - margin)),
    )


def _scratch(rng, image, size, geometry, center=None, bright=True):
    center = center or _point_in(rng, geometry, 0.5, size)
    angle = rng.uniform(0, np.pi)
    half = size * rng.uniform(0.13, 0.19)
    offset = np.array([np.cos(angle), np.sin(angle)]) * half
    start, end = np.array(center) - offset, np.array(center) + offset
    mask = _segment_mask(size, start, end, max(1.2, size / 80))
    image[mask] = np.clip(image[mask] + (0.38 if bright else -0.35), 0, 1)
    return mask


def _stain(rng, image, size, geometry, center=None):
    center = center or _point_in(rng, geometry, 0.5, size)
    xs, ys = _grid(size)
    mask = np.zeros((size, size), bool)
    for _ in range(4):
        ox, oy = rng.normal(0, size * 0.025, 2)
        r = size * rng.uniform(0.035, 0.06)
        mask |= np.hypot(xs - center[0] - ox, ys - center[1] - oy) <= r
    brown = np.array([0.36, 0.22, 0.08])
    image[mask] = 0.2 * image[mask] + 0.8 * brown
    return mask


def _missing_piece(rng, image, size, geometry, inside):
    cx, cy, radius = geometry
    angle = rng.uniform(0, 2 * np.pi)
    bite = size * rng.uniform(0.12, 0.16)
    bx, by = cx + radius * np.cos(angle), cy + radius * np.sin(angle)
    xs, ys = _grid(size)
    mask = (np.hypot(xs - bx, ys - by) <= bite) & inside
    image[mask] = _widget_backdrop(rng, size)[mask]
    return mask


def _hole(rng, image, size, geometry):
    cx, cy = _point_in(rng, geometry, 0.6, size)
    xs, ys = _grid(size)
    rx, ry = size * rng.uniform(0.06, 0.09, 2)
    angle = rng.uniform(0, np.pi)
    u = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)
    v = -(xs - cx) * np.sin(angle) + (ys - cy) * np.cos(angle)
    mask = (u / rx) ** 2 + (v / ry) ** 2 <= 1
    image[mask] = 0.04 + rng.normal(0, 0.01, (int(mask.sum()), 3))
    return mask


def _mixed(rng, image, size, geometry):
    """A scratch and a stain on opposite sides: two defect kinds, several mask components."""
    cx, cy, radius = geometry
    angle = rng.uniform(0, 2 * np.pi)
    reach = min(radius * 0.55, size * 0.28)
    first = (cx + reach * np.cos(angle), cy + reach * np.sin(angle))
    second = (cx - reach * np.cos(angle), cy - reach * np.sin(angle))
    mask = _stain(rng, image, size, geometry, center=first)
    mask |= _scratch(rng, image, size, geometry, center=second)
    return mask


def _defect(product, defect, rng, image, size, geometry, inside):
    if defect == "missing_piece":
        return _missing_piece(rng, image, size, geometry, inside)
    if defect == "hole":
        return _hole(rng, image, size, geometry)
    if defect == "scratch":
        return _scratch(rng, image, size, geometry, bright=product == "widget")
    if defect == "stain":
        return _stain(rng, image, size, geometry)
    if defect == "mixed":
        return _mixed(rng, image, size, geometry)
    raise ValueError(defect)


def _save(array, path: Path, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        data = (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)
    else:
        data = np.where(array, 255, 0).astype(np.uint8)
    # Pillow writes no tIME chunk unless asked: identical bytes on every run.
    PILImage.fromarray(data).save(path, format="PNG", compress_level=6)


def generate_demo_dataset(out: Path, *, image_size: int = 128, seed: int = 0) -> Path:
    """Write the demo dataset to ``out`` (created if needed) and return its resolved path."""
    if image_size < 32:
        raise ValueError("image_size must be at least 32 pixels")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    size = image_size
    labels = []
    for product_index, (product, kind) in enumerate(PRODUCTS.items()):
        make = _widget if product == "widget" else _fabric
        root = out / product

        def rng_for(*key):
            return np.random.default_rng([seed, product_index, *key])

        for index in range(TRAIN_GOOD):
            image, _, _ = make(rng_for(0, index), size)
            _save(image, root / "train" / "good" / f"{index:03d}.png", "RGB")
        for index in range(TEST_GOOD):
            image, _, _ = make(rng_for(1, index), size)
            _save(image, root / "test" / "good" / f"{index:03d}.png", "RGB")
        for defect_index, (defect, category) in enumerate(DEFECTS[product].items()):
            for index in range(PER_DEFECT):
                rng = rng_for(2, defect_index, index)
                image, inside, geometry = make(rng, size)
                mask = _defect(product, defect, rng, image, size, geometry, inside)
                _save(image, root / "test" / defect / f"{index:03d}.png", "RGB")
                _save(mask, root / "ground_truth" / defect / f"{index:03d}_mask.png", "L")
                background = "yes" if kind == "object" else "no"
                labels.append(f"{out.name}/{product}/test/{defect}/{index:03d}.png,{background},{category}")
    (out / "defectbench.json").write_text(
        json.dumps({"products": {name: {"kind": kind} for name, kind in PRODUCTS.items()}},
                   indent=2, sort_keys=True) + "\n",
        encoding="utf-8",
    )
    (out / "labels.csv").write_text(
        "image_path,background,defect_category\n" + "\n".join(labels) + "\n", encoding="utf-8"
    )
    return out
