"""Import a dataset folder (or an uploaded zip) into the database, all or nothing.

Rules a user notices:

* Only folders inside ``settings.DEFECTBENCH_DATA_ROOTS`` are accepted (after resolving symlinks
  and ``..``); every image and mask must resolve inside them too. Images are referenced in place:
  ``Dataset.root`` is the resolved folder given, ``Image.path`` / ``Image.mask_path`` are relative
  to it with forward slashes. Nothing is copied.
* Every file is checked before anything is written (readable and fully decodable, below the
  pixel limit, a mask of the same size that a mask rule of ``inference.engine.pixels`` reads
  and, for an anomalous image, that is not empty). An anomalous image without a mask is
  imported with an empty ``mask_path`` and counted "anomalous without mask (needs a mask)".
  Any problem: nothing is imported and
  ``ImportFailed`` lists one message per problem.
* ``skip_invalid``: every valid image is imported instead, and the problems (CSV ``path,problem``)
  are kept in ``Dataset.problem_report`` (shown in the admin). Images with the content of another
  image of their product are imported once, in either mode, and reported (and listed there too).
* Anomaly and split left open by the layout (beside, manifest) are decided by
  ``layouts.resolve_images``: anomalous when the mask has a defect pixel, a seeded split of the
  defect-free images (seed, test share and the beside/mask options are kept in
  ``Dataset.import_options`` for re-imports). The summary reports the split made, how many masks
  each mask rule converted, and JPEG masks (lossy edges).
* Everything is written in one transaction. Re-importing the same folder is idempotent: the
  dataset is found by its root, unchanged images are left alone (reported "unchanged"), images
  whose checksum, size, split, defect type or mask changed are updated (reported "updated"), new
  ones added. Images that vanished from the folder are kept (with their labels) and counted as
  "missing". A file whose checksum matches the database is not decoded again. An explicit
  ``name`` renames an already imported dataset.
* The dataset name defaults to the folder name (for a zip upload: the zip file's name). Names are
  unique: a name already used by another dataset is an error asking for another name (no silent
  suffix, so a user never labels "bottle-2" thinking it is "bottle").
* Product kind (object on a backdrop vs. texture filling the frame): the ``product_kinds``
  argument wins; otherwise, for a product created by this import, an optional
  ``defectbench.json`` in the dataset root (``{"products": {"fabric": {"kind": "texture"}}}``,
  written by the demo generator); otherwise the five MVTec AD texture categories (carpet, grid,
  leather, tile, wood) are textures and everything else an object. A product's kind changed
  later in the admin is kept on re-import unless ``product_kinds`` names it.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
import stat
import uuid
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from django.conf import settings
from django.db import IntegrityError, transaction

from annotator.layouts import (
    DEFAULT_GOOD_FOLDERS,
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_SHARE,
    LAYOUTS,
    MANIFEST_EXTENSIONS,
    ScanResult,
    UnknownLayoutError,
    resolve_images,
    scan_dataset,
)
from annotator.paths import data_roots, inside_data_roots, is_drawn_mask, shown_path  # noqa: F401 (data_roots re-exported)
from annotator.models import Dataset, Image, Product, rebuild_annotator_progress
from annotator.services.image_checks import CheckedFile, check_many
from inference.engine.pixels import MASK_RULES, MASK_THRESHOLD
from annotator.polygon_masks import masks_dir

Progress = Callable[[int, int], None]
logger = logging.getLogger(__name__)

CONFIG_FILE = "defectbench.json"
MVTEC_TEXTURES = frozenset({"carpet", "grid", "leather", "tile", "wood"})
# Zip archives: above this unpacked size, a compression ratio above the limit is refused as a
# probable zip bomb (real image datasets compress about 1:1; PNG and JPEG are compressed already).
ZIP_RATIO_MIN_BYTES = 10 * 1024**2
ZIP_MAX_RATIO = 100
_CHUNK = 1024**2


class ImportFailed(Exception):
    """Nothing was imported; ``errors`` has one message per problem."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.errors)
        head = f"Nothing was imported ({count} problem{'s' if count != 1 else ''}):"
        return "\n".join([head, *self.errors])


