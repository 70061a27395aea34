"""Reviewers' feedback on inspection verdicts: marks, the images they add to a dataset, the rates.

* :func:`mark` appends an ``InspectionFeedback`` row (correct, false alarm, missed defect; an
  optional note and an optional outline of the defect drawn over the inspected image, stored as a
  binary PNG under the media root). A newer mark of a verdict supersedes the older one for the
  rates; both rows are kept.
* :func:`add_to_dataset` copies a marked image into its product's dataset, as the mark says it is:

  - defect-free (a false alarm, or a "good" verdict marked correct): a **test/good** image. Test,
    not train: an image picked *because* the model erred on it is not a sample of normal
    production, and in the training set the next model would learn it as normal, so no run would
    measure whether it still raises the alarm. On the test side it feeds what the defect-free
    test images feed (the validation part that fits the normal-based thresholds, and the measured
    false-alarm rate).
  - defective (a missed defect, or a "defective" verdict marked correct): an anomalous **test**
    image, with the reviewer's outline as its mask when one was drawn; without one it is
    image-level evidence only. The model's own predicted mask is never used as ground truth: a
    run would then score the model against itself.

  The file copied is the picture the inspection kept (the image at the model's input size, the
  one the outline was drawn on), into ``annotator.paths.added_images_root`` (under the media
  root, inside the data roots; never the user's dataset folder). The ``Image`` row is checked as
  an import checks its files, and enters the labelling queue like an imported anomalous image.
* Rates per deployment (:func:`deployment_rates`), from ``DeploymentTally`` rows kept as verdicts
  and marks are written (a few rows per deployment, at any number of images):

  - **false-alarm rate** = verdicts called *defective* whose newest mark is "false alarm" /
    verdicts called *defective* that have a mark;
  - **miss rate** = verdicts called *good* whose newest mark is "missed defect" / verdicts called
    *good* that have a mark.

  Each with a 95 % **Wilson score** interval (``scipy.stats.binomtest(...).proportion_ci(method=
  "wilson")``): unlike the normal approximation it stays inside [0, 1] and is not degenerate at
  0 or n errors, and it is less conservative than Clopper-Pearson at the small counts a review
  gives. Reviewed verdicts are those a reviewer chose to mark, not a random sample: the rates
  describe the reviewed images.
"""
from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F

from annotator.models import Image
from annotator.paths import added_images_root, inside_data_roots
from inference.models import (
    DatasetAddition, DeploymentTally, FeedbackKind, InspectionFeedback, InspectionVerdict,
)

OUTLINES_FOLDER = "inspection-outlines"
ADDED_FOLDER = "inspected"  # Image.path prefix of an added image, inside its product's added-images root
MAX_OUTLINE_POINTS = 1000
MAX_NOTE = 500
CONFIDENCE = 0.95


class FeedbackRefused(Exception):
    """A mark or an addition that cannot be made; ``messages`` say why. Nothing was changed."""

    def __init__(self, *messages: str):
        super().__init__(" ".join(messages))
        self.messages = list(messages)


def is_defective(verdict_defective: bool, kind: str) -> bool:
    """What the image is, by its newest mark: the verdict when it was correct, its opposite otherwise."""
    return verdict_defective if kind == FeedbackKind.CORRECT else not verdict_defective


# ---- counts -----------------------------------------------------------------------------------------

def _bump(deployment_id: int, defective: bool, kind: str, delta: int) -> None:
    row, _ = DeploymentTally.objects.get_or_create(deployment_id=deployment_id, defective=defective, kind=kind)
    DeploymentTally.objects.filter(pk=row.pk).update(count=F("count") + delta)


def count_inspected(deployment_id: int, verdicts) -> None:
    """Count newly written verdicts (``deploy.record_verdicts``, in its transaction)."""
    defective = sum(1 for v in verdicts if v.defective)
    if defective:
        _bump(deployment_id, True, "", defective)
    if len(verdicts) - defective:
        _bump(deployment_id, False, "", len(verdicts) - defective)


# ---- marks ------------------------------------------------------------------------------------------

def latest_feedback(verdict_ids) -> dict[int, InspectionFeedback]:
    """The newest mark of each of ``verdict_ids`` (a page of them: one query)."""
    found: dict[int, InspectionFeedback] = {}
    rows = (InspectionFeedback.objects.filter(verdict_id__in=list(verdict_ids))
            .order_by("verdict_id", "-marked_at", "-id"))
    for row in rows:
        found.setdefault(row.verdict_id, row)
    return found


def _check_kind(verdict: InspectionVerdict, kind: str) -> None:
    if kind not in FeedbackKind.values:
        raise FeedbackRefused(f"Unknown mark {kind!r}; expected one of {', '.join(FeedbackKind.values)}.")
    if kind == FeedbackKind.FALSE_ALARM and not verdict.defective:
        raise FeedbackRefused(f"{verdict.name} was called good: a false alarm is a 'defective' verdict on a "
                              "defect-free image. Mark it correct, or missed defect.")
    if kind == FeedbackKind.MISSED_DEFECT and verdict.defective:
        raise FeedbackRefused(f"{verdict.name} was called defective: a missed defect is a 'good' verdict on a "
                              "defective image. Mark it correct, or false alarm.")


