"""A product's audit trail: every verdict as a CSV, and one history of everything that happened.

Nothing here writes: the trail's rows (deployments, label history, verdicts, feedback, additions)
are append-only, and no page or endpoint edits or deletes them.

* :func:`verdicts_csv` streams the verdicts of a period (one row each, with its newest mark), a
  chunk of rows at a time, so an export of a year costs memory of one chunk.
* :func:`history_page` merges the product's event streams newest first with a keyset cursor:
  each stream reads at most one page of rows past the cursor through an index, so a page costs
  the same however long the history. A stream is one entry of ``STREAMS``; mask revisions (when
  a mask editor keeps them) join as one more function of the same shape.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Callable, Iterator

from django.db.models import Count, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from annotator.models import LabelHistory, Product
from annotator.services.label_csv import safe_cell
from inference.models import (
    DatasetAddition, Deployment, FeedbackKind, InspectionFeedback, InspectionJob, InspectionVerdict,
)
from inference.services.feedback import latest_feedback

CSV_FIELDS = ("verdict_id", "inspected_at", "image", "deployment", "run", "package_sha256", "technique",
              "image_threshold", "pixel_threshold", "engine_version", "score", "verdict", "inspected_by",
              "feedback", "feedback_note", "feedback_by", "feedback_at", "added_to_dataset")
CSV_CHUNK = 500
PAGE_SIZE = 50


class _Echo:
    def write(self, value):
        return value


def period_bounds(start: date | None, end: date | None) -> tuple[datetime | None, datetime | None]:
    """[start 00:00, the day after end 00:00) in the site's time zone: both days included."""
    tz = timezone.get_current_timezone()
    low = datetime.combine(start, time.min, tzinfo=tz) if start else None
    high = datetime.combine(end + timedelta(days=1), time.min, tzinfo=tz) if end else None
    return low, high


def verdicts_in(product: Product, start: date | None = None, end: date | None = None):
    low, high = period_bounds(start, end)
    rows = InspectionVerdict.objects.filter(product=product)
    if low:
        rows = rows.filter(inspected_at__gte=low)
    if high:
        rows = rows.filter(inspected_at__lt=high)
    return rows