def needs_mask_text(n: int) -> str:
    """How every summary (import, admin, product pages) names anomalous images without a mask."""
    return f"{n} anomalous without mask (needs a mask)"


@dataclass
class ProductSummary:
    name: str
    kind: str
    normal_label: str  # "good", or "ok" for BTAD
    counts: Counter = field(default_factory=Counter)  # (split, defect_type) -> images
    anomalous: int = 0
    with_mask: int = 0  # of the anomalous images; the others are image-level evidence, needing a mask
    added: int = 0
    updated: int = 0
    unchanged: int = 0

    def line(self) -> str:
        normal = self.normal_label
        changes = f"{self.added} added, "
        if self.updated:
            changes += f"{self.updated} updated, "
        changes += f"{self.unchanged} unchanged"
        without = self.anomalous - self.with_mask
        needing = f", {needs_mask_text(without)}" if without else ""
        return (
            f"{self.name}: {self.counts[('train', normal)]} train/{normal}, "
            f"{self.counts[('test', normal)]} test/{normal}, {self.anomalous} anomalous "
            f"({self.with_mask} with mask{needing}) — {changes}"
        )


@dataclass
class ImportReport:
    dataset: Dataset
    created: bool
    layout: str
    counts: dict[tuple[str, str, str], int]  # (product, split, defect_type) -> images
    added: int
    updated: int
    unchanged: int
    missing: int  # images in the database whose file is gone (kept)
    products: dict[str, ProductSummary]
    errors: list[str] = field(default_factory=list)  # always empty: problems raise ImportFailed
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, problem) left out
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (left-out copy, kept image)
    mask_rules: Counter = field(default_factory=Counter)  # rule -> masks it was applied to
    lossy_masks: list[str] = field(default_factory=list)  # JPEG masks
    split_made: dict | None = None
    # Other datasets that already hold images with the same content: {dataset name: images}.
    in_other_datasets: dict[str, int] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        state = "created" if self.created else "already imported"
        lines = [f"Dataset '{self.dataset.name}' ({self.layout}, {state}) at {shown_path(self.dataset.root)}"]
        lines += [summary.line() for summary in self.products.values()]
        if self.split_made:
            made = self.split_made
            lines.append(
                f"split made by DefectBench (no split given): seed {made['seed']}, "
                f"{made['test_share']:.0%} of the defect-free images held out for test "
                f"({made['test_good']} test, {made['train']} train), every anomalous image in test"
            )
        converted = {rule: n for rule, n in sorted(self.mask_rules.items()) if rule != "binary"}
        if converted:
            lines.append("masks converted to binary: " + ", ".join(
                f"{n} by rule '{rule}' ({MASK_RULES[rule].split(':')[0]})" for rule, n in converted.items()))
        for other, n in sorted(self.in_other_datasets.items()):
            lines.append(f"warning: {n} of these images are already in dataset '{other}' (same content); "
                         "labels and benchmarks of the two datasets are kept apart")
        if self.lossy_masks:
            lines.append(f"warning: {len(self.lossy_masks)} JPEG mask(s), whose edges are lossy "
                         f"(e.g. {self.lossy_masks[0]}); PNG masks are exact")
        if self.duplicates:
            lines.append(f"{len(self.duplicates)} duplicate image(s) imported once (same content): "
                         + "; ".join(f"{copy} = {kept}" for copy, kept in self.duplicates[:10])
                         + (" ..." if len(self.duplicates) > 10 else ""))
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s), files left out (problem report kept "
                         "with the dataset): " + "; ".join(f"{path}: {problem}" for path, problem in self.problems[:10])
                         + (" ..." if len(self.problems) > 10 else ""))
        if len(self.products) > 1:
            total = f"{self.added} added, "
            if self.updated:
                total += f"{self.updated} updated, "
            lines.append(f"total: {total}{self.unchanged} unchanged")
        if self.missing:
            lines.append(
                f"{self.missing} image(s) in the database are no longer in the folder "
                "(kept with their labels)"
            )
        return lines

    def __str__(self) -> str:
        return "\n".join(self.summary_lines())


