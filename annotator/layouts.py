"""Recognise the folder layout of an anomaly-detection dataset and list its images.

No Django here: the ML engine's command line uses this module too. Nothing is opened or decoded;
``scan_dataset`` only walks folders and pairs images with their masks. Checking that the files
are real images is the importer's job (``annotator.services.image_checks``).

Six layouts are understood. For mvtec, btad and folder ``root`` may be one product folder or a
folder of product folders (the product name is always the product folder's name).

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

``beside`` (masks next to their images; the folder given is one product)::

    <product>/**/<stem>.<ext>                  any nested folders
    <product>/**/<stem>_mask.<ext>             its mask (_label, _gt too; ``mask_suffix`` sets one;
                                               ``mask_ext`` a mask extension, the stem may then be
                                               the image's own)
    <product>/**/good/<stem>.<ext>             defect-free, no mask (ok/, normal/; ``good_folders``)

  An image with a mask is anomalous when its mask has a defect pixel (decided after decoding,
  ``resolve_images``), defect type ``defect``; otherwise defect-free. An image outside the
  defect-free folders without a mask is anomalous without a mask. No split is given.

``manifest`` (a CSV or JSON-lines file; its folder is the dataset root)::

    image,mask,split,defect_type,product       only image is required; paths relative to the
                                               manifest, inside its folder

  Problems name the manifest line. An empty defect_type with a mask: anomalous when the mask has
  a defect pixel; a defect type of good/ok/normal: defect-free; any other: anomalous (with or
  without a mask). An empty split is made by ``resolve_images``.

``polygons`` (LabelMe or COCO JSON annotations; ``annotator.polygon_layout``)::

    <product>/**/<stem>.<ext>                  any nested folders
    <product>/**/*.json                        LabelMe files (imagePath names the image) and/or
                                               COCO files (polygons or RLE)

  The masks are rasterised at the images' native size into ``mask_dir`` (the importer's is
  under the media root), never beside the user's files. No split is given.

Anomalous images without a mask (a photo of a defective part, nobody drew its defect yet) are
accepted in every layout that can say an image is anomalous without a mask (all but polygons,
where an image without annotation is defect-free): their ``mask_path`` is None. They are
image-level evidence (image AUROC, the image decision) until a mask is given to them
(``annotator.services.masks.save_drawn_mask``); masks without an image stay errors.

``auto`` reads a manifest file given, or a folder's own manifest.csv / manifest.jsonl; otherwise
it tries mvtec, btad and folder, then polygons, then beside. When
nothing matches, the refusal counts the images, candidate masks and folders found and names the
closest layout.

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
# Every layout, in the order ``auto`` tries them (manifest: a manifest file is given).
LAYOUTS = ("mvtec", "btad", "folder", "beside", "manifest", "polygons")
# beside: mask file name = image stem + one of these suffixes (``--mask-suffix`` sets one).
DEFAULT_MASK_SUFFIXES = ("_mask", "_label", "_gt")
# beside: images in folders of these names are defect-free and need no mask (``--good-folders``).
DEFAULT_GOOD_FOLDERS = ("good", "ok", "normal")
# Datasets without a train/test split (beside, manifest rows without one): seeded shuffle of the
# defect-free images sorted by path; this share of them is held out for test, the rest train;
# every anomalous image is a test image.
DEFAULT_SPLIT_SEED = 0
DEFAULT_TEST_SHARE = 0.2
MANIFEST_EXTENSIONS = (".csv", ".jsonl")
MANIFEST_COLUMNS = ("image", "mask", "split", "defect_type", "product")
BESIDE_DEFECT_TYPE = "defect"
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
    split: str | None  # "train" | "test"; None: not given, ``resolve_images`` makes the split
    is_anomalous: bool | None  # None: anomalous when its mask has defect pixels
    defect_type: str  # "good", "broken_large", "ok"/"ko" for BTAD ...
    image_path: Path  # absolute
    mask_path: Path | None
    where: str = ""  # manifest rows: "manifest.csv line 7", put before problems with this image


@dataclass
class ScanResult:
    layout: str  # resolved layout: mvtec | btad | folder | beside | manifest | polygons
    root: Path
    images: list[ScannedImage] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    manifest: Path | None = None
    # polygons: rasterised mask (outside root) -> the annotation file it was drawn from
    mask_sources: dict[Path, Path] = field(default_factory=dict)

    def relative(self, path: Path) -> str:
        """``path`` relative to the scanned root, with forward slashes (as stored in the database);
        a rasterised mask is named by its annotation file."""
        return self.mask_sources.get(path, path).relative_to(self.root).as_posix()

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
    if not candidates:
        from annotator.polygon_layout import is_polygon_product

        if is_polygon_product(folder):
            candidates.append("polygons")
    if len(candidates) > 1:
        raise UnknownLayoutError(
            f"{folder.name}: ambiguous layout, it looks like {' and '.join(candidates)} at once; "
            "pass the layout explicitly."
        )
    return candidates[0] if candidates else None


_EXPECTED = (
    "Expected one of these layouts, either as one product folder or as a folder of product "
    "folders:\n"
    "  mvtec:  <product>/train/good/, <product>/test/<defect>/, <product>/ground_truth/<defect>/<stem>_mask.png\n"
    "  btad:   <product>/train/ok/, <product>/test/ok/, <product>/test/ko/, <product>/ground_truth/ko/<stem>.png\n"
    "  folder: <product>/good/, <product>/anomalous/ (or defect/), <product>/masks/<stem>.png\n"
    "  beside: <product>/**/<stem>.<ext> with its mask <stem>_mask.<ext> (or _label, _gt) beside it; "
    "defect-free images without mask in good/ (ok/, normal/) folders\n"
    "  manifest: a CSV or JSON-lines file listing image,mask,split,defect_type,product (give the file)\n"
    "  polygons: <product>/**/<stem>.<ext> with LabelMe JSON files (or a COCO JSON file) in <product>/ or a folder of it"
)


def _product_folders(root: Path, layout: str | None = None) -> tuple[str, list[Path]]:
    """(layout, product folders) of ``root``; ``root`` itself when it is one product folder."""
    if not root.is_dir():
        raise UnknownLayoutError(f"{root.name} is not a folder.")
    own = _product_layout(root)
    if own == "folder" and not _names(root) & {"anomalous", "defect", "masks", "test_good"} \
            and _beside_candidates(root, DEFAULT_MASK_SUFFIXES, None):
        return "beside", [root]  # good/ beside folders of images with their masks
    if own is not None:
        return own, [root]
    found: dict[str, list[Path]] = {}
    for sub in _subdirs(root):
        kind = _product_layout(sub)
        if kind is not None:
            found.setdefault(kind, []).append(sub)
    if not found:
        if _beside_candidates(root, DEFAULT_MASK_SUFFIXES, None):
            return "beside", [root]
        raise UnknownLayoutError(f"{root.name}: unknown dataset layout. {survey(root)}\n" + _EXPECTED)
    if len(found) > 1:
        detail = "; ".join(
            f"{kind}: {', '.join(p.name for p in folders)}" for kind, folders in sorted(found.items())
        )
        raise UnknownLayoutError(
            f"{root.name}: ambiguous layout, its product folders follow different layouts ({detail})."
        )
    (kind, folders), = found.items()
    return kind, folders


def detect_layout(root: Path) -> str:
    """A layout of LAYOUTS; raises UnknownLayoutError with what was found and expected."""
    root = Path(root)
    if root.is_file():
        return "manifest"
    return _product_folders(root)[0]


def _walk(root: Path):
    """(folder, sorted non-ignored entries) for ``root`` and every folder below it, sorted."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(p for p in folder.iterdir() if not is_ignored(p))
        except OSError:
            continue
        yield folder, entries
        stack.extend(reversed([p for p in entries if p.is_dir() and not p.is_symlink()]))


