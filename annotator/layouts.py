"""Recognise the folder layout of an anomaly-detection dataset and list its images.

No Django here: the ML engine's command line uses this module too. Nothing is opened or decoded;
``scan_dataset`` only walks folders and pairs images with their masks. Checking that the files
are real images is the importer's job (``annotator.services.image_checks``).

Three layouts are understood. ``root`` may be one product folder or a folder of product folders
(the product name is always the product folder's name).

``mvtec`` (MVTec AD)::

    <product>/train/good/*.png
    <product>/test/good/*.png
    <product>/test/<defect>/*.png
    <product>/ground_truth/<defect>/<stem>_mask.png

``btad`` (BTAD, product folders 01, 02, 03)::

    <product>/train/ok/*
    <product>/test/ok/*
    <product>/test/ko/*
    <product>/ground_truth/ko/<stem>.<png|bmp|...>     (same stem as the image)

``folder`` (a user's own product)::

    <product>/good/*                normal images
    <product>/test_good/*           optional: normal images held out for testing
    <product>/anomalous/*           anomalous images (``defect/`` is accepted as well)
    <product>/masks/<stem>.png      mask of an anomalous image (``<stem>_mask.png`` also accepted)

  Train/test split of the normal images: when ``test_good/`` exists, all of ``good/`` is train
  and all of ``test_good/`` is test. Otherwise ``good/`` is sorted by file name and every fifth
  image (the 5th, 10th, 15th, ...) goes to test, the rest to train, so the split never changes
  between imports. Anomalous images are always test images; their defect type is the folder
  name (``anomalous`` or ``defect``).

Accepted image types: .png .jpg .jpeg .bmp .tif .tiff (any letter case). Hidden files and
folders (starting with ``.``), ``__MACOSX``, ``Thumbs.db``/``desktop.ini``, licence/readme files
and notes or metadata files (.txt .md .rst .csv .json .yaml .yml .xml, e.g. ``defectbench.json``,
``labels.csv``) are ignored wherever they are; any other unexpected file or folder is reported as
an error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LAYOUTS = ("mvtec", "btad", "folder")
# In the folder layout, every FOLDER_TEST_EVERY-th sorted good image goes to the test split.
FOLDER_TEST_EVERY = 5
FOLDER_ANOMALOUS_DIRS = ("anomalous", "defect")

_IGNORED_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}
# Notes and metadata beside the images (defectbench.json, labels.csv, README.md ...).
METADATA_EXTENSIONS = (".txt", ".md", ".rst", ".csv", ".json", ".yaml", ".yml", ".xml")
_DOC_FILE = re.compile(r"^(licen[cs]e|readme|copying|notice|citation)([._-].*)?$", re.IGNORECASE)


class UnknownLayoutError(ValueError):
    """The folder matches none of the known layouts, or several at once."""


@dataclass(frozen=True)
class ScannedImage:
    product: str
    split: str  # "train" | "test"
    is_anomalous: bool
    defect_type: str  # "good", "broken_large", "ok"/"ko" for BTAD ...
    image_path: Path  # absolute
    mask_path: Path | None


@dataclass
class ScanResult:
    layout: str  # resolved layout: mvtec | btad | folder
    root: Path
    images: list[ScannedImage] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def relative(self, path: Path) -> str:
        """``path`` relative to the scanned root, with forward slashes (as stored in the database)."""
        return path.relative_to(self.root).as_posix()

    @property
    def products(self) -> list[str]:
        return sorted({image.product for image in self.images})


def is_ignored(path: Path) -> bool:
    name = path.name
    return (
        name.startswith(".")
        or name.lower() in _IGNORED_NAMES
        or (path.is_file() and (_DOC_FILE.match(name) is not None
                                or path.suffix.lower() in METADATA_EXTENSIONS))
    )


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _subdirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_ignored(p))


def _names(folder: Path) -> set[str]:
    return {p.name for p in _subdirs(folder)}


def _product_layout(folder: Path) -> str | None:
    """The layout ``folder`` has if it is one product folder; None if it is not one.

    Raises UnknownLayoutError when it looks like more than one layout.
    """
    names = _names(folder)
    candidates = []
    if "train" in names or "test" in names:
        split_names = _names(folder / "train") | _names(folder / "test")
        if "good" in split_names:
            candidates.append("mvtec")
        if "ok" in split_names or "ko" in split_names:
            candidates.append("btad")
    if "good" in names:
        candidates.append("folder")
    if len(candidates) > 1:
        raise UnknownLayoutError(
            f"{folder}: ambiguous layout, it looks like {' and '.join(candidates)} at once; "
            "pass the layout explicitly."
        )
    return candidates[0] if candidates else None


_EXPECTED = (
    "Expected one of these layouts, either as one product folder or as a folder of product "
    "folders:\n"
    "  mvtec:  <product>/train/good/, <product>/test/<defect>/, <product>/ground_truth/<defect>/<stem>_mask.png\n"
    "  btad:   <product>/train/ok/, <product>/test/ok/, <product>/test/ko/, <product>/ground_truth/ko/<stem>.png\n"
    "  folder: <product>/good/, <product>/anomalous/ (or defect/), <product>/masks/<stem>.png"
)


def _product_folders(root: Path, layout: str | None = None) -> tuple[str, list[Path]]:
    """(layout, product folders) of ``root``; ``root`` itself when it is one product folder."""
    if not root.is_dir():
        raise UnknownLayoutError(f"{root} is not a folder.")
    own = _product_layout(root)
    if own is not None:
        return own, [root]
    found: dict[str, list[Path]] = {}
    for sub in _subdirs(root):
        kind = _product_layout(sub)
        if kind is not None:
            found.setdefault(kind, []).append(sub)
    if not found:
        raise UnknownLayoutError(f"{root}: unknown dataset layout. " + _EXPECTED)
    if len(found) > 1:
        detail = "; ".join(
            f"{kind}: {', '.join(p.name for p in folders)}" for kind, folders in sorted(found.items())
        )
        raise UnknownLayoutError(
            f"{root}: ambiguous layout, its product folders follow different layouts ({detail})."
        )
    (kind, folders), = found.items()
    return kind, folders


def detect_layout(root: Path) -> str:
    """"mvtec", "btad" or "folder"; raises UnknownLayoutError with what was expected."""
    return _product_folders(Path(root))[0]


def _images_in(folder: Path, result: ScanResult) -> list[Path]:
    """Image files directly in ``folder``, sorted; anything unexpected becomes an error."""
    images = []
    for path in sorted(folder.iterdir()):
        if is_ignored(path):
            continue
        if path.is_dir():
            result.errors.append(f"{result.relative(path)}/: unexpected folder")
        elif not is_image_file(path):
            result.errors.append(
                f"{result.relative(path)}: not an image file type "
                f"(expected {' '.join(IMAGE_EXTENSIONS)})"
            )
        else:
            images.append(path)
    return images


def _find_mask(folder: Path, stems: list[str]) -> list[Path]:
    """Existing mask files in ``folder`` named ``<stem><image extension>`` for any of ``stems``."""
    if not folder.is_dir():
        return []
    wanted = {stem.lower() for stem in stems}
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and is_image_file(p) and p.stem.lower() in wanted and not is_ignored(p)
    )


def _pair_mask(
    result: ScanResult, image: Path, mask_dir: Path, stems: list[str], expected: str
) -> Path | None:
    masks = _find_mask(mask_dir, stems)
    if not masks:
        result.errors.append(f"{result.relative(image)}: no mask at {expected}")
        return None
    if len(masks) > 1:
        result.errors.append(
            f"{result.relative(image)}: several masks found "
            f"({', '.join(result.relative(m) for m in masks)})"
        )
        return None
    return masks[0]


def _scan_split_product(result: ScanResult, product: Path, normal: str, mvtec: bool) -> None:
    """MVTec AD and BTAD: train/<normal>, test/<normal>, test/<defect>, ground_truth/<defect>."""
    name = product.name
    for path in sorted(product.iterdir()):
        if is_ignored(path) or path.name in ("train", "test", "ground_truth"):
            continue
        result.errors.append(
            f"{result.relative(path)}{'/' if path.is_dir() else ''}: unexpected "
            f"{'folder' if path.is_dir() else 'file'} (expected train/, test/, ground_truth/)"
        )
    train = product / "train"
    if train.is_dir():
        for path in sorted(train.iterdir()):
            if is_ignored(path):
                continue
            if not path.is_dir() or path.name != normal:
                result.errors.append(
                    f"{result.relative(path)}: training images must all be in train/{normal}/"
                )
                continue
            for image in _images_in(path, result):
                result.images.append(ScannedImage(name, "train", False, normal, image, None))
    test = product / "test"
    if test.is_dir():
        for path in sorted(test.iterdir()):
            if is_ignored(path):
                continue
            if not path.is_dir():
                result.errors.append(
                    f"{result.relative(path)}: test images must be in test/<defect type>/ folders"
                )
                continue
            defect = path.name
            if defect == normal:
                for image in _images_in(path, result):
                    result.images.append(ScannedImage(name, "test", False, normal, image, None))
                continue
            if not mvtec and defect != "ko":
                result.errors.append(
                    f"{result.relative(path)}/: unexpected folder (BTAD test images are in test/ok/ and test/ko/)"
                )
                continue
            mask_dir = product / "ground_truth" / defect
            for image in _images_in(path, result):
                if mvtec:
                    stems = [f"{image.stem}_mask"]
                    expected = result.relative(mask_dir / f"{image.stem}_mask.png")
                else:
                    stems = [image.stem]
                    expected = result.relative(mask_dir / f"{image.stem}.png") + " (or .bmp)"
                mask = _pair_mask(result, image, mask_dir, stems, expected)
                result.images.append(ScannedImage(name, "test", True, defect, image, mask))
    if not train.is_dir() and not test.is_dir():
        result.errors.append(f"{result.relative(product) or product.name}: no train/ or test/ folder")


def _scan_folder_product(result: ScanResult, product: Path) -> None:
    name = product.name
    known = {"good", "test_good", "masks", *FOLDER_ANOMALOUS_DIRS}
    for path in sorted(product.iterdir()):
        if is_ignored(path) or path.name in known:
            continue
        result.errors.append(
            f"{result.relative(path)}{'/' if path.is_dir() else ''}: unexpected "
            f"{'folder' if path.is_dir() else 'file'} (expected good/, test_good/, anomalous/, masks/)"
        )
    good = _images_in(product / "good", result) if (product / "good").is_dir() else []
    if (product / "test_good").is_dir():
        for image in good:
            result.images.append(ScannedImage(name, "train", False, "good", image, None))
        for image in _images_in(product / "test_good", result):
            result.images.append(ScannedImage(name, "test", False, "good", image, None))
    else:
        for index, image in enumerate(good):
            split = "test" if index % FOLDER_TEST_EVERY == FOLDER_TEST_EVERY - 1 else "train"
            result.images.append(ScannedImage(name, split, False, "good", image, None))
    mask_dir = product / "masks"
    for folder_name in FOLDER_ANOMALOUS_DIRS:
        folder = product / folder_name
        if not folder.is_dir():
            continue
        for image in _images_in(folder, result):
            expected = result.relative(mask_dir / f"{image.stem}.png") + f" (or {image.stem}_mask.png)"
            mask = _pair_mask(result, image, mask_dir, [image.stem, f"{image.stem}_mask"], expected)
            result.images.append(ScannedImage(name, "test", True, folder_name, image, mask))


def scan_dataset(root: Path, layout: str = "auto") -> ScanResult:
    """Every image of the dataset at ``root`` with its split, defect type and mask.

    ``layout`` "auto" detects it (UnknownLayoutError when unknown or ambiguous). Problems with
    single files or folders (a missing mask, an unexpected file) do not raise: they are collected
    in ``errors``, one message per problem, with paths relative to ``root``.
    """
    root = Path(root).resolve()
    if layout not in ("auto", *LAYOUTS):
        raise UnknownLayoutError(f"Unknown layout {layout!r}; expected auto, {', '.join(LAYOUTS)}.")
    if layout == "auto":
        resolved, products = _product_folders(root)
    else:
        resolved = layout
        if not root.is_dir():
            raise UnknownLayoutError(f"{root} is not a folder.")
        try:
            own = _product_layout(root)
        except UnknownLayoutError:
            own = layout
        if own == layout:
            products = [root]
        else:
            products = []
            for sub in _subdirs(root):
                try:
                    kind = _product_layout(sub)
                except UnknownLayoutError:
                    kind = layout
                if kind == layout:
                    products.append(sub)
            if not products:
                raise UnknownLayoutError(
                    f"{root}: no product folder in the {layout} layout found. " + _EXPECTED
                )
    result = ScanResult(layout=resolved, root=root)
    if len(products) > 1 or products[0] != root:
        for path in sorted(root.iterdir()):
            if path.is_dir() and not is_ignored(path) and path not in products:
                result.errors.append(
                    f"{result.relative(path)}/: not a product folder in the {resolved} layout"
                )
    for product in products:
        if resolved == "mvtec":
            _scan_split_product(result, product, "good", mvtec=True)
        elif resolved == "btad":
            _scan_split_product(result, product, "ok", mvtec=False)
        else:
            _scan_folder_product(result, product)
    if not result.images and not result.errors:
        result.errors.append(f"{root}: no images found")
    return result