def verdicts_csv(product: Product, start: date | None = None, end: date | None = None) -> Iterator[str]:
    """CSV lines of the product's verdicts in the period, oldest first. Names and notes are user
    text: a cell a spreadsheet would run as a formula is written as text."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_FIELDS)
    rows = (verdicts_in(product, start, end).select_related("deployment__product_run")
            .order_by("inspected_at", "id"))
    last = None
    while True:
        page = rows if last is None else rows.filter(Q(inspected_at__gt=last[0]) | Q(inspected_at=last[0], id__gt=last[1]))
        chunk = list(page[:CSV_CHUNK])
        if not chunk:
            return
        marks = latest_feedback([v.pk for v in chunk])
        added = set(DatasetAddition.objects.filter(verdict_id__in=[v.pk for v in chunk])
                    .values_list("verdict_id", flat=True))
        for v in chunk:
            fb = marks.get(v.pk)
            yield writer.writerow([
                v.pk, v.inspected_at.isoformat(), safe_cell(v.name), v.deployment_id, v.deployment.product_run.run_id,
                v.package_sha256, v.technique, repr(v.image_threshold), repr(v.pixel_threshold), v.engine_version,
                repr(v.score), "defective" if v.defective else "good", safe_cell(v.inspected_by_name),
                fb.kind if fb else "", safe_cell(fb.note) if fb else "", safe_cell(fb.marked_by_name) if fb else "",
                fb.marked_at.isoformat() if fb else "", "yes" if v.pk in added else "no",
            ])
        last = (chunk[-1].inspected_at, chunk[-1].pk)


# ---- the history page ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cursor:
    """Where a page ends: events are ordered by (time, stream rank, id), newest first."""

    at: datetime
    rank: int
    pk: int

    def encode(self) -> str:
        return f"{self.at.isoformat()}~{self.rank}~{self.pk}"

    @classmethod
    def decode(cls, text: str) -> Cursor | None:
        """None for text that is not a cursor this module wrote."""
        try:
            at, rank, pk = text.split("~")
            moment = parse_datetime(at)
            return cls(moment, int(rank), int(pk)) if moment else None
        except (ValueError, TypeError):
            return None


@dataclass(frozen=True)
class Event:
    at: datetime
    rank: int
    pk: int
    what: str  # the stream: "deployment", "label", "inspection", "feedback", "addition"
    summary: str
    who: str

    @property
    def key(self) -> tuple:
        return (self.at, self.rank, self.pk)


def _after(field: str, rank: int, cursor: Cursor | None) -> Q:
    """Rows of a stream of ``rank`` that come after ``cursor`` in the newest-first order."""
    if cursor is None:
        return Q()
    if rank < cursor.rank:
        return Q(**{f"{field}__lte": cursor.at})
    if rank == cursor.rank:
        return Q(**{f"{field}__lt": cursor.at}) | Q(**{field: cursor.at, "id__lt": cursor.pk})
    return Q(**{f"{field}__lt": cursor.at})


def _deployments(product, cursor, limit, rank):
    rows = (Deployment.objects.filter(product=product).filter(_after("deployed_at", rank, cursor))
            .select_related("product_run__run", "deployed_by").order_by("-deployed_at", "-id")[:limit])
    for d in rows:
        note = f" ({d.note})" if d.note else ""
        yield Event(d.deployed_at, rank, d.pk, "deployment",
                    f"Deployment #{d.pk}: run #{d.product_run.run_id} ({d.product_run.run.get_model_display()}) "
                    f"with the {d.get_technique_display()} threshold{note}",
                    d.deployed_by.get_username() if d.deployed_by else "")


def _label(value) -> str:
    if not value:
        return "none"
    return f"{value.get('category', '?')}, {'with' if value.get('background') else 'without'} background"


def _labels(product, cursor, limit, rank):
    rows = (LabelHistory.objects.filter(image__product=product).filter(_after("changed_at", rank, cursor))
            .select_related("image__product", "annotator", "changed_by").order_by("-changed_at", "-id")[:limit])
    for h in rows:
        yield Event(h.changed_at, rank, h.pk, "label",
                    f"Label {h.get_action_display().lower()} on {h.image.display_path} (annotator "
                    f"{h.annotator.get_username()}): {_label(h.before)} → {_label(h.after)}",
                    h.changed_by.get_username())


def _inspections(product, cursor, limit, rank):
    jobs = list(InspectionJob.objects.filter(product=product).filter(_after("created_at", rank, cursor))
                .select_related("created_by", "deployment").order_by("-created_at", "-id")[:limit])
    counts: dict[int, dict[bool, int]] = {}
    for row in (InspectionVerdict.objects.filter(job_id__in=[j.pk for j in jobs]).order_by()
                .values("job_id", "defective").annotate(n=Count("id"))):
        counts.setdefault(row["job_id"], {})[row["defective"]] = row["n"]
    for j in jobs:
        c = counts.get(j.pk, {})
        yield Event(j.created_at, rank, j.pk, "inspection",
                    f"Inspection #{j.pk} ({j.get_kind_display().lower()}, {j.get_status_display().lower()}) with "
                    f"deployment #{j.deployment_id}: {c.get(True, 0) + c.get(False, 0)} verdicts, "
                    f"{c.get(True, 0)} defective, {c.get(False, 0)} good",
                    j.created_by.get_username() if j.created_by else "")


def _feedback(product, cursor, limit, rank):
    rows = (InspectionFeedback.objects.filter(product=product).filter(_after("marked_at", rank, cursor))
            .select_related("verdict").order_by("-marked_at", "-id")[:limit])
    for f in rows:
        called = "defective" if f.verdict.defective else "good"
        extra = (" with an outline" if f.outline_path else "") + (f": “{f.note}”" if f.note else "")
        yield Event(f.marked_at, rank, f.pk, "feedback",
                    f"Marked {FeedbackKind(f.kind).label.lower()}: {f.verdict.name} (verdict {f.verdict_id}, called "
                    f"{called} by deployment #{f.deployment_id}){extra}", f.marked_by_name)


def _additions(product, cursor, limit, rank):
    rows = (DatasetAddition.objects.filter(product=product).filter(_after("added_at", rank, cursor))
            .select_related("verdict").order_by("-added_at", "-id")[:limit])
    for a in rows:
        what = "anomalous" if a.is_anomalous else "defect-free"
        mask = (" with its outline as mask" if a.with_mask else " without mask") if a.is_anomalous else ""
        yield Event(a.added_at, rank, a.pk, "addition",
                    f"Added {a.verdict.name} (verdict {a.verdict_id}) to the dataset as a {what} {a.split} "
                    f"image{mask}", a.added_by_name)


# (rank, stream): the rank orders events of the same instant; a new stream (mask revisions) takes
# the next rank.
STREAMS: tuple[tuple[int, Callable], ...] = (
    (0, _deployments), (1, _labels), (2, _inspections), (3, _feedback), (4, _additions),
)


def history_page(product: Product, cursor: Cursor | None = None, limit: int = PAGE_SIZE) -> tuple[list[Event], Cursor | None]:
    """One page of the product's events, newest first, and the cursor of the next page (None at the end)."""
    events = [event for rank, stream in STREAMS for event in stream(product, cursor, limit + 1, rank)]
    events.sort(key=lambda e: e.key, reverse=True)
    page = events[:limit]
    more = len(events) > limit
    return page, (Cursor(*page[-1].key) if more and page else None)
