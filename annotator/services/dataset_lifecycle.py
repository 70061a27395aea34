"""Archiving and deleting a dataset (admins), with the list of what a deletion loses."""
from __future__ import annotations

from django.db import transaction

import shutil
from pathlib import Path

from django.conf import settings

from annotator.models import Dataset, Image, Label, LabelHistory, MaskRevision, ReviewDecision, User
from annotator.paths import DRAWN_MASK_FOLDER


class DeleteRefused(ValueError):
    pass


def loss_summary(dataset: Dataset) -> list[tuple[str, int]]:
    """What deleting ``dataset`` removes from DefectBench (the image files stay where they are)."""
    from inference.models import BenchmarkRun

    images = Image.objects.filter(product__dataset=dataset)
    return [
        ("products", dataset.products.count()),
        ("images (the files on disk are not touched)", images.count()),
        ("labels", Label.objects.filter(image__in=images).count()),
        ("label history entries", LabelHistory.objects.filter(image__in=images).count()),
        ("review decisions", ReviewDecision.objects.filter(image__in=images).count()),
        ("masks drawn in the mask editor", MaskRevision.objects.filter(image__in=images).count()),
        ("benchmark runs with their results", BenchmarkRun.objects.filter(dataset=dataset).count()),
    ]


def set_archived(dataset: Dataset, user: User, archived: bool) -> Dataset:
    if not user.is_admin_role:
        raise PermissionError("Only admins archive datasets.")
    dataset.archived = bool(archived)
    dataset.save(update_fields=["archived"])
    return dataset


@transaction.atomic
def delete_dataset(dataset: Dataset, user: User, confirm_name: str) -> list[tuple[str, int]]:
    """Delete after the admin typed the dataset's name; returns what was removed."""
    if not user.is_admin_role:
        raise PermissionError("Only admins delete datasets.")
    if (confirm_name or "").strip() != dataset.name:
        raise DeleteRefused(f"Type the dataset's name ({dataset.name}) to confirm; nothing was deleted.")
    lost = loss_summary(dataset)
    drawn = Path(settings.MEDIA_ROOT) / DRAWN_MASK_FOLDER / str(dataset.pk)  # DefectBench's own files only
    dataset.delete()
    transaction.on_commit(lambda: shutil.rmtree(drawn, ignore_errors=True))
    return lost