def survey(root: Path) -> str:
    """What a folder holds, for a refusal: counts of images, candidate masks, folders; closest layout."""
    images = masks = folders = 0
    names = set()
    for folder, entries in _walk(root):
        for path in entries:
            if path.is_dir():
                folders += 1
                names.add(path.name.lower())
            elif is_image_file(path):
                if any(path.stem.lower().endswith(suffix) for suffix in DEFAULT_MASK_SUFFIXES):
                    masks += 1
                else:
                    images += 1
    if names & {"train", "test", "ground_truth"}:
        closest = "mvtec (or btad): train/good/, test/<defect>/, ground_truth/<defect>/"
    elif names & {"good", "anomalous", "defect", "masks"}:
        closest = "folder: good/, anomalous/, masks/"
    elif masks:
        closest = ("beside, with --mask-suffix or --mask-ext naming your masks "
                   f"(default suffixes {', '.join(DEFAULT_MASK_SUFFIXES)})")
    else:
        closest = "manifest: list the images (and masks) in a CSV and import that file"
    return (f"Found {images} image(s), {masks} candidate mask(s) (names ending in "
            f"{'/'.join(DEFAULT_MASK_SUFFIXES)}), {folders} folder(s); closest layout: {closest}.")


# --- beside ----------------------------------------------------------------------------------


