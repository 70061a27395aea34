"""What an annotator is shown of a dataset that hides its defect folders.

A dataset may hide its defect folders ("broken_large") from annotators (``Dataset.show_defect_folder``
off): the name can prime them toward a category. Reviewers and admins always see them (they settle
disagreements with the dataset's own types at hand). Hidden, nothing an annotator is shown names
the folder: not the defect type, and not the image's path either, whose folders (or, in a manifest
or the beside layout, file names) hold it in any layout; an image is shown by its product and id
("widget/image-12.png"), and the product page groups its anomalous images as ``ANOMALOUS``.

Image files are served at /files/images/<id>/image under a cache name, so URLs and downloads hold
no folder name either.
"""
from __future__ import annotations

from pathlib import PurePosixPath

from django.db.models import Count

from annotator.models import Dataset, Image, Product, User

# The defect type a hidden viewer sees for every anomalous image (a facet of the product page).
ANOMALOUS = "anomalous"


def hidden_for(user: User | None, dataset: Dataset) -> bool:
    """Whether ``user`` must not see ``dataset``'s defect folders (no user: hidden, fail closed)."""
    if user is not None and user.is_reviewer_role:
        return False
    return not dataset.show_defect_folder


def neutral_name(image: Image) -> str:
    """The image by product and id, with its file type: nothing of its folders or file name."""
    return f"{image.product.name}/image-{image.pk}{PurePosixPath(image.path).suffix.lower()}"


def shown_path(image: Image, user: User | None) -> str:
    """The image's path (relative to its dataset) as ``user`` may see it."""
    return neutral_name(image) if hidden_for(user, image.product.dataset) else image.path


def shown_display_path(image: Image, user: User | None) -> str:
    """``Image.display_path`` (starting with the product) as ``user`` may see it."""
    return neutral_name(image) if hidden_for(user, image.product.dataset) else image.display_path


def shown_defect_type(image: Image, user: User | None) -> str | None:
    """The image's defect type, or None when ``user`` may not see it (defect-free ones: "good")."""
    if image.is_anomalous and hidden_for(user, image.product.dataset):
        return None
    return image.defect_type


def filter_by_defect_type(images, defect_type: str, user: User | None):
    """``images`` of this defect type; a viewer from whom a dataset hides its folders finds none of
    its anomalous images by their type (they would tell it), and finds them all as ``ANOMALOUS``."""
    if user is not None and user.is_reviewer_role:
        return images.filter(defect_type=defect_type)
    shown = images.filter(defect_type=defect_type).exclude(is_anomalous=True, product__dataset__show_defect_folder=False)
    if defect_type == ANOMALOUS:
        shown = shown | images.filter(is_anomalous=True, product__dataset__show_defect_folder=False)
    return shown


def facets(product: Product, user: User | None) -> list[dict]:
    """(split, defect_type, count) rows of the product page's filter; a hidden viewer gets one
    ``ANOMALOUS`` row for the anomalous images instead of one per folder."""
    rows = (product.images.order_by().values("split", "defect_type", "is_anomalous")
            .annotate(count=Count("id")))
    merged: dict[tuple[str, str], int] = {}
    hidden = hidden_for(user, product.dataset)
    for row in rows:
        key = (row["split"], ANOMALOUS if hidden and row["is_anomalous"] else row["defect_type"])
        merged[key] = merged.get(key, 0) + row["count"]
    return [{"split": split, "defect_type": defect_type, "count": count}
            for (split, defect_type), count in sorted(merged.items())]