# --- Paths --------------------------------------------------------------------------------


def resolve_dataset_root(path) -> Path:
    """``path`` with symlinks and ``..`` resolved; ImportFailed unless it is an allowed folder.

    Reviewers read these messages (a batch inspection's folder): they name the path as it was
    given, never where it resolves to nor the roots (those go to the server log)."""
    given = Path(path).expanduser()
    resolved = given.resolve()
    if not inside_data_roots(resolved):
        logger.warning("Refused %s: it resolves to %s, outside the data roots %s", given, resolved,
                       [str(root) for root in data_roots()])
        raise ImportFailed([f"{path} is outside the allowed data roots (DEFECTBENCH_DATA_ROOTS)"])
    if not resolved.exists():
        raise ImportFailed([f"{path} does not exist"])
    if resolved.is_file() and resolved.suffix.lower() in MANIFEST_EXTENSIONS:
        return resolved  # a manifest; its folder is the dataset's root
    if not resolved.is_dir():
        raise ImportFailed([f"{path} is not a folder (nor a manifest: {' or '.join(MANIFEST_EXTENSIONS)})"])
    return resolved


# --- Product kinds ------------------------------------------------------------------------


def _declared_kinds(root: Path) -> dict[str, str]:
    config = root / CONFIG_FILE
    if not config.is_file():
        return {}
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        products = data.get("products", {})
        kinds = {name: spec["kind"] if isinstance(spec, dict) else spec for name, spec in products.items()}
    except (ValueError, AttributeError, KeyError, TypeError) as error:
        raise ImportFailed([f"{CONFIG_FILE}: not understood ({error}); expected "
                            '{"products": {"<product>": {"kind": "object" or "texture"}}}'])
    bad = {name: kind for name, kind in kinds.items() if kind not in Product.Kind.values}
    if bad:
        raise ImportFailed([f"{CONFIG_FILE}: unknown kind {kind!r} for product {name!r} "
                            f"(expected {' or '.join(Product.Kind.values)})" for name, kind in bad.items()])
    return kinds


def _default_kind(product: str) -> str:
    return Product.Kind.TEXTURE if product.lower() in MVTEC_TEXTURES else Product.Kind.OBJECT


# --- Import -------------------------------------------------------------------------------


def _check_name(name: str, root: Path) -> None:
    if not name.strip():
        raise ImportFailed(["The dataset name must not be empty."])
    if len(name) > Dataset._meta.get_field("name").max_length:
        raise ImportFailed([f"The dataset name {name!r} is too long."])
    clash = Dataset.objects.filter(name=name).exclude(root=str(root)).first()
    if clash is not None:
        raise ImportFailed(
            [f"A dataset named '{name}' already exists (at {shown_path(clash.root)}); choose another name."]
        )


class ImportCancelled(Exception):
    """The import was cancelled while files were checked; nothing was written."""


def _problem(message: str) -> tuple[str, str]:
    """(path, problem) of a message "path: problem" (the form of every check message)."""
    path, _, problem = message.partition(": ")
    return (path, problem) if problem else ("", message)


def _validate(scan: ScanResult, known: dict[str, CheckedFile], progress: Progress | None,
              threshold: float):
    """(valid images with their checked file, masks per rule, lossy masks, errors).

    Images with a known checksum are not decoded again.
    """
    errors = list(scan.errors)
    outside = set()
    for image in scan.images:
        for path in (image.image_path, scan.mask_sources.get(image.mask_path, image.mask_path)):
            if path is not None and not inside_data_roots(path):
                outside.add(image.image_path)
                logger.warning("Refused %s: it resolves to %s, outside the data roots", path, path.resolve())
                errors.append(f"{scan.relative(path)}: a link to a file outside the allowed data roots")
    jobs = [
        (
            image.image_path,
            image.mask_path,
            f"{image.where}: {scan.relative(image.image_path)}" if image.where else scan.relative(image.image_path),
            scan.relative(image.mask_path) if image.mask_path else None,
        )
        for image in scan.images
    ]
    results = check_many(
        jobs,
        max_pixels=settings.DEFECTBENCH_MAX_IMAGE_PIXELS,
        progress=progress,
        known={str(image.image_path): known.get(scan.relative(image.image_path)) for image in scan.images},
        threshold=threshold,
    )
    valid = []
    for image, result in zip(scan.images, results):
        errors.extend(result.errors)
        if result.errors or image.image_path in outside:
            continue
        valid.append((image, result))
    return valid, errors


