"""Per-dataset settings an admin changes from the dataset's page (not the raw Django admin)."""
from __future__ import annotations

from django.db import models, transaction

from annotator.models import Dataset, Image, User, rebuild_annotator_progress

MAX_OVERLAP = 10


class SettingsRefused(ValueError):
    pass


def update_settings(dataset: Dataset, user: User, *, label_overlap, show_defect_folder: bool) -> Dataset:
    """Validate everything first; a refusal changes nothing."""
    if not user.is_admin_role:
        raise PermissionError("Only admins change a dataset's settings.")
    try:
        overlap = int(label_overlap)
    except (TypeError, ValueError):
        raise SettingsRefused(f"Overlap must be a whole number from 1 to {MAX_OVERLAP}, not {label_overlap!r}.")
    if not 1 <= overlap <= MAX_OVERLAP:
        raise SettingsRefused(f"Overlap must be a whole number from 1 to {MAX_OVERLAP}, not {overlap}.")
    dataset.label_overlap = overlap
    dataset.show_defect_folder = bool(show_defect_folder)
    dataset.save(update_fields=["label_overlap", "show_defect_folder"])  # one transaction with apply_overlap
    return dataset


def apply_overlap(dataset: Dataset) -> None:
    """Recompute what a dataset's overlap decides: each image's "still needs labels" flag (the
    queue walks it) and every annotator's progress counters. ``Dataset.save`` calls it in the
    transaction that saves a changed overlap, so a failure half-way leaves both as they were;
    the cached progress figures of the dataset's products are dropped once it commits."""
    Image.objects.filter(product__dataset=dataset).update(
        needs_labels=models.ExpressionWrapper(
            models.Q(label_count__lt=dataset.label_overlap), output_field=models.BooleanField()
        )
    )
    rebuild_annotator_progress(dataset)
    product_ids = list(dataset.products.values_list("pk", flat=True))

    def forget():
        from annotator.services.queue import forget_cached_progress

        forget_cached_progress(product_ids)

    transaction.on_commit(forget)
