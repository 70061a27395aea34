"""Per-dataset settings an admin changes from the dataset's page (not the raw Django admin)."""
from __future__ import annotations

from django.db import models, transaction

from annotator.models import Dataset, Image, User, rebuild_annotator_progress

MAX_OVERLAP = 10


class SettingsRefused(ValueError):
    pass


def update_settings(dataset: Dataset, user: User, *, label_overlap, show_defect_folder: bool,
                    suggest_categories: bool | None = None) -> Dataset:
    """Validate everything first; a refusal changes nothing. ``suggest_categories`` None: unchanged."""
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
    turned_on = bool(suggest_categories) and not dataset.suggest_categories
    if suggest_categories is not None:
        dataset.suggest_categories = bool(suggest_categories)
    # One transaction with apply_overlap.
    dataset.save(update_fields=["label_overlap", "show_defect_folder", "suggest_categories"])
    if turned_on:
        transaction.on_commit(_start_suggestions)
    return dataset


def _start_suggestions() -> None:
    """Turned on: the first features and fit now rather than at the next beat (best effort)."""
    from annotator import tasks

    try:
        tasks.refresh_suggestions.delay()
    except Exception:  # no broker now: the beat task does it
        pass


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
