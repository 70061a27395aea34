"""Masks drawn in the mask editor: who may draw, checking the PNG a browser sends, and the
append-only revisions (``MaskRevision``) that become an image's mask.

Rules a user notices:

* Any signed-in user who labels may draw the mask of an anomalous image that has none, and
  redraw a mask they drew themselves (its newest revision is theirs). Replacing a mask someone
  else made, or the mask the dataset came with, is for reviewers and admins (``MaskForbidden``).
* The editor sends a PNG of the image's upright size. It is refused (``MaskRefused``, nothing
  changes) when it is larger than ``DEFECTBENCH_MAX_MASK_UPLOAD_BYTES``, not a PNG, of another
  size, above the pixel limit, or empty (an anomalous image's mask has a defect). Its values are
  made binary by the importer's mask rule (``inference.engine.pixels``: colour not black, fully
  transparent never counts).
* The mask is written as a new 0/255 PNG under ``MEDIA_ROOT/drawn-masks/<dataset id>/<image id>/
  <number>.png`` (stored the way the image's file is, EXIF orientation and all, like the polygon
  layout's rasterised masks), never into the dataset's folder; ``Image.mask_path`` then names it
  and everything that reads masks (workspace, display cache, benchmarks) reads it.
* The image's current mask is its newest revision; earlier ones stay (history, starting points).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction

from annotator.models import LABELLABLE, Image, Label, MaskRevision, User
from annotator.paths import DRAWN_MASK_FOLDER, drawn_mask_path, is_drawn_mask, servable_file
from annotator.polygon_masks import save_mask

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What the editor says it started from; the origin follows from it (``origin_of``).
STARTS = ("proposal", "mask", "empty")


class MaskRefused(ValueError):
    """The mask cannot be saved (bad file, wrong size, empty); nothing was changed."""


class MaskForbidden(PermissionError):
    """This user may not change this image's mask."""


def max_upload_bytes() -> int:
    return int(settings.DEFECTBENCH_MAX_MASK_UPLOAD_BYTES)


def revision_folder(image: Image) -> str:
    """The image's drawn masks, relative to the media root."""
    return f"{DRAWN_MASK_FOLDER}/{image.product.dataset_id}/{image.pk}"


def current_revision(image: Image) -> MaskRevision | None:
    """The revision ``Image.mask_path`` names (the newest), or None (no mask, or the dataset's own)."""
    if not is_drawn_mask(image.mask_path):
        return None
    return image.mask_revisions.select_related("created_by").order_by("-number").first()


def may_draw(user: User, image: Image) -> str:
    """"" when ``user`` may save a new mask of ``image``, else why not."""
    if not image.is_anomalous:
        return "Only anomalous images have a defect mask; this one is defect-free."
    if user.is_reviewer_role or not image.mask_path:
        return ""
    current = current_revision(image)
    if current is not None and current.created_by_id == user.pk:
        return ""
    made_by = f"{current.created_by.username}'s mask" if current else "the mask the dataset came with"
    return (f"This image has {made_by}; only reviewers and admins replace someone else's mask. "
            f"You are signed in as {user.username} ({user.get_role_display().lower()}).")


def check_may_draw(user: User, image: Image) -> None:
    reason = may_draw(user, image)
    if reason:
        raise MaskForbidden(reason)


