"""The ``polygons`` layout: images with LabelMe or COCO annotation files (``annotator.polygon_masks``).

::

    <product>/**/<image>.<ext>        any nested folders
    <product>/**/<name>.json          LabelMe files (one per image, beside it or in a folder of
                                      their own) and/or COCO files (one for many images)

No Django here. A LabelMe file names its image by ``imagePath`` (relative to the file, as LabelMe
writes it); when no image lies there, the dataset's only image of that file name is taken (label
files are often kept in a folder of their own, ``label/`` beside ``data/``). A COCO image's
``file_name`` is looked up the same way (relative to the COCO file, then to the dataset's root,
then by file name). An image with at least one annotated region is anomalous, its defect type the
region labels (LabelMe shape labels, COCO category names; several joined with "+"); an image
without annotation, or whose LabelMe file has no shape, is defect-free. No split is given
(``layouts.resolve_images`` makes one). Other JSON files (an index, notes, ``defectbench.json``)
are metadata and ignored.

``auto`` takes a folder for a polygons product when it or one of its direct subfolders holds a
LabelMe or COCO file and it looks like no other layout; ``--layout polygons`` reads annotation
files at any depth.

The masks are rasterised while the folder is scanned, into ``mask_dir`` (the importer's is under
the media root: ``polygon_masks.masks_dir``); ``ScanResult.mask_sources`` maps each mask to its
annotation file, which is the mask path a dataset stores and problems name.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image

from annotator.layouts import IMAGE_EXTENSIONS, ScannedImage, ScanResult, is_ignored, is_image_file
from annotator.polygon_masks import (
    ANNOTATION_EXTENSIONS,
    Annotation,
    AnnotationError,
    problems,
    rasterise,
    read_annotations,
    rendered_mask,
    save_mask,
)
from inference.engine.pixels import exif_orientation

NAME = "polygons"


def _skipped(path: Path) -> bool:
    """Ignored like in every layout, except that JSON files are read (they may be annotations)."""
    if path.suffix.lower() in ANNOTATION_EXTENSIONS and path.is_file():
        return path.name.startswith(".")
    return is_ignored(path)


def _walk(root: Path, depth: int | None = None):
    """(folder, sorted entries) for ``root`` and the folders below it (``depth`` levels at most)."""
    stack = [(root, 0)]
    while stack:
        folder, level = stack.pop()
        try:
            entries = sorted(p for p in folder.iterdir() if not _skipped(p))
        except OSError:
            continue
        yield folder, entries
        if depth is None or level < depth:
            stack.extend(reversed([(p, level + 1) for p in entries if p.is_dir() and not p.is_symlink()]))


def _annotation_files(entries):
    return [p for p in entries if p.is_file() and p.suffix.lower() in ANNOTATION_EXTENSIONS]


def is_polygon_product(folder: Path) -> bool:
    """Whether ``folder`` or one of its direct subfolders holds a LabelMe or COCO file."""
    for _folder, entries in _walk(folder, depth=1):
        for path in _annotation_files(entries):
            try:
                if read_annotations(path) is not None:
                    return True
            except AnnotationError:
                continue
    return False


def polygon_products(root: Path) -> list[Path]:
    """Product folders of ``--layout polygons``: the subfolders that are polygon products, or
    ``root`` itself when it is one or none of them is."""
    if is_polygon_product(root):
        return [root]
    subfolders = [p for p in sorted(root.iterdir()) if p.is_dir() and not is_ignored(p)]
    return [p for p in subfolders if is_polygon_product(p)] or [root]


class _ImageFinder:
    """Finds the image an annotation names among the images found under a product folder."""

    def __init__(self, images: list[Path], root: Path):
        self.images = set(images)
        self.root = root
        self.by_name: dict[str, list[Path]] = {}
        for image in images:
            self.by_name.setdefault(image.name, []).append(image)

    def find(self, annotation: Annotation, relative) -> tuple[Path | None, str]:
        """(image, "") or (None, problem)."""
        ref = annotation.image_ref
        what = "imagePath" if annotation.format == "labelme" else "file_name"
        if not ref:
            return None, f"{annotation.where}names no image ({what} is empty)"
        for base in (annotation.source.parent, self.root):
            candidate = Path(os.path.normpath(base / ref))
            if candidate in self.images:
                return candidate, ""
        named = self.by_name.get(Path(ref).name, [])
        if len(named) == 1:
            return named[0], ""
        if named:
            return None, (f"{annotation.where}its image {ref!r} ({what}) could be any of "
                          f"{', '.join(relative(p) for p in sorted(named))}")
        return None, f"{annotation.where}its image {ref!r} ({what}) is not in the dataset"


def _upright_size(path: Path) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) of the image as it is shown, from its header."""
    with Image.open(path) as picture:
        orientation = exif_orientation(picture)
        width, height = picture.size
    return (height, width, orientation) if orientation in (5, 6, 7, 8) else (width, height, orientation)