def import_dataset(path, **options) -> ImportReport:
    """``_import_dataset``; when the first import of a folder fails, the masks it rasterised from
    annotation files (polygons layout, under the media root) are removed again."""
    root = resolve_dataset_root(path)
    dataset_root = root.parent if root.is_file() else root
    first = not Dataset.objects.filter(root=str(dataset_root)).exists()
    try:
        return _import_dataset(path, **options)
    except BaseException:
        if first:
            shutil.rmtree(masks_dir(settings.MEDIA_ROOT, dataset_root), ignore_errors=True)
        raise


def _import_dataset(
    path,
    *,
    layout: str = "auto",
    name: str | None = None,
    created_by=None,
    product_kinds: dict | None = None,
    progress: Progress | None = None,
    skip_invalid: bool = False,
    mask_suffix: str | None = None,
    mask_ext: str | None = None,
    good_folders: list[str] | None = None,
    mask_threshold: float | None = None,
    split_seed: int | None = None,
    test_share: float | None = None,
) -> ImportReport:
    """Import the dataset folder (or manifest file) ``path`` (see the module docstring);
    ImportFailed on any problem, unless ``skip_invalid``: then every valid image is imported and
    the problems are kept in ``Dataset.problem_report``.

    ``progress(done, total)`` is called while files are checked (the slow part); it may raise
    ImportCancelled to stop (nothing is written then). Options left None take the values of the
    dataset's earlier import, else the defaults.
    """
    root = resolve_dataset_root(path)
    if layout not in ("auto", *LAYOUTS):
        raise ImportFailed([f"Unknown layout {layout!r}; expected auto, {', '.join(LAYOUTS)}."])
    dataset_root = root.parent if root.is_file() else root
    existing = Dataset.objects.filter(root=str(dataset_root)).first()
    before = dict(existing.import_options) if existing else {}
    given = {"mask_suffix": mask_suffix, "mask_ext": mask_ext,
             "good_folders": list(good_folders) if good_folders else None,
             "mask_threshold": mask_threshold, "split_seed": split_seed, "test_share": test_share}
    options = {key: value if value is not None else before.get(key) for key, value in given.items()}
    threshold = options["mask_threshold"] if options["mask_threshold"] is not None else MASK_THRESHOLD
    seed = options["split_seed"] if options["split_seed"] is not None else DEFAULT_SPLIT_SEED
    share = options["test_share"] if options["test_share"] is not None else DEFAULT_TEST_SHARE
    bad = []
    if not 0.0 < threshold <= 1.0:
        bad.append(f"mask threshold {threshold} must be above 0 and at most 1 (a share of full scale)")
    if not 0.0 <= share < 1.0:
        bad.append(f"test share {share} must be at least 0 and below 1")
    if bad:
        raise ImportFailed(bad)
    try:
        scan = scan_dataset(root, layout, mask_suffix=options["mask_suffix"], mask_ext=options["mask_ext"],
                            good_folders=options["good_folders"] or DEFAULT_GOOD_FOLDERS,
                            mask_dir=masks_dir(settings.MEDIA_ROOT, dataset_root))
    except UnknownLayoutError as error:
        raise ImportFailed([str(error)]) from None
    root = scan.root
    name = name or (existing.name if existing else root.name)
    _check_name(name, root)
    kinds = {**_declared_kinds(root)}
    explicit = dict(product_kinds or {})
    bad = [f"unknown kind {kind!r} for product {product!r}" for product, kind in explicit.items()
           if kind not in Product.Kind.values]
    if bad:
        raise ImportFailed(bad)

    known: dict[str, CheckedFile] = {}
    if existing is not None:
        for rel, width, height, checksum in Image.objects.filter(product__dataset=existing).values_list(
            "path", "width", "height", "checksum"
        ):
            known[rel] = CheckedFile(width, height, checksum)
    valid, errors = _validate(scan, known, progress, threshold)
    checked = {image.image_path: result for image, result in valid}
    resolution = resolve_images(
        ScanResult(layout=scan.layout, root=scan.root, images=[image for image, _ in valid]),
        checksums={path: result.image.checksum for path, result in checked.items()},
        defect_pixels={image.mask_path: result.mask.defect_pixels for image, result in valid if result.mask},
        seed=seed, test_share=share,
    )
    errors += [f"{scan.relative(path)}: {problem}" for path, problem in resolution.problems]
    if errors and not skip_invalid:
        raise ImportFailed(errors)
    if not resolution.images:
        raise ImportFailed([*errors, f"{shown_path(root)}: no valid image to import"])
    kept = [(image, checked[image.image_path]) for image in resolution.images]
    mask_rules = Counter(result.mask.rule for image, result in kept if image.mask_path and result.mask)
    lossy = [scan.relative(image.mask_path) for image, result in kept
             if image.mask_path and result.mask and result.mask.lossy]
    problems = [_problem(error) for error in errors]
    duplicates = [(scan.relative(copy), scan.relative(original)) for copy, original in resolution.duplicates]
    report_rows = problems + [(copy, f"duplicate of {original} (same content); imported once")
                              for copy, original in duplicates]
    stored_options = {key: value for key, value in options.items() if value is not None}

    try:
        with transaction.atomic():
            report = _write(scan, kept, root, name, created_by, kinds, explicit,
                            stored_options, _csv(report_rows))
    except IntegrityError as error:
        raise ImportFailed([f"The database refused the import ({error}); was {shown_path(root)} imported "
                            "at the same time by someone else? Try again."]) from None
    report.problems = problems
    report.duplicates = duplicates
    report.mask_rules = mask_rules
    report.lossy_masks = lossy
    report.split_made = resolution.split_made
    report.in_other_datasets = _in_other_datasets(report.dataset, [result.image.checksum for _, result in kept])
    return report