def decode_png(data: bytes, width: int, height: int) -> np.ndarray:
    """The bool (height, width) defect mask of the PNG ``data``; MaskRefused saying what is wrong."""
    from annotator.services.image_checks import CheckError, pillow_limits, probe_image
    from inference.engine.pixels import DecodeError, decode_mask

    limit = max_upload_bytes()
    if len(data) > limit:
        raise MaskRefused(f"The mask file is {len(data):,} bytes, more than the limit of {limit:,} "
                          "(DEFECTBENCH_MAX_MASK_UPLOAD_BYTES).")
    if not data.startswith(PNG_SIGNATURE):
        raise MaskRefused("The mask must be a PNG file; this is not one.")
    max_pixels = settings.DEFECTBENCH_MAX_IMAGE_PIXELS
    try:
        with pillow_limits(max_pixels):
            size = probe_image(io.BytesIO(data), max_pixels, verify=False)
            if size != (width, height):
                raise MaskRefused(f"The mask is {size[0]}×{size[1]} pixels but the image is {width}×{height}; "
                                  "a mask must have its image's size.")
            # The importer's rule: colour not black and not fully transparent is defect.
            defect = decode_mask(data).defect
    except CheckError as error:
        raise MaskRefused(f"The mask cannot be read: {error}") from None
    except DecodeError as error:
        raise MaskRefused(f"The mask cannot be read: {error}") from None
    if defect.shape != (height, width):  # a PNG that carries an EXIF orientation of its own
        raise MaskRefused(f"The mask is {defect.shape[1]}×{defect.shape[0]} pixels upright but the image is "
                          f"{width}×{height}.")
    if not defect.any():
        raise MaskRefused("The mask is empty: an anomalous image's mask marks its defect. Draw it, then save.")
    return defect


def revision_mask(revision: MaskRevision) -> np.ndarray:
    """A revision's mask, upright (bool height x width)."""
    from inference.engine.pixels import decode_mask, orientation_of

    image = revision.image
    orientation = orientation_of(servable_file(image.product.dataset.root, image.path))
    return decode_mask(Path(settings.MEDIA_ROOT) / revision.file, orientation=orientation).defect


def origin_of(start: str, changed: bool) -> str:
    """Proposed: the model's proposal saved as it was; edited: a proposal or an earlier mask
    corrected; drawn: from an empty canvas."""
    if start == "empty":
        return MaskRevision.Origin.DRAWN
    if start == "proposal" and not changed:
        return MaskRevision.Origin.PROPOSED
    return MaskRevision.Origin.EDITED


@dataclass(frozen=True)
class Start:
    """What the editor started from: ``kind`` one of ``STARTS``; ``revision`` the revision id
    for an earlier drawn mask (None: the image's current mask, or no revision); ``note`` (a
    proposal's model and threshold, as the proposal endpoint described it)."""

    kind: str
    revision: int | None = None
    note: str = ""


def save_drawn_mask(*, image: Image, user: User, png: bytes, start: Start, changed: bool) -> MaskRevision:
    """Check ``png`` and make it ``image``'s mask, as a new revision; returns it.

    MaskForbidden / MaskRefused change nothing. The file is written before the row and removed
    again if the transaction fails, so no revision names a missing file. The image's label flags
    are recounted and the queue's cached figures dropped: an image that had no mask enters the
    normal labelling queue once it has one.
    """
    if start.kind not in STARTS:
        raise MaskRefused(f"Unknown starting point {start.kind!r}; expected one of {', '.join(STARTS)}.")
    check_may_draw(user, image)
    defect = decode_png(png, image.width, image.height)
    from inference.engine.pixels import orientation_of

    image_file = servable_file(image.product.dataset.root, image.path)
    started_from = start.note[:300] if start.kind == "proposal" else ""
    base = None
    if start.kind == "mask":
        if not image.mask_path:
            raise MaskRefused("This image has no mask to start from.")
        if start.revision is not None:
            base = image.mask_revisions.filter(pk=start.revision).first()
            if base is None:
                raise MaskRefused(f"Revision {start.revision} is not a mask of this image.")
        else:
            base = current_revision(image)
        # The server compares itself: whether an earlier mask was changed is not the browser's word.
        changed = not np.array_equal(revision_mask(base) if base else dataset_mask(image), defect)
        started_from = f"revision {base.number}" if base else "the dataset's mask"
    with transaction.atomic():
        locked = Image.objects.select_for_update().filter(pk=image.pk).order_by().first()
        if locked is None:
            raise MaskRefused("The image no longer exists.")
        had_mask = bool(locked.mask_path)
        image.mask_path = locked.mask_path
        check_may_draw(user, image)  # again, under the lock: someone else may have saved meanwhile
        previous = image.mask_revisions.order_by("-number").first()
        if start.kind == "mask" and not changed and (base is None or (previous and base.pk == previous.pk)):
            raise MaskRefused("Nothing changed: this is the image's current mask already.")
        number = (previous.number if previous else 0) + 1
        relative = f"{revision_folder(image)}/{number}.png"
        target = Path(settings.MEDIA_ROOT) / relative
        if target.exists():  # left by a transaction that failed after writing: never overwrite a revision
            target.rename(target.with_name(f"{number}.orphan-{target.stat().st_mtime_ns}.png"))
        save_mask(defect, target, orientation_of(image_file))
        try:
            revision = MaskRevision.objects.create(
                image=image, number=number, file=relative, origin=origin_of(start.kind, changed),
                started_from=started_from, defect_pixels=int(np.count_nonzero(defect)), created_by=user,
                previous=previous,
            )
            image.mask_path = drawn_mask_path(relative)
            Image.objects.filter(pk=image.pk).update(mask_path=image.mask_path)
            mask_changed(image, had_mask=had_mask)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    return revision


