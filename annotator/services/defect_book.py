"""A dataset's defect book: labelled images reviewers pin to a category as an example, a
counter-example or a borderline case, with a note (as inspection teams keep one).

Reviewers and admins pin and unpin; everyone reads. The labelling workspace shows a category's
entries beside its definition: ``panel`` reads at most ``PANEL_LIMIT`` of them with one query
through the (dataset, category) index, so opening it costs the same at 100 or 100 000 images,
and it leaves out the image being labelled (blind labelling: the book never tells an annotator
what was decided about the image in front of them). The book shows what reviewers chose, never
the labels annotators gave.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Case, IntegerField, Value, When
from django.utils import timezone

from annotator.models import Dataset, DefectBookEntry, Image, Label, User

Kind = DefectBookEntry.Kind
# How many entries the workspace's panel shows of a category (the book page shows them all).
PANEL_LIMIT = 6
NOTE_MAX_LENGTH = 1000
# Examples first, then counter-examples, then borderline cases: the order the kinds are declared in.
KIND_RANK = Case(*(When(kind=kind, then=Value(rank)) for rank, kind in enumerate(Kind.values)),
                 output_field=IntegerField())


class BookRefused(ValueError):
    """A pin or unpin the book cannot take (unknown category or kind, an image of another dataset,
    no such entry); nothing was changed. The message says what was wrong."""


def _check_reviewer(user: User) -> None:
    if not user.is_reviewer_role:
        raise PermissionError("Only reviewers and admins pin images to the defect book.")


def _entries(dataset: Dataset):
    return DefectBookEntry.objects.filter(dataset=dataset).select_related("image__product__dataset", "pinned_by")


@transaction.atomic
def pin(*, dataset: Dataset, image: Image, category: str, kind: str, note: str = "",
        reviewer: User) -> tuple[DefectBookEntry, bool]:
    """Pin ``image`` to ``category`` of ``dataset``'s book as ``kind`` with ``note``; pinned again
    (same image and category), its kind and note are replaced. Returns (entry, created)."""
    _check_reviewer(reviewer)
    if category not in Label.Category.values:
        raise BookRefused(f"Unknown defect category {category!r}; expected one of {', '.join(Label.Category.values)}.")
    if kind not in Kind.values:
        raise BookRefused(f"Unknown kind {kind!r}; expected one of {', '.join(Kind.values)}.")
    if image.product.dataset_id != dataset.pk:
        raise BookRefused(f"Image {image.pk} is not an image of dataset {dataset.name}; "
                          "a defect book holds its own dataset's images only.")
    if not (image.split == Image.Split.TEST and image.is_anomalous):
        raise BookRefused(f"Image {image.pk} is not an anomalous test image; only labelled images go in the book.")
    note = note.strip()
    if len(note) > NOTE_MAX_LENGTH:
        raise BookRefused(f"The note is {len(note)} characters long; at most {NOTE_MAX_LENGTH}.")
    return DefectBookEntry.objects.update_or_create(
        dataset=dataset, image=image, category=category,
        defaults={"kind": kind, "note": note, "pinned_by": reviewer, "pinned_at": timezone.now()},
    )


@transaction.atomic
def unpin(*, dataset: Dataset, entry_id: int, reviewer: User) -> DefectBookEntry:
    """Take entry ``entry_id`` out of ``dataset``'s book; returns it as it was."""
    _check_reviewer(reviewer)
    entry = _entries(dataset).select_for_update(of=("self",)).filter(pk=entry_id).first()
    if entry is None:
        raise BookRefused(f"The defect book of {dataset.name} has no entry {entry_id}.")
    entry.delete()
    return entry


@dataclass
class Panel:
    """What the workspace shows of one category: up to ``PANEL_LIMIT`` entries, of ``total``."""

    entries: list[DefectBookEntry]
    total: int


def panel(dataset: Dataset, category: str, *, exclude_image_id: int | None = None,
          limit: int = PANEL_LIMIT) -> Panel:
    """The book's entries for ``category`` (examples first, newest first), never the image
    ``exclude_image_id`` (the one being labelled). Two queries, both through the index."""
    if category not in Label.Category.values:
        raise BookRefused(f"Unknown defect category {category!r}; expected one of {', '.join(Label.Category.values)}.")
    entries = _entries(dataset).filter(category=category)
    if exclude_image_id is not None:
        entries = entries.exclude(image_id=exclude_image_id)
    shown = list(entries.alias(rank=KIND_RANK).order_by("rank", "-pinned_at", "-id")[:limit])
    total = len(shown) if len(shown) < limit else entries.order_by().count()
    return Panel(entries=shown, total=total)


def pin_of(dataset: Dataset, category: str, image_id: int) -> DefectBookEntry | None:
    """The entry of ``image_id`` under ``category``, if pinned (for reviewers only: it tells what
    a reviewer decided about that image)."""
    return _entries(dataset).filter(category=category, image_id=image_id).first()


def book(dataset: Dataset) -> dict[tuple[str, str], list[DefectBookEntry]]:
    """Every entry of ``dataset``'s book by (category, kind), newest first. The book holds what
    reviewers pinned by hand (dozens), read in one query."""
    grouped: dict[tuple[str, str], list[DefectBookEntry]] = {}
    for entry in _entries(dataset).order_by("category", "kind", "-pinned_at", "-id"):
        grouped.setdefault((entry.category, entry.kind), []).append(entry)
    return grouped


def pins_by_image(image_ids) -> dict[int, list[DefectBookEntry]]:
    """The entries of these images (a page of the review list), by image id, in one query."""
    pins: dict[int, list[DefectBookEntry]] = {}
    for entry in (DefectBookEntry.objects.filter(image_id__in=list(image_ids))
                  .select_related("pinned_by").order_by("category")):
        pins.setdefault(entry.image_id, []).append(entry)
    return pins