def _in_other_datasets(dataset: Dataset, checksums: list[str]) -> dict[str, int]:
    """How many of ``checksums`` each other dataset already holds (importing a folder twice)."""
    found: Counter = Counter()
    unique = sorted(set(checksums))
    for start in range(0, len(unique), 1000):
        rows = (Image.objects.filter(checksum__in=unique[start:start + 1000]).exclude(product__dataset=dataset)
                .values_list("product__dataset__name", "checksum").distinct())
        found.update(name for name, _ in rows)
    return dict(found)


def _csv(rows: list[tuple[str, str]]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "problem"])
    writer.writerows(rows)
    return out.getvalue()


def _labellable(values: dict) -> bool:
    return values["split"] == Image.Split.TEST and values["is_anomalous"] and bool(values["mask_path"])


def _write(scan, kept, root, name, created_by, kinds, explicit, options, problem_report) -> ImportReport:
    dataset = Dataset.objects.select_for_update().filter(root=str(root)).first()
    created = dataset is None
    if created:
        dataset = Dataset.objects.create(name=name, layout=scan.layout, root=str(root), created_by=created_by,
                                         import_options=options, problem_report=problem_report)
    else:
        dataset.name = name
        dataset.layout = scan.layout
        dataset.import_options = options
        dataset.problem_report = problem_report
        dataset.save(update_fields=["name", "layout", "import_options", "problem_report"])

    products = {product.name: product for product in dataset.products.all()}
    normal_label = "ok" if scan.layout == "btad" else "good"
    summaries: dict[str, ProductSummary] = {}
    for product_name in sorted({image.product for image, _ in kept}):
        product = products.get(product_name)
        if product is None:
            kind = explicit.get(product_name) or kinds.get(product_name) or _default_kind(product_name)
            product = Product.objects.create(dataset=dataset, name=product_name, kind=kind)
            products[product_name] = product
        elif product_name in explicit and product.kind != explicit[product_name]:
            product.kind = explicit[product_name]
            product.save(update_fields=["kind"])
        summaries[product_name] = ProductSummary(product_name, product.kind, normal_label)

    # Images added from inspection feedback live under the media root, not in the folder scanned:
    # never "missing" from it, never updated by it.
    current = {
        (row.product_id, row.path): row
        for row in Image.objects.filter(product__dataset=dataset, origin=Image.Origin.DATASET)
    }
    seen = set()
    labellable_moved = False  # an existing image gained or lost a mask: the queue's counters follow
    to_add, to_update = [], []
    counts: Counter = Counter()
    for scanned, result in kept:
        info = result.image
        product = products[scanned.product]
        summary = summaries[scanned.product]
        rel = scan.relative(scanned.image_path)
        values = {
            "split": scanned.split,
            "is_anomalous": scanned.is_anomalous,
            "defect_type": scanned.defect_type,
            "mask_path": scan.relative(scanned.mask_path) if scanned.mask_path else "",
            "width": info.width,
            "height": info.height,
            "checksum": info.checksum,
        }
        counts[(scanned.product, scanned.split, scanned.defect_type)] += 1
        summary.counts[(scanned.split, scanned.defect_type)] += 1
        if is_drawn_mask(values["mask_path"]):
            raise ImportFailed([f"{values['mask_path']}: a mask path DefectBench keeps for masks drawn in its mask "
                                "editor; rename that folder"])
        key = (product.pk, rel)
        seen.add(key)
        row = current.get(key)
        if row is not None and not values["mask_path"] and scanned.is_anomalous and is_drawn_mask(row.mask_path):
            # A mask drawn in the mask editor for an image that came without one: the folder still
            # has none, so the drawn one stays (it is the image's newest mask revision).
            values["mask_path"] = row.mask_path
        if scanned.is_anomalous:
            summary.anomalous += 1
            summary.with_mask += bool(values["mask_path"])
        if row is not None and row.is_labellable != _labellable(values):
            labellable_moved = True
        if row is None:
            to_add.append(Image(product=product, path=rel, **values))
            summary.added += 1
        elif all(getattr(row, field_name) == value for field_name, value in values.items()):
            summary.unchanged += 1
        else:
            for field_name, value in values.items():
                setattr(row, field_name, value)
            to_update.append(row)
            summary.updated += 1
    Image.objects.bulk_create(to_add, batch_size=500)
    if to_update:
        Image.objects.bulk_update(
            to_update,
            ["split", "is_anomalous", "defect_type", "mask_path", "width", "height", "checksum"],
            batch_size=500,
        )
    if labellable_moved:
        rebuild_annotator_progress(dataset)
    if to_add or labellable_moved:
        product_ids = [product.pk for product in products.values()]

        def forget():
            from annotator.services.queue import forget_cached_progress

            forget_cached_progress(product_ids)

        transaction.on_commit(forget)
    return ImportReport(
        dataset=dataset,
        created=created,
        layout=scan.layout,
        counts=dict(counts),
        added=len(to_add),
        updated=len(to_update),
        unchanged=sum(summary.unchanged for summary in summaries.values()),
        missing=len(set(current) - seen),
        products=summaries,
    )