def inspected_file(verdict: InspectionVerdict) -> Path | None:
    """The picture the inspection kept of the verdict's image (at the model's size), or None."""
    from inference.services.deploy import resolve_job_file, result_files

    return resolve_job_file(verdict.job, result_files(verdict.index)["image"])


def _outline_mask(verdict: InspectionVerdict, points):
    """The outline (a polygon in the kept picture's pixels) as a bool mask of that picture's size."""
    from PIL import Image as PILImage

    from annotator.polygon_masks import Annotation, Region, rasterise

    if not isinstance(points, (list, tuple)) or not 3 <= len(points) <= MAX_OUTLINE_POINTS:
        raise FeedbackRefused(f"An outline is a polygon of 3 to {MAX_OUTLINE_POINTS} points.")
    try:
        xy = tuple((float(x), float(y)) for x, y in points)
    except (TypeError, ValueError):
        raise FeedbackRefused("Each outline point is a pair of numbers (x, y).") from None
    source = inspected_file(verdict)
    if source is None:
        raise FeedbackRefused(f"The inspected picture of {verdict.name} is no longer kept: no outline can be "
                              "drawn on it.")
    with PILImage.open(source) as picture:
        width, height = picture.size
    if any(not (0 <= x <= width and 0 <= y <= height) for x, y in xy):
        raise FeedbackRefused(f"Outline points must lie on the {width}x{height} picture.")
    region = Region(label="defect", name="outline", shape="polygon", points=xy)
    mask = rasterise(Annotation(source=source, image_ref=verdict.name, size=(width, height), regions=(region,)),
                     width, height)
    if not mask.any():
        raise FeedbackRefused("The outline encloses no pixel: draw around the defect.")
    return mask


def mark(verdict: InspectionVerdict, kind: str, user, note: str = "", outline=None) -> InspectionFeedback:
    """Add a reviewer's mark (see the module docstring); FeedbackRefused changes nothing."""
    from annotator.polygon_masks import save_mask

    note = (note or "").strip()
    if len(note) > MAX_NOTE:
        raise FeedbackRefused(f"A note has at most {MAX_NOTE} characters ({len(note)} given).")
    _check_kind(verdict, kind)
    if outline and kind == FeedbackKind.FALSE_ALARM:
        raise FeedbackRefused("A false alarm has no defect to outline.")
    mask = _outline_mask(verdict, outline) if outline else None
    outline_path = ""
    if mask is not None:
        outline_path = f"{OUTLINES_FOLDER}/{verdict.pk}/{uuid.uuid4().hex}.png"
        save_mask(mask, Path(settings.MEDIA_ROOT) / outline_path)
    try:
        with transaction.atomic():
            # The verdict's row lock: two marks of one verdict move its count one after the other.
            locked = InspectionVerdict.objects.select_for_update().get(pk=verdict.pk)
            previous = latest_feedback([locked.pk]).get(locked.pk)
            row = InspectionFeedback.objects.create(
                verdict=locked, product_id=locked.product_id, deployment_id=locked.deployment_id, kind=kind,
                note=note, outline_path=outline_path, marked_by=user,
                marked_by_name=user.get_username() if user else "")
            if previous is not None:
                _bump(locked.deployment_id, locked.defective, previous.kind, -1)
            _bump(locked.deployment_id, locked.defective, kind, +1)
    except BaseException:
        if outline_path:
            (Path(settings.MEDIA_ROOT) / outline_path).unlink(missing_ok=True)
        raise
    return row


# ---- adding to the dataset --------------------------------------------------------------------------

def _normal_defect_type(product) -> str:
    """The dataset's own name for defect-free images ("good", "ok" for BTAD), as its images say."""
    return (product.images.filter(is_anomalous=False).order_by().values_list("defect_type", flat=True).first()
            or "good")


def _safe_stem(name: str) -> str:
    stem = Path(name.replace("\\", "/")).stem
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem).strip("._")[:80] or "image"


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    shutil.copyfile(source, partial)
    partial.replace(target)