def _mask_base(path: Path, suffixes, mask_ext: str | None, stems: set[str]) -> str | None:
    """The image stem (lower case) whose mask ``path`` is, or None when it is no mask."""
    stem = path.stem.lower()
    if mask_ext is not None and path.suffix.lower() != mask_ext:
        return None
    for suffix in suffixes:
        if suffix and stem.endswith(suffix.lower()) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    if mask_ext is not None and "" in suffixes and stem in stems:
        return stem
    return None


def _suffixes(mask_suffix: str | None, mask_ext: str | None) -> tuple[str, ...]:
    if mask_suffix is not None:
        return (mask_suffix,)
    return (*DEFAULT_MASK_SUFFIXES, "") if mask_ext else DEFAULT_MASK_SUFFIXES


def _normal_ext(mask_ext: str | None) -> str | None:
    return None if not mask_ext else "." + mask_ext.lower().lstrip(".")


def _beside_folder(entries: list[Path], suffixes, mask_ext: str | None):
    """(images, {image: [masks]}, masks without image) of one folder's files."""
    files = [p for p in entries if p.is_file() and is_image_file(p)]
    # With --mask-ext and no suffix, a mask shares its image's stem: an image is a file of
    # another extension with that stem.
    other_stems = {p.stem.lower() for p in files if mask_ext is None or p.suffix.lower() != mask_ext}
    masks: dict[Path, str] = {}
    for path in files:
        base = _mask_base(path, suffixes, mask_ext, other_stems)
        if base is not None:
            masks[path] = base
    images = [p for p in files if p not in masks]
    by_stem: dict[str, list[Path]] = {}
    for image in images:
        by_stem.setdefault(image.stem.lower(), []).append(image)
    paired: dict[Path, list[Path]] = {}
    orphans = []
    for mask, base in masks.items():
        owners = by_stem.get(base, [])
        if len(owners) == 1:
            paired.setdefault(owners[0], []).append(mask)
        else:
            orphans.append((mask, owners))
    return images, paired, orphans


def _beside_candidates(root: Path, suffixes, mask_ext) -> int:
    """How many masks sit beside their images anywhere under ``root``."""
    count = 0
    for _folder, entries in _walk(root):
        _images, paired, _orphans = _beside_folder(entries, suffixes, mask_ext)
        count += len(paired)
    return count


def _scan_beside(result: ScanResult, product: Path, mask_suffix, mask_ext, good_folders) -> None:
    suffixes = _suffixes(mask_suffix, mask_ext)
    good = {name.lower() for name in good_folders}
    for folder, entries in _walk(product):
        for path in entries:
            if path.is_file() and not is_image_file(path):
                result.errors.append(
                    f"{result.relative(path)}: not an image file type (expected {' '.join(IMAGE_EXTENSIONS)})"
                )
        images, paired, orphans = _beside_folder(entries, suffixes, mask_ext)
        for mask, owners in orphans:
            if owners:
                result.errors.append(f"{result.relative(mask)}: mask of several images "
                                     f"({', '.join(result.relative(o) for o in owners)})")
            else:
                result.errors.append(f"{result.relative(mask)}: mask without image (no image "
                                     f"named like it beside it)")
        in_good = bool({part.lower() for part in folder.relative_to(product).parts} & good)
        for image in images:
            masks = paired.get(image, [])
            if len(masks) > 1:
                result.errors.append(f"{result.relative(image)}: several masks found "
                                     f"({', '.join(result.relative(m) for m in masks)})")
                continue
            if masks:
                result.images.append(
                    ScannedImage(product.name, None, None, BESIDE_DEFECT_TYPE, image, masks[0]))
            elif in_good:
                result.images.append(ScannedImage(product.name, None, False, "good", image, None))
            else:  # outside the defect-free folders and without a mask: anomalous, needs a mask
                result.images.append(ScannedImage(product.name, None, True, BESIDE_DEFECT_TYPE, image, None))


