"""Giving an anomalous image a mask after import (the mask editor calls this), and keeping the
queue's counters right when which images have a mask changes.

An anomalous image imported without a mask is image-level evidence: benchmarks use it for image
AUROC and the image decision, the labelling queue does not serve it (``models.LABELLABLE``: a
category is read off the defect's outline). Once ``set_image_mask`` gives it a mask it is an
anomalous image like any other: the queue serves it, progress figures count it, benchmarks
launched from then on use it for pixel metrics and the thresholds that need labelled defects.

The mask file is DefectBench's own, under ``MEDIA_ROOT/drawn-masks/`` (``drawn_mask_relpath``
says where to write it), never in the user's dataset folder; the image's ``mask_path`` then names
it as ``media:<path relative to MEDIA_ROOT>`` (``annotator.paths.mask_file`` resolves it).
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from annotator.models import Image, Label
from annotator.paths import DRAWN_MASKS_FOLDER, MEDIA_MASK_PREFIX, mask_file, validate_relative_path
from annotator.polygon_masks import masks_dir
from annotator.services.image_checks import CheckError, check_image, check_mask


class MaskRefused(ValueError):
    """The mask was not set (the message says why); nothing changed."""


def drawn_mask_relpath(image: Image) -> str:
    """Where the mask editor writes ``image``'s mask, relative to ``MEDIA_ROOT``: one folder per
    dataset (named like the rasterised polygon masks' one), the image's own path + ``.png``."""
    folder = masks_dir(Path(DRAWN_MASKS_FOLDER), image.product.dataset.root_path)
    return f"{DRAWN_MASKS_FOLDER}/{folder.name}/{image.path}.png"


def _checked_file(image: Image, relpath: str) -> Path:
    try:
        validate_relative_path(relpath)
    except ValidationError as error:
        raise MaskRefused(error.messages[0]) from None
    if not relpath.startswith(f"{DRAWN_MASKS_FOLDER}/"):
        raise MaskRefused(f"A drawn mask must lie in {DRAWN_MASKS_FOLDER}/ of the media root, not at {relpath}.")
    drawn = (Path(settings.MEDIA_ROOT) / DRAWN_MASKS_FOLDER).resolve()
    path = mask_file(image.product.dataset.root_path, image.path, MEDIA_MASK_PREFIX + relpath).resolve()
    if not path.is_relative_to(drawn):
        raise MaskRefused(f"{relpath} resolves outside {DRAWN_MASKS_FOLDER}/ of the media root.")
    if not path.is_file():
        raise MaskRefused(f"{relpath}: no such mask file.")
    max_pixels = settings.DEFECTBENCH_MAX_IMAGE_PIXELS
    threshold = image.product.dataset.import_options.get("mask_threshold")
    try:
        picture = check_image(image.file_path, max_pixels=max_pixels)
        checked = check_mask(path, max_pixels=max_pixels, image_size=(picture.width, picture.height),
                             orientation=picture.orientation,
                             **({"threshold": threshold} if threshold else {}))
    except (CheckError, OSError) as error:
        raise MaskRefused(f"{relpath}: {error}") from None
    if not checked.defect_pixels:
        raise MaskRefused(f"{relpath}: the mask is empty (no defect pixel); an anomalous image's mask "
                          "must outline its defect.")
    return path


@transaction.atomic
def set_image_mask(image: Image, relpath: str) -> Image:
    """Give the anomalous ``image`` the mask at ``MEDIA_ROOT/relpath`` (a file in
    ``drawn-masks/``, see ``drawn_mask_relpath``); the updated image.

    The file is checked as an import checks a mask (decodable by a mask rule, the image's upright
    size, at least one defect pixel); ``MaskRefused`` says why not, and nothing changes. An image
    that had no mask becomes labellable: the queue serves it and the progress figures count it
    (``labellable_changed``). Replacing a drawn mask with another is allowed.
    """
    locked = Image.objects.select_for_update().select_related("product__dataset").filter(pk=image.pk).first()
    if locked is None:
        raise MaskRefused("The image no longer exists.")
    if not locked.is_anomalous:
        raise MaskRefused(f"{locked.display_path} is defect-free; only anomalous images get a mask.")
    _checked_file(locked, relpath)
    was_labellable = locked.is_labellable
    locked.mask_path = MEDIA_MASK_PREFIX + relpath
    locked.save(update_fields=["mask_path"])
    if locked.is_labellable != was_labellable:
        labellable_changed(locked, +1 if locked.is_labellable else -1)
    image.mask_path = locked.mask_path
    return locked


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