def _claims(result: ScanResult, sources: list[Path], finder: _ImageFinder):
    """({image: its annotation}, images left out, stems of unreadable annotation files)."""
    claimed: dict[Path, Annotation] = {}
    refused: set[Path] = set()
    broken: set[str] = set()
    for source in sources:
        try:
            annotations = read_annotations(source)
        except AnnotationError as error:
            result.errors.append(f"{result.relative(source)}: {error}")
            broken.add(source.stem.lower())
            continue
        for annotation in annotations or ():
            image, problem = finder.find(annotation, result.relative)
            if image is None:
                # A COCO file may list images that were not kept; only lost annotations matter.
                if annotation.regions or annotation.format == "labelme":
                    result.errors.append(f"{result.relative(source)}: {problem}")
                continue
            if image in claimed:
                result.errors.append(f"{result.relative(source)}: {annotation.where}annotates "
                                     f"{result.relative(image)}, which {result.relative(claimed[image].source)} "
                                     "annotates already")
                refused.add(image)
                continue
            claimed[image] = annotation
    return claimed, refused, broken


def scan_polygons(result: ScanResult, product: Path, mask_dir: Path | None) -> None:
    """Every image under ``product``, its annotation's mask rasterised into ``mask_dir`` (None:
    a new temporary folder, for callers without a media root); problems go to ``result.errors``."""
    if mask_dir is None:
        mask_dir = Path(tempfile.mkdtemp(prefix="defectbench-masks-"))
    images, sources = [], []
    for _folder, entries in _walk(product):
        for path in entries:
            if path.is_dir():
                continue
            if is_image_file(path):
                images.append(path)
            elif path.suffix.lower() in ANNOTATION_EXTENSIONS:
                sources.append(path)
            elif not is_ignored(path):
                result.errors.append(f"{result.relative(path)}: not an image file type (expected "
                                     f"{' '.join(IMAGE_EXTENSIONS)}, or .json annotations)")
    claimed, refused, broken = _claims(result, sources, _ImageFinder(images, result.root))
    for image in images:
        annotation = claimed.get(image)
        if image in refused or (annotation is None and image.stem.lower() in broken):
            continue  # its annotation's problem is reported
        if annotation is None or not annotation.regions:
            result.images.append(ScannedImage(product.name, None, False, "good", image, None))
            continue
        _add_annotated(result, product, image, annotation, mask_dir)


def _add_annotated(result: ScanResult, product: Path, image: Path, annotation: Annotation,
                   mask_dir: Path) -> None:
    rel = result.relative(image)
    source = result.relative(annotation.source)
    try:
        width, height, orientation = _upright_size(image)
    except Exception as error:  # noqa: BLE001 - any header failure: the image is unreadable
        result.errors.append(f"{rel}: not a readable image ({error or type(error).__name__})")
        return
    found = problems(annotation, width, height, rel)
    if found:
        result.errors.extend(f"{source}: {problem}" for problem in found)
        return
    try:
        defect = rasterise(annotation, width, height)
    except Exception as error:  # noqa: BLE001 - e.g. RLE counts pycocotools cannot read
        result.errors.append(f"{source}: {annotation.where}cannot be rasterised ({error or type(error).__name__})")
        return
    mask_path = rendered_mask(mask_dir, rel)
    save_mask(defect, mask_path, orientation)
    result.mask_sources[mask_path] = annotation.source
    result.images.append(ScannedImage(product.name, None, True, annotation.defect_type, image, mask_path))