# --- manifest ----------------------------------------------------------------------------------


def _manifest_rows(manifest: Path, result: ScanResult):
    """(line, row dict) of a CSV or JSON-lines manifest; problems go to ``result.errors``."""
    import csv
    import json

    name = manifest.name
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        result.errors.append(f"{name}: cannot be read ({error})")
        return []
    rows = []
    if manifest.suffix.lower() == ".jsonl":
        for line, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
            except ValueError as error:
                result.errors.append(f"{name} line {line}: not a JSON object ({error})")
                continue
            rows.append((line, row))
    else:
        reader = csv.DictReader(text.splitlines())
        header = [column.strip() for column in reader.fieldnames or []]
        if "image" not in header:
            result.errors.append(f"{name} line 1: the header must name an 'image' column "
                                 f"(columns: {', '.join(MANIFEST_COLUMNS)})")
            return []
        for row in reader:
            rows.append((reader.line_num, {(k or "").strip(): v for k, v in row.items()}))
    for line, row in rows:
        unknown = sorted(set(row) - set(MANIFEST_COLUMNS))
        if unknown:
            result.errors.append(f"{name} line {line}: unknown column(s) {', '.join(unknown)} "
                                 f"(expected {', '.join(MANIFEST_COLUMNS)})")
    return rows


def _manifest_path(value, root: Path, column: str) -> tuple[Path | None, str | None]:
    text = str(value or "").strip().replace("\\", "/")
    if not text:
        return None, None
    relative = Path(text)
    if relative.is_absolute() or ".." in relative.parts:
        return None, f"{column} {text!r} must be a path relative to the manifest, inside its folder"
    path = root / relative
    if not is_image_file(path):
        return None, f"{column} {text!r} is not an image file type (expected {' '.join(IMAGE_EXTENSIONS)})"
    if not path.is_file():
        return None, f"{column} {text!r} does not exist"
    return path, None


def _scan_manifest(result: ScanResult, manifest: Path, good_folders) -> None:
    root = result.root
    good = {name.lower() for name in good_folders}
    seen: dict[Path, int] = {}
    for line, row in _manifest_rows(manifest, result):
        where = f"{manifest.name} line {line}"
        image, problem = _manifest_path(row.get("image"), root, "image")
        if image is None:
            result.errors.append(f"{where}: {problem or 'no image path'}")
            continue
        if image in seen:
            result.errors.append(f"{where}: image {result.relative(image)} is listed already on line {seen[image]}")
            continue
        seen[image] = line
        mask, problem = _manifest_path(row.get("mask"), root, "mask")
        if problem:
            result.errors.append(f"{where}: {problem}")
            continue
        split = str(row.get("split") or "").strip().lower() or None
        if split not in (None, "train", "test"):
            result.errors.append(f"{where}: split {split!r} must be train, test or empty")
            continue
        defect_type = str(row.get("defect_type") or "").strip()
        product = str(row.get("product") or "").strip() or root.name
        if not defect_type:
            anomalous = None if mask else False
            defect_type = BESIDE_DEFECT_TYPE if mask else "good"
        else:
            anomalous = defect_type.lower() not in good
            if not anomalous:
                defect_type = "good"
        if anomalous is not False and split == "train":
            result.errors.append(f"{where}: an anomalous image cannot be a training image (split train)")
            continue
        result.images.append(ScannedImage(product, split, anomalous, defect_type, image,
                                          mask if anomalous is not False else None, where))


def find_manifest(root: Path) -> Path | None:
    """``root`` itself when it is a manifest file, or the only manifest.csv/.jsonl in it."""
    if root.is_file():
        return root
    found = [root / f"manifest{ext}" for ext in MANIFEST_EXTENSIONS if (root / f"manifest{ext}").is_file()]
    return found[0] if len(found) == 1 else None


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