# --- Zip upload ---------------------------------------------------------------------------


def _safe_folder_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-_")
    return cleaned[:100] or "dataset"


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _plan_extraction(archive: zipfile.ZipFile, target: Path) -> list[tuple[zipfile.ZipInfo, Path]]:
    """(entry, destination) for each file to extract; ImportFailed listing every unsafe entry."""
    errors = []
    plan = []
    total = compressed = 0
    target = target.resolve()
    limit = settings.DEFECTBENCH_MAX_UNPACKED_BYTES
    for info in archive.infolist():
        entry = info.filename
        normalised = entry.replace("\\", "/")
        if normalised.startswith("__MACOSX/"):
            continue
        if normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised):
            errors.append(f"{entry}: absolute path in the zip; refused")
            continue
        if ".." in PurePosixPath(normalised).parts:
            errors.append(f"{entry}: path escapes the dataset folder ('..'); refused")
            continue
        if _is_symlink(info):
            errors.append(f"{entry}: symbolic link in the zip; refused")
            continue
        destination = (target / normalised).resolve()
        if not destination.is_relative_to(target):
            errors.append(f"{entry}: path escapes the dataset folder; refused")
            continue
        if info.is_dir():
            continue
        total += info.file_size
        compressed += info.compress_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= ZIP_RATIO_MIN_BYTES and ratio > ZIP_MAX_RATIO:
            errors.append(
                f"{entry}: compression ratio {ratio:,.0f}:1 is suspicious; refused as a possible zip bomb"
            )
        plan.append((info, destination))
    if total > limit:
        errors.append(
            f"the zip unpacks to {total:,} bytes, more than the limit of {limit:,} bytes "
            "(DEFECTBENCH_MAX_UNPACKED_BYTES)"
        )
    elif total >= ZIP_RATIO_MIN_BYTES and total / max(compressed, 1) > ZIP_MAX_RATIO:
        errors.append(
            f"the zip's compression ratio {total / max(compressed, 1):,.0f}:1 is suspicious; "
            "refused as a possible zip bomb"
        )
    if errors:
        raise ImportFailed(errors)
    return plan