def dataset_mask(image: Image) -> np.ndarray:
    """The image's current mask as every reader decodes it (``display``: the dataset's mask
    rule and threshold, its image's orientation), upright."""
    from annotator.paths import servable_mask
    from inference.engine.pixels import MASK_THRESHOLD, decode_mask, orientation_of

    root = image.product.dataset.root
    threshold = image.product.dataset.import_options.get("mask_threshold") or MASK_THRESHOLD
    return decode_mask(servable_mask(root, image.path, image.mask_path),
                       orientation=orientation_of(servable_file(root, image.path)), threshold=threshold).defect


def mask_changed(image: Image, *, had_mask: bool) -> None:
    """What must follow an image's mask being set: its label flags (the queue walks them) and the
    product's cached progress figures. An image that had no mask is new work for the queue."""
    from annotator.services.labels import recount_labels
    from annotator.services.queue import forget_cached_progress

    recount_labels(image)
    if not had_mask:
        product_id = image.product_id
        if Image.objects.filter(pk=image.pk).filter(LABELLABLE).exists():
            labellable_changed(image, +1)  # image-level evidence until now: the queue serves it from here
        transaction.on_commit(lambda: forget_cached_progress([product_id]))


def labellable_changed(image: Image, delta: int) -> None:
    """``image`` became labellable (``delta`` +1: it got a mask) or stopped being (-1): the
    queue's counters follow, at the cost of this one image (its labels, a few rows).

    * the product's cached "short of labels" count moves by one when the image still needs labels,
      and its cached completion figure is dropped (``annotator.services.queue``);
    * every annotator who labelled it (before it lost its mask, say) counts it again, or no longer
      (``AnnotatorProgress``: done, and waiting while it needs labels).
    """
    from annotator.services.labels import _bump_progress
    from annotator.services.queue import images_short_of_labels_changed, product_completion_changed

    needs = Image.objects.filter(pk=image.pk).values_list("needs_labels", flat=True).first()
    if needs:
        images_short_of_labels_changed(image.product_id, delta)
    else:
        product_completion_changed(image.product_id)
    annotators = Label.objects.filter(image_id=image.pk).order_by().values_list("annotator_id", flat=True)
    _bump_progress(image.product_id, {annotator: [delta, delta if needs else 0] for annotator in annotators})


def history(image: Image):
    """The image's mask revisions, newest first, with who made each."""
    return image.mask_revisions.select_related("created_by", "previous").order_by("-number")


def images_needing_mask(product):
    """The product's anomalous images without a mask, in the queue's order (defect type, path)."""
    return (Image.objects.filter(product=product, is_anomalous=True, mask_path="")
            .select_related("product__dataset").order_by("defect_type", "path"))


def revision_png(revision: MaskRevision) -> bytes:
    """A revision's mask as an upright 0/255 PNG (what the editor loads as a starting point)."""
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.fromarray(revision_mask(revision).astype(np.uint8) * 255, "L").save(out, format="PNG")
    return out.getvalue()