def _pair_mask(result: ScanResult, image: Path, mask_dir: Path, stems: list[str],
               claimed: set[Path]) -> tuple[bool, Path | None]:
    """(usable, the one mask of ``image``). No mask is usable: an anomalous image without one is
    image-level evidence, imported as needing a mask. Several masks are an error (not usable).
    Every mask found is ``claimed``."""
    masks = _find_mask(mask_dir, stems)
    claimed.update(masks)
    if len(masks) > 1:
        result.errors.append(
            f"{result.relative(image)}: several masks found "
            f"({', '.join(result.relative(m) for m in masks)})"
        )
        return False, None
    return True, masks[0] if masks else None


def _masks_without_image(result: ScanResult, mask_dirs: list[Path], claimed: set[Path], where) -> None:
    """An error for each mask file in ``mask_dirs`` that no image claimed (it would be left out
    silently: a misnamed image or mask, or an image deleted); ``where(mask folder)`` names the
    folder(s) its image was looked for in."""
    for folder in mask_dirs:
        for path in sorted(folder.iterdir()):
            if path.is_file() and is_image_file(path) and not is_ignored(path) and path not in claimed:
                result.errors.append(f"{result.relative(path)}: mask without image (no image of its name "
                                     f"in {where(folder)})")


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
    claimed: set[Path] = set()
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
                stems = [f"{image.stem}_mask"] if mvtec else [image.stem]
                usable, mask = _pair_mask(result, image, mask_dir, stems, claimed)
                if usable:
                    result.images.append(ScannedImage(name, "test", True, defect, image, mask))
    _masks_without_image(result, _subdirs(product / "ground_truth"), claimed,
                         lambda folder: f"{result.relative(test / folder.name)}/")
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
    claimed: set[Path] = set()
    for folder_name in FOLDER_ANOMALOUS_DIRS:
        folder = product / folder_name
        if not folder.is_dir():
            continue
        for image in _images_in(folder, result):
            stems = [image.stem, f"{image.stem}_mask"]
            usable, mask = _pair_mask(result, image, mask_dir, stems, claimed)
            if usable:
                result.images.append(ScannedImage(name, "test", True, folder_name, image, mask))
    if mask_dir.is_dir():
        _masks_without_image(result, [mask_dir], claimed, lambda folder: " or ".join(
            f"{result.relative(product / name)}/" for name in FOLDER_ANOMALOUS_DIRS))


def scan_dataset(root: Path, layout: str = "auto", *, mask_suffix: str | None = None,
                 mask_ext: str | None = None, good_folders=DEFAULT_GOOD_FOLDERS,
                 mask_dir: Path | None = None) -> ScanResult:
    """Every image of the dataset at ``root`` with its split, defect type and mask.

    ``layout`` "auto" detects it (UnknownLayoutError when unknown or ambiguous). Problems with
    single files or folders (several masks, a mask without image, an unexpected file) do not raise: they are collected
    in ``errors``, one message per problem, with paths relative to ``root`` (``root`` itself by its
    name: messages reach reviewers and admins in the browser, never the server's absolute paths). ``root`` may be a
    manifest file (the manifest layout); its folder is then the dataset's root. Images of the
    beside and manifest layouts may come without split or anomaly flag: ``resolve_images``
    decides them once the masks are decoded. The polygons layout rasterises its masks into
    ``mask_dir`` (``annotator.polygon_layout.scan_polygons``).
    """
    root = Path(root).resolve()
    mask_ext = _normal_ext(mask_ext)
    if layout not in ("auto", *LAYOUTS):
        raise UnknownLayoutError(f"Unknown layout {layout!r}; expected auto, {', '.join(LAYOUTS)}.")
    if layout == "auto" and root.is_dir() and find_manifest(root) is not None:
        layout = "manifest"  # a folder holding manifest.csv (e.g. an uploaded zip) is read by it
    if root.is_file() or layout == "manifest":
        if layout not in ("auto", "manifest"):
            raise UnknownLayoutError(f"{root.name} is a file; only the manifest layout reads a file.")
        manifest = find_manifest(root)
        if manifest is None or manifest.suffix.lower() not in MANIFEST_EXTENSIONS:
            raise UnknownLayoutError(
                f"{root.name}: give the manifest file ({' or '.join(MANIFEST_EXTENSIONS)}; a folder "
                "must hold exactly one manifest.csv or manifest.jsonl)."
            )
        result = ScanResult(layout="manifest", root=manifest.parent, manifest=manifest)
        _scan_manifest(result, manifest, good_folders)
        if not result.images and not result.errors:
            result.errors.append(f"{manifest.name}: lists no images")
        return result
    if layout == "beside" or (layout == "auto" and (mask_suffix is not None or mask_ext is not None)):
        if not root.is_dir():
            raise UnknownLayoutError(f"{root.name} is not a folder.")
        resolved, products = "beside", [root]
    elif layout == "auto":
        resolved, products = _product_folders(root)
    elif layout == "polygons" and root.is_dir():
        from annotator.polygon_layout import polygon_products

        resolved, products = "polygons", polygon_products(root)
    else:
        resolved = layout
        if not root.is_dir():
            raise UnknownLayoutError(f"{root.name} is not a folder.")
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
                    f"{root.name}: no product folder in the {layout} layout found. {survey(root)}\n" + _EXPECTED
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
        elif resolved == "beside":
            _scan_beside(result, product, mask_suffix, mask_ext, good_folders)
        elif resolved == "polygons":
            from annotator.polygon_layout import scan_polygons

            scan_polygons(result, product, mask_dir)
        else:
            _scan_folder_product(result, product)
    if not result.images and not result.errors:
        result.errors.append(f"{root.name}: no images found")
    return result