def _extract(archive: zipfile.ZipFile, plan, target: Path, progress: Progress | None = None) -> None:
    """Extract ``plan``, counting real bytes (declared sizes may lie)."""
    limit = settings.DEFECTBENCH_MAX_UNPACKED_BYTES
    written = 0
    target.mkdir(parents=True, exist_ok=True)
    for number, (info, destination) in enumerate(plan):
        if progress:
            progress(number, len(plan))
        destination.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as source, open(destination, "wb") as sink:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise ImportFailed(
                        [f"the zip unpacks to more than the limit of {limit:,} bytes; refused"]
                    )
                sink.write(chunk)


def save_upload(uploaded_file) -> tuple[Path, str]:
    """Stream an uploaded zip to ``MEDIA_ROOT/uploads/<uuid>.zip``; (its path, the file's name).

    ImportFailed (nothing kept) when it is above DEFECTBENCH_MAX_UPLOAD_BYTES.
    """
    file_name = Path(getattr(uploaded_file, "name", "") or "upload.zip").name
    max_upload = settings.DEFECTBENCH_MAX_UPLOAD_BYTES
    size = getattr(uploaded_file, "size", None)
    if size is not None and size > max_upload:
        raise ImportFailed([f"{file_name}: {size:,} bytes, more than the upload limit of {max_upload:,} bytes"])
    zip_path = Path(settings.MEDIA_ROOT) / "uploads" / f"{uuid.uuid4().hex}.zip"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        received = 0
        with open(zip_path, "wb") as sink:
            chunks = uploaded_file.chunks() if hasattr(uploaded_file, "chunks") else iter(
                lambda: uploaded_file.read(_CHUNK), b""
            )
            for chunk in chunks:
                received += len(chunk)
                if received > max_upload:
                    raise ImportFailed([f"{file_name}: more than the upload limit of {max_upload:,} bytes"])
                sink.write(chunk)
    except BaseException:
        zip_path.unlink(missing_ok=True)
        raise
    return zip_path, file_name


def new_unpack_folder() -> Path:
    """A fresh folder for one zip's files: ``MEDIA_ROOT/datasets/<uuid>``."""
    return Path(settings.MEDIA_ROOT) / "datasets" / uuid.uuid4().hex


def dataset_unpacked_in(folder) -> Dataset | None:
    """The dataset imported from a zip unpacked into ``folder``, if that import committed."""
    return Dataset.objects.filter(root__startswith=str(folder).rstrip("/") + "/").first() if folder else None


def discard_unpacked(folder) -> None:
    """Delete a folder a zip was unpacked into; only ever one directly under ``MEDIA_ROOT/datasets``
    (never a folder of the data roots outside it, nor through a symlink) that no dataset uses."""
    if not folder:
        return
    folder = Path(folder)
    unpacked = (Path(settings.MEDIA_ROOT) / "datasets").resolve()
    if (folder.is_dir() and not folder.is_symlink() and folder.resolve().parent == unpacked
            and dataset_unpacked_in(folder) is None):
        shutil.rmtree(folder, ignore_errors=True)


