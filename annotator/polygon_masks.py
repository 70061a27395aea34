"""Defect masks from annotation files: LabelMe JSON and COCO JSON (polygons and RLE).

No Django here (the engine's command line reads datasets through ``annotator.layouts`` too).
An annotation file is read, checked against its image and rasterised at the image's native,
upright resolution into a binary PNG (0/255) in a folder of DefectBench's own (under the media
root, never beside the user's files); the importer and the engine then read that PNG like any
other mask, by the rules of ``inference.engine.pixels``.

Rasterisation follows each format's own tool, so a mask is what the user's labelling tool
exports for the same shapes:

* LabelMe: LabelMe's own ``shape_to_mask`` conventions: polygons, rectangles and circles are
  filled *with* their outline (Pillow's ImageDraw, edge pixels included), lines and line strips
  are 10 px wide, points discs of radius 5; a ``mask`` shape (LabelMe 5) is its PNG pasted at its
  box. Embedded ``imageData`` is never decoded: the image file is the source.
* COCO: ``pycocotools``, the COCO reference implementation: polygons (``segmentation`` as lists
  of x, y) and RLE (compressed string or uncompressed counts), ``iscrowd`` or not.

An image's upright size (EXIF orientation applied, as the labelling tools show it) must equal the
size the file states; every point must lie inside the image (up to ``EDGE_TOLERANCE`` pixels
past its border, for points snapped to the edge); otherwise the annotation is a problem and its
image is left out.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ANNOTATION_EXTENSIONS = (".json",)
# Under the media root: <folder>/<dataset folder name>-<hash of its path>/<image path>.png
RENDERED_FOLDER = "annotation-masks"
# A point may lie this many pixels past the image's border (tools snap points to the edge).
EDGE_TOLERANCE = 1.0
# LabelMe's shape_to_mask widths for shapes without area.
LABELME_LINE_WIDTH = 10
LABELME_POINT_RADIUS = 5
LABELME_SHAPES = ("polygon", "rectangle", "circle", "line", "linestrip", "point", "mask")
DEFAULT_DEFECT_TYPE = "defect"
MAX_DEFECT_TYPE = 100  # Image.defect_type's length
# EXIF orientation -> the transpositions that turn an upright picture back to the stored one
# (the inverse of pixels._ORIENTATION: the rendered mask is stored the way its image is, and
# turned upright with it when decoded).
_TO_STORED = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_90,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_270,),
}


class AnnotationError(ValueError):
    """An annotation file cannot be used; the message does not name the file."""


@dataclass(frozen=True)
class Region:
    """One annotated defect region."""

    label: str
    name: str  # for messages: "shape 2 (Pitting)", "annotation 17"
    shape: str  # a LabelMe shape type, or "coco-polygon" / "coco-rle"
    points: tuple  # (x, y) pairs; COCO polygons: one tuple of pairs per ring
    payload: object = None  # LabelMe mask shape: bool array; COCO RLE: its dict


@dataclass(frozen=True)
class Annotation:
    """The annotation of one image: a LabelMe file, or one image of a COCO file."""

    source: Path  # the annotation file
    image_ref: str  # the image as the file names it (LabelMe imagePath, COCO file_name)
    size: tuple[int, int] | None  # (width, height) the file states
    regions: tuple[Region, ...]
    where: str = ""  # within the file, for messages: "image 3 (a.jpg): "
    format: str = "labelme"  # or "coco"

    @property
    def defect_type(self) -> str:
        labels = sorted({region.label for region in self.regions if region.label})
        return "+".join(labels)[:MAX_DEFECT_TYPE] or DEFAULT_DEFECT_TYPE


# --- Where rasterised masks live ---------------------------------------------------------------


def is_annotation_file(path) -> bool:
    return Path(str(path)).suffix.lower() in ANNOTATION_EXTENSIONS


def masks_dir(media_root: Path, dataset_root: Path) -> Path:
    """The folder of the masks rasterised for the dataset at ``dataset_root`` (resolved)."""
    root = str(Path(dataset_root))
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(root).name).strip(".-") or "dataset"
    return Path(media_root) / RENDERED_FOLDER / f"{name[:60]}-{hashlib.sha256(root.encode()).hexdigest()[:16]}"


def rendered_mask(folder: Path, image_rel: str) -> Path:
    """The rasterised mask of the image at ``image_rel`` (relative to its dataset's root)."""
    return Path(folder) / f"{image_rel}.png"


# --- Reading annotation files ------------------------------------------------------------------


def read_annotations(path: Path) -> list[Annotation] | None:
    """The annotations of a LabelMe or COCO file; None for a JSON file of another kind
    (metadata such as an index). AnnotationError when the file cannot be used."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise AnnotationError(f"not a readable JSON file ({error})") from None
    if is_labelme(data):
        return [_labelme(path, data)]
    if is_coco(data):
        return _coco(path, data)
    return None


def is_labelme(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("shapes"), list) and "imagePath" in data


def is_coco(data) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("images"), list)
            and isinstance(data.get("annotations"), list))


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AnnotationError(f"{what}: {value!r} is not a number")
    return float(value)


def _size(width, height, what: str) -> tuple[int, int] | None:
    if width is None and height is None:
        return None
    size = int(_number(width, f"{what} width")), int(_number(height, f"{what} height"))
    if min(size) <= 0:
        raise AnnotationError(f"{what} size {size[0]}x{size[1]} is not positive")
    return size


def _pairs(points, what: str) -> tuple:
    if not isinstance(points, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in points):
        raise AnnotationError(f"{what}: points must be a list of [x, y] pairs")
    return tuple((_number(x, what), _number(y, what)) for x, y in points)


_POINT_COUNTS = {"rectangle": 2, "circle": 2, "line": 2, "point": 1, "mask": 2}


def _labelme_shape(number: int, shape) -> Region:
    if not isinstance(shape, dict):
        raise AnnotationError(f"shape {number} is not an object")
    label = str(shape.get("label") or "").strip()
    name = f"shape {number}" + (f" ({label})" if label else "")
    kind = shape.get("shape_type") or "polygon"
    if kind not in LABELME_SHAPES:
        raise AnnotationError(f"{name}: unknown shape type {kind!r} (expected {', '.join(LABELME_SHAPES)})")
    points = _pairs(shape.get("points"), name)
    wanted = _POINT_COUNTS.get(kind)
    if wanted is not None and len(points) != wanted:
        raise AnnotationError(f"{name}: a {kind} has {wanted} point(s), not {len(points)}")
    if kind == "polygon" and len(points) < 3:
        raise AnnotationError(f"{name}: a polygon needs at least 3 points, it has {len(points)}")
    if kind == "linestrip" and len(points) < 2:
        raise AnnotationError(f"{name}: a linestrip needs at least 2 points, it has {len(points)}")
    payload = None
    if kind == "mask":
        try:
            with Image.open(io.BytesIO(base64.b64decode(shape.get("mask") or "", validate=True))) as picture:
                payload = np.asarray(picture.convert("L")) > 0
        except Exception as error:  # noqa: BLE001 - any decoding failure: the shape is unusable
            raise AnnotationError(f"{name}: its mask is not a readable base64 PNG ({error})") from None
    return Region(label, name, kind, points, payload)


def _labelme(path: Path, data: dict) -> Annotation:
    image_ref = str(data.get("imagePath") or "").strip().replace("\\", "/")
    regions = tuple(_labelme_shape(number, shape) for number, shape in enumerate(data["shapes"], start=1))
    size = _size(data.get("imageWidth"), data.get("imageHeight"), "imageWidth x imageHeight")
    return Annotation(Path(path), image_ref, size, regions)


def _coco_segmentation(number, annotation) -> Region:
    name = f"annotation {annotation.get('id', number)}"
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, dict):
        counts, size = segmentation.get("counts"), segmentation.get("size")
        if not (isinstance(counts, (str, list)) and isinstance(size, list) and len(size) == 2):
            raise AnnotationError(f"{name}: RLE segmentation needs 'counts' and 'size' [height, width]")
        height, width = (int(_number(value, f"{name} RLE size")) for value in size)
        return Region("", name, "coco-rle", (), {"counts": counts, "size": [height, width]})
    if isinstance(segmentation, list) and segmentation:
        rings = []
        for ring in segmentation:
            if not isinstance(ring, list) or len(ring) < 6 or len(ring) % 2:
                raise AnnotationError(f"{name}: a polygon is a list of at least 3 x, y pairs")
            values = [_number(value, name) for value in ring]
            rings.append(tuple(zip(values[0::2], values[1::2])))
        return Region("", name, "coco-polygon", tuple(rings))
    raise AnnotationError(f"{name}: no segmentation (a box alone is no mask; export polygons or RLE)")


def _coco(path: Path, data: dict) -> list[Annotation]:
    categories = {}
    for category in data.get("categories") or []:
        if isinstance(category, dict) and "id" in category:
            categories[category["id"]] = str(category.get("name") or "").strip()
    regions: dict[object, list[Region]] = {}
    for number, annotation in enumerate(data["annotations"], start=1):
        if not isinstance(annotation, dict) or "image_id" not in annotation:
            raise AnnotationError(f"annotation {number}: not an object with an image_id")
        region = _coco_segmentation(number, annotation)
        label = categories.get(annotation.get("category_id"), "")
        regions.setdefault(annotation["image_id"], []).append(
            Region(label, region.name + (f" ({label})" if label else ""), region.shape, region.points,
                   region.payload))
    found = []
    known = set()
    for number, image in enumerate(data["images"], start=1):
        if not isinstance(image, dict) or "id" not in image or not image.get("file_name"):
            raise AnnotationError(f"image {number}: not an object with an id and a file_name")
        known.add(image["id"])
        file_name = str(image["file_name"]).strip().replace("\\", "/")
        size = _size(image.get("width"), image.get("height"), f"image {image['id']}")
        found.append(Annotation(Path(path), file_name, size, tuple(regions.get(image["id"], ())),
                                where=f"image {image['id']} ({file_name}): ", format="coco"))
    orphans = sorted(str(key) for key in set(regions) - known)
    if orphans:
        raise AnnotationError(f"annotations refer to image id(s) not in 'images': {', '.join(orphans[:10])}")
    return found


# --- Checks and rasterisation ------------------------------------------------------------------


def problems(annotation: Annotation, width: int, height: int, image_rel: str) -> list[str]:
    """What makes ``annotation`` unusable for its image of upright size ``width`` x ``height``."""
    if annotation.size is not None and tuple(annotation.size) != (width, height):
        stated = f"{annotation.size[0]}x{annotation.size[1]}"
        return [f"{annotation.where}the file states an image of {stated}, but {image_rel} is {width}x{height}"]
    found = []
    for region in annotation.regions:
        if region.shape == "coco-rle":
            rle_height, rle_width = region.payload["size"]
            if (rle_width, rle_height) != (width, height):
                found.append(f"{annotation.where}{region.name}: RLE of {rle_width}x{rle_height}, "
                             f"but {image_rel} is {width}x{height}")
            continue
        rings = region.points if region.shape == "coco-polygon" else (region.points,)
        for ring in rings:
            outside = [(x, y) for x, y in ring
                       if not (-EDGE_TOLERANCE <= x <= width + EDGE_TOLERANCE
                               and -EDGE_TOLERANCE <= y <= height + EDGE_TOLERANCE)]
            if outside:
                (x, y), more = outside[0], len(outside) - 1
                found.append(f"{annotation.where}{region.name}: point ({x:g}, {y:g})"
                             + (f" and {more} more" if more else "")
                             + f" lies outside the {width}x{height} image {image_rel}")
                break
    return found


def _draw_labelme(draw: ImageDraw.ImageDraw, region: Region, canvas: np.ndarray) -> None:
    xy = list(region.points)
    kind = region.shape
    if kind == "circle":
        (cx, cy), (px, py) = xy
        radius = math.hypot(cx - px, cy - py)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=1, fill=1)
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = xy  # drawn from any corner; Pillow wants the top left first
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)
    elif kind in ("line", "linestrip"):
        draw.line(xy, fill=1, width=LABELME_LINE_WIDTH)
    elif kind == "point":
        (cx, cy), = xy
        r = LABELME_POINT_RADIUS
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
    elif kind == "mask":
        (x0, y0), _ = xy
        left, top = int(x0), int(y0)
        patch = region.payload[: max(0, canvas.shape[0] - top), : max(0, canvas.shape[1] - left)]
        patch = patch[max(0, -top):, max(0, -left):]
        top, left = max(0, top), max(0, left)
        canvas[top:top + patch.shape[0], left:left + patch.shape[1]] |= patch
    else:
        draw.polygon(xy, outline=1, fill=1)


def rasterise(annotation: Annotation, width: int, height: int) -> np.ndarray:
    """The union of the annotation's regions as a bool (height, width) array, upright."""
    picture = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(picture)
    extra = np.zeros((height, width), dtype=bool)  # LabelMe mask shapes and COCO regions
    coco = [region for region in annotation.regions if region.shape.startswith("coco-")]
    for region in annotation.regions:
        if not region.shape.startswith("coco-"):
            _draw_labelme(draw, region, extra)
    if coco:
        extra |= _coco_mask(coco, width, height)
    return (np.asarray(picture) > 0) | extra


def _coco_mask(regions: list[Region], width: int, height: int) -> np.ndarray:
    from pycocotools import mask as coco_mask

    rles = []
    for region in regions:
        if region.shape == "coco-rle":
            rle = dict(region.payload)
            if isinstance(rle["counts"], list):
                rle = coco_mask.frPyObjects(rle, height, width)
            rles.append(rle)
        else:
            rles.extend(coco_mask.frPyObjects([[v for xy in ring for v in xy] for ring in region.points],
                                              height, width))
    with warnings.catch_warnings():  # pycocotools 2.0.11 under numpy 2 warns about its own __array__
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
        return coco_mask.decode(coco_mask.merge(rles)).astype(bool)


def save_mask(defect: np.ndarray, path: Path, orientation: int = 1) -> None:
    """Write an upright bool mask as a 0/255 PNG, stored the way its image (of EXIF
    ``orientation``) is stored, so that decoding turns both upright alike. Written whole then
    renamed, so a reader never sees half a file."""
    picture = Image.fromarray(defect.astype(np.uint8) * 255, "L")
    for method in _TO_STORED.get(orientation, ()):
        picture = picture.transpose(method)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    picture.save(partial, format="PNG")
    partial.replace(path)
