"""Drawing in the mask editor with the mouse at 1:1, and the raster each tool must give.

The reference functions follow the rules ``frontend/static/frontend/mask_editor.js`` states
(hard-edged, no antialiasing), with the same arithmetic in the same order, so a saved mask is
compared exactly, pixel for pixel."""
import math

import numpy as np
from scipy import ndimage


# --- the raster each tool gives (mask: bool height x width, changed in place) ------------------------

def capsule(mask: np.ndarray, a, b, radius: float, value: bool = True) -> None:
    """Pixels whose centre lies within ``radius`` of the segment a-b (pixel indices)."""
    height, width = mask.shape
    (ax, ay), (bx, by) = a, b
    r2 = radius * radius
    x0, y0 = max(0, math.floor(min(ax, bx) - radius)), max(0, math.floor(min(ay, by) - radius))
    x1, y1 = min(width, math.ceil(max(ax, bx) + radius) + 1), min(height, math.ceil(max(ay, by) + radius) + 1)
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    for y in range(y0, y1):
        for x in range(x0, x1):
            t = ((x - ax) * dx + (y - ay) * dy) / length2 if length2 else 0
            t = min(1, max(0, t))
            qx, qy = ax + t * dx, ay + t * dy
            if (x - qx) * (x - qx) + (y - qy) * (y - qy) <= r2:
                mask[y, x] = value


def stroke_raster(mask, points, size: int, value: bool = True) -> None:
    """A brush (or eraser) stroke through ``points`` with a brush ``size`` px wide."""
    capsule(mask, points[0], points[0], size / 2, value)
    for a, b in zip(points, points[1:]):
        capsule(mask, a, b, size / 2, value)


def polygon_raster(mask, points) -> None:
    height, width = mask.shape
    ys = [y for _, y in points]
    for y in range(max(0, min(ys)), min(height - 1, max(ys)) + 1):
        crossings = []
        for k, (ax, ay) in enumerate(points):
            bx, by = points[(k + 1) % len(points)]
            if (ay > y) != (by > y):
                crossings.append(ax + (y - ay) * (bx - ax) / (by - ay))
        crossings.sort()
        for k in range(0, len(crossings) - 1, 2):
            start, end = max(0, math.ceil(crossings[k])), min(width - 1, math.floor(crossings[k + 1]))
            mask[y, start:end + 1] = True
    for k, a in enumerate(points):
        capsule(mask, a, points[(k + 1) % len(points)], 0.5, True)


def fill_raster(mask, point) -> None:
    """The 4-connected region of the clicked pixel's value, flipped."""
    x, y = point
    value = mask[y, x]
    labels, _ = ndimage.label(mask == value)
    mask[labels == labels[y, x]] = not value


# --- the mouse, at 1:1 -------------------------------------------------------------------------------

_SHOW = """([x0, y0, x1, y1]) => {
  const v = document.getElementById('me-viewport');
  if (x0 < v.scrollLeft || x1 >= v.scrollLeft + v.clientWidth) v.scrollLeft = Math.max(0, x0 - 20);
  if (y0 < v.scrollTop || y1 >= v.scrollTop + v.clientHeight) v.scrollTop = Math.max(0, y0 - 20);
  const r = document.getElementById('me-overlay').getBoundingClientRect();
  return [r.left, r.top, v.scrollLeft, v.scrollTop];
}"""


def _origin(page, points):
    xs, ys = [x for x, _ in points], [y for _, y in points]
    left, top, *_ = page.evaluate(_SHOW, [min(xs), min(ys), max(xs), max(ys)])
    return left, top


def stroke(page, points) -> None:
    """Press at the first pixel, move to each next one in one step, release (one pointer event per
    point: the editor joins successive positions with straight segments)."""
    left, top = _origin(page, points)
    page.mouse.move(left + points[0][0] + 0.5, top + points[0][1] + 0.5)
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(left + x + 0.5, top + y + 0.5, steps=1)
    page.mouse.up()


def click(page, points) -> None:
    """Click each pixel in turn (polygon corners, a fill)."""
    left, top = _origin(page, points)
    for x, y in points:
        page.mouse.click(left + x + 0.5, top + y + 0.5)


def canvas_mask(page) -> np.ndarray:
    """What the mask canvas shows now (alpha > 0 = defect)."""
    text = page.evaluate("""() => {
      const c = document.getElementById('me-mask');
      const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const out = new Uint8Array(c.width * c.height);
      for (let i = 0; i < out.length; i++) out[i] = data[i * 4 + 3] ? 49 : 48;
      return [c.width, c.height, new TextDecoder().decode(out)];
    }""")
    width, height, values = text
    return (np.frombuffer(values.encode("ascii"), dtype=np.uint8) == 49).reshape(height, width)