# --- Decisions that need the decoded masks -------------------------------------------------------


@dataclass
class Resolution:
    """The images to keep, with split and anomaly decided, and what was left out and why."""

    images: list[ScannedImage]
    problems: list[tuple[Path, str]]  # (image or mask path, problem): the image is not kept
    duplicates: list[tuple[Path, Path]]  # (left-out copy, the image kept)
    split_made: dict | None  # {"seed", "test_share", "train", "test"} when DefectBench split


def resolve_images(scan: ScanResult, *, checksums: dict[Path, str], defect_pixels: dict[Path, int],
                   seed: int = DEFAULT_SPLIT_SEED, test_share: float = DEFAULT_TEST_SHARE) -> Resolution:
    """Decide what the folder left open, from each image's checksum and its mask's defect pixels.

    * Duplicates: an image with the content (checksum) of an earlier one of its product (scan
      order) is left out and reported, so one picture never sits in both train and test.
    * Anomaly: an image without a given flag is anomalous when its mask has defect pixels; with
      an empty mask it is defect-free (its mask dropped). An image marked anomalous whose mask
      is empty is a problem.
    * Split: images without one: anomalous ones go to test; the defect-free ones are sorted by
      path, shuffled with ``random.Random(seed)`` and ``round(n * test_share)`` of them go to
      test, the rest to train.
    """
    import random
    from dataclasses import replace

    kept: list[ScannedImage] = []
    problems: list[tuple[Path, str]] = []
    duplicates: list[tuple[Path, Path]] = []
    first: dict[tuple[str, str], Path] = {}
    for image in scan.images:
        checksum = checksums.get(image.image_path)
        if checksum is not None:
            key = (image.product, checksum)
            if key in first:
                duplicates.append((image.image_path, first[key]))
                continue
            first[key] = image.image_path
        pixels = defect_pixels.get(image.mask_path) if image.mask_path else None
        if image.is_anomalous is None:
            if pixels:
                image = replace(image, is_anomalous=True)
            else:
                image = replace(image, is_anomalous=False, defect_type="good", mask_path=None)
        elif image.is_anomalous and image.mask_path is not None and pixels == 0:
            prefix = f"{image.where}: " if image.where else ""
            problems.append((image.mask_path,
                             f"{prefix}mask is empty (no defect pixel) for an anomalous image"))
            continue
        kept.append(image)
    open_good = sorted((i for i in kept if i.split is None and not i.is_anomalous),
                       key=lambda i: scan.relative(i.image_path))
    split_made = None
    if any(i.split is None for i in kept):
        order = list(range(len(open_good)))
        random.Random(seed).shuffle(order)
        held_out = {open_good[i].image_path for i in order[: round(len(open_good) * test_share)]}
        kept = [
            image if image.split is not None else replace(
                image, split="test" if image.is_anomalous or image.image_path in held_out else "train")
            for image in kept
        ]
        split_made = {"seed": seed, "test_share": test_share,
                      "train": len(open_good) - len(held_out), "test_good": len(held_out)}
    return Resolution(kept, problems, duplicates, split_made)
