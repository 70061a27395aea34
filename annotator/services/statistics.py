"""Dataset statistics for reviewers: computed in SQL, snapshotted by a periodic task.

``compute`` runs the GROUP BY queries (see ``annotator.services.agreement``): its cost grows with
the number of labels (about a second at 100 000 on a loaded 2-core machine). So the dashboard and
the agreement API read a snapshot (``DatasetStatistics``) that the Celery beat task
``annotator.refresh_statistics`` renews every ``DEFECTBENCH_STATISTICS_REFRESH_SECONDS`` (15) for
each dataset whose labels changed since. Pages show when the figures were computed. A snapshot
is used while no label changed since it or while it is younger than
``DEFECTBENCH_STATISTICS_MAX_AGE_SECONDS`` (120); otherwise (a new dataset, beat not running)
the figures are computed for that request, never stored by it: reads write nothing.
"""
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Max
from django.utils import timezone

from annotator.models import Dataset, DatasetStatistics, Label, LabelHistory
from annotator.services import agreement, review, suggestions


def history_mark() -> int:
    return LabelHistory.objects.aggregate(mark=Max("id"))["mark"] or 0


def compute(dataset: Dataset) -> dict:
    labels = Label.objects.filter(image__product__dataset=dataset).order_by()
    stats = agreement.dataset_agreement(dataset)
    return {
        "agreement": stats,
        "category_counts": dict(labels.values_list("category").annotate(n=Count("id"))),
        "background_counts": {("yes" if k else "no"): v for k, v in labels.values_list("background").annotate(n=Count("id"))},
        "final_categories": review.final_category_counts(dataset),
        # How the category suggestions fare (taken, right against the final label, agreement).
        "suggestions": suggestions.statistics(dataset),
        # (No progress here: it also changes with the overlap, which writes no label history; the
        # dashboard reads the queue's figures.)
        "computed_at": timezone.now().isoformat(),
    }


def current(dataset: Dataset) -> dict:
    """The snapshot if no label changed since it or it is recent enough; else figures computed
    now (and not stored)."""
    snapshot = DatasetStatistics.objects.filter(dataset=dataset).first()
    if snapshot is not None:
        limit = timezone.now() - timedelta(seconds=settings.DEFECTBENCH_STATISTICS_MAX_AGE_SECONDS)
        if snapshot.computed_at >= limit or snapshot.history_mark >= history_mark():
            return snapshot.data
    return compute(dataset)


def refresh(force: bool = False) -> int:
    """Renew the snapshot of every dataset whose labels changed since its last one. Returns how many."""
    mark = history_mark()
    renewed = 0
    known = {s.dataset_id: s for s in DatasetStatistics.objects.all()}
    for dataset in Dataset.objects.all():
        snapshot = known.get(dataset.pk)
        if not force and snapshot is not None and snapshot.history_mark >= mark:
            continue
        data = compute(dataset)
        DatasetStatistics.objects.update_or_create(
            dataset=dataset, defaults={"computed_at": timezone.now(), "history_mark": mark, "data": data}
        )
        renewed += 1
    return renewed