def add_to_dataset(verdict: InspectionVerdict, user) -> DatasetAddition:
    """Copy the verdict's image into its product's dataset as its newest mark says it is (see the
    module docstring); FeedbackRefused (nothing written) when it is not marked, already added, its
    picture is gone, or the same picture is in the product already."""
    from annotator.services.image_checks import CheckError, check_image, check_mask
    from annotator.services.queue import images_short_of_labels_changed

    latest = latest_feedback([verdict.pk]).get(verdict.pk)
    if latest is None:
        raise FeedbackRefused(f"Mark {verdict.name} first (correct, false alarm or missed defect): the mark "
                              "says whether it joins the dataset as defect-free or defective.")
    if DatasetAddition.objects.filter(verdict=verdict).exists():
        raise FeedbackRefused(f"{verdict.name} was added to the dataset already.")
    source = inspected_file(verdict)
    if source is None:
        raise FeedbackRefused(f"The inspected picture of {verdict.name} is no longer kept.")
    root = added_images_root(verdict.product_id)
    if not inside_data_roots(Path(settings.MEDIA_ROOT)):
        raise FeedbackRefused("The media root is outside the data roots (DEFECTBENCH_DATA_ROOTS), so images "
                              "copied there could not be served or benchmarked; an admin adds it to the roots.")
    defective = is_defective(verdict.defective, latest.kind)
    stem = f"{ADDED_FOLDER}/{verdict.pk}-{_safe_stem(verdict.name)}"
    image_rel, mask_rel = f"{stem}.png", ""
    written = [root / image_rel]
    try:
        _copy(source, root / image_rel)
        checked = check_image(root / image_rel, max_pixels=settings.DEFECTBENCH_MAX_IMAGE_PIXELS)
        if defective and latest.outline_path:
            mask_rel = f"{stem}_mask.png"
            written.append(root / mask_rel)
            _copy(Path(settings.MEDIA_ROOT) / latest.outline_path, root / mask_rel)
            check_mask(root / mask_rel, max_pixels=settings.DEFECTBENCH_MAX_IMAGE_PIXELS,
                       image_size=(checked.width, checked.height))
        with transaction.atomic():
            locked = InspectionVerdict.objects.select_for_update().select_related("product").get(pk=verdict.pk)
            if DatasetAddition.objects.filter(verdict=locked).exists():
                raise FeedbackRefused(f"{verdict.name} was added to the dataset already.")
            twin = locked.product.images.filter(checksum=checked.checksum).first()
            if twin is not None:
                raise FeedbackRefused(f"The same picture is in {locked.product.name} already ({twin.display_path}).")
            kind = ("missed-defect" if latest.kind == FeedbackKind.MISSED_DEFECT else "confirmed-defect") \
                if defective else _normal_defect_type(locked.product)
            image = Image.objects.create(
                product=locked.product, origin=Image.Origin.INSPECTION, split=Image.Split.TEST,
                is_anomalous=defective, defect_type=kind, path=image_rel, mask_path=mask_rel,
                width=checked.width, height=checked.height, checksum=checked.checksum)
            if defective:  # an anomalous test image waits for its labels like an imported one
                images_short_of_labels_changed(locked.product_id, +1)
            return DatasetAddition.objects.create(
                verdict=locked, feedback=latest, product_id=locked.product_id, image=image, image_path=image_rel,
                split=image.split, is_anomalous=defective, with_mask=bool(mask_rel), added_by=user,
                added_by_name=user.get_username() if user else "")
    except CheckError as error:
        for path in written:
            path.unlink(missing_ok=True)
        raise FeedbackRefused(f"{verdict.name}: {error}") from None
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


# ---- rates --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rate:
    """``errors`` of ``reviewed``, with its 95 % Wilson interval; None fields where nothing was reviewed."""

    errors: int
    reviewed: int
    value: float | None
    low: float | None
    high: float | None


def rate(errors: int, reviewed: int) -> Rate:
    if reviewed <= 0:
        return Rate(errors, reviewed, None, None, None)
    from scipy.stats import binomtest

    interval = binomtest(errors, reviewed).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return Rate(errors, reviewed, errors / reviewed, float(interval.low), float(interval.high))


@dataclass(frozen=True)
class DeploymentRates:
    inspected: int
    called_defective: int
    reviewed: int
    confirmed: int
    false_alarm: Rate
    miss: Rate


def deployment_rates(deployment_ids) -> dict[int, DeploymentRates]:
    """The figures of each deployment from its tally rows (one query for all of them)."""
    cells: dict[int, dict[tuple[bool, str], int]] = {}
    for row in DeploymentTally.objects.filter(deployment_id__in=list(deployment_ids)):
        cells.setdefault(row.deployment_id, {})[(row.defective, row.kind)] = row.count
    out = {}
    for deployment_id in deployment_ids:
        c = cells.get(deployment_id, {})

        def reviewed(defective):
            return sum(c.get((defective, kind), 0) for kind in FeedbackKind.values)

        out[deployment_id] = DeploymentRates(
            inspected=c.get((True, ""), 0) + c.get((False, ""), 0),
            called_defective=c.get((True, ""), 0),
            reviewed=reviewed(True) + reviewed(False),
            confirmed=c.get((True, FeedbackKind.CORRECT), 0) + c.get((False, FeedbackKind.CORRECT), 0),
            false_alarm=rate(c.get((True, FeedbackKind.FALSE_ALARM), 0), reviewed(True)),
            miss=rate(c.get((False, FeedbackKind.MISSED_DEFECT), 0), reviewed(False)),
        )
    return out