def check_upload_name(name: str) -> None:
    if Dataset.objects.filter(name=name).exists():
        existing = Dataset.objects.get(name=name)
        raise ImportFailed(
            [f"A dataset named '{name}' already exists (at {shown_path(existing.root)}); choose another name."]
        )


def import_saved_zip(
    zip_path: Path,
    file_name: str,
    *,
    layout: str = "auto",
    name: str | None = None,
    created_by=None,
    progress: Progress | None = None,
    stage: Callable[[str], None] | None = None,
    skip_invalid: bool = False,
    unpack_to: Path | None = None,
) -> ImportReport:
    """Import a zip saved by ``save_upload`` (see ``import_zip``); the zip is left in place.

    ``stage(name)`` is told when unpacking and checking start; ``progress(done, total)`` counts
    the unpacked files, then the checked images, and may raise ImportCancelled. ``unpack_to``
    (default: ``new_unpack_folder()``) is where the zip is unpacked, removed again on failure.
    """
    name = (name or "").strip() or Path(file_name).stem or "upload"
    if layout not in ("auto", *LAYOUTS):
        raise ImportFailed([f"Unknown layout {layout!r}; expected auto, {', '.join(LAYOUTS)}."])
    check_upload_name(name)
    extracted = unpack_to or new_unpack_folder()
    try:
        target = extracted / _safe_folder_name(name)
        try:
            with zipfile.ZipFile(zip_path) as archive:
                plan = _plan_extraction(archive, target)
                if not plan:
                    raise ImportFailed([f"{file_name}: the zip is empty"])
                if stage:
                    stage("unpacking")
                _extract(archive, plan, target, progress)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
            raise ImportFailed([f"{file_name}: not a readable zip file ({error})"]) from None
        except NotImplementedError as error:  # e.g. an unsupported compression method
            raise ImportFailed([f"{file_name}: {error}"]) from None
        if stage:
            stage("checking images")
        return import_dataset(target, layout=layout, name=name, created_by=created_by, progress=progress,
                              skip_invalid=skip_invalid)
    except BaseException:
        shutil.rmtree(extracted, ignore_errors=True)
        raise


def import_zip(
    uploaded_file,
    *,
    layout: str = "auto",
    name: str | None = None,
    created_by=None,
    progress: Progress | None = None,
    skip_invalid: bool = False,
) -> ImportReport:
    """Import a dataset uploaded as a zip file (a Django UploadedFile or any file object with a name).

    The zip is streamed to ``MEDIA_ROOT/uploads/<uuid>.zip`` (removed afterwards), checked entry
    by entry (no absolute paths, ``..`` or symlinks; unpacked size and compression ratio
    bounded), extracted to ``MEDIA_ROOT/datasets/<uuid>/<name>/`` and imported from there; the
    zip may hold the product folders or a single product's train/test folders. On any failure
    the extracted folder is deleted and nothing is written to the database.
    """
    file_name = Path(getattr(uploaded_file, "name", "") or "upload.zip").name
    name = (name or "").strip() or Path(file_name).stem or "upload"
    if layout not in ("auto", *LAYOUTS):
        raise ImportFailed([f"Unknown layout {layout!r}; expected auto, {', '.join(LAYOUTS)}."])
    max_upload = settings.DEFECTBENCH_MAX_UPLOAD_BYTES
    size = getattr(uploaded_file, "size", None)
    if size is not None and size > max_upload:
        raise ImportFailed([f"{file_name}: {size:,} bytes, more than the upload limit of {max_upload:,} bytes"])
    check_upload_name(name)
    zip_path, file_name = save_upload(uploaded_file)
    try:
        return import_saved_zip(zip_path, file_name, layout=layout, name=name, created_by=created_by,
                                progress=progress, skip_invalid=skip_invalid)
    finally:
        zip_path.unlink(missing_ok=True)
