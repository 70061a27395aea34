"""Label CSV export (streamed) and import (dry-run report, per-row errors, all or nothing).

Export variants
---------------
* ``images``: one row per labelled anomalous image with its effective label (a reviewer's
  decision, else the annotators' unanimous label; empty with ``source=unresolved`` while they
  disagree).
* ``annotations``: one row per label.

Annotators (role annotator) only ever export their own labels; reviewers and admins export all.

Import format
-------------
See ``annotator.label_format`` (shared with the benchmark CLI): header
``image_path,background,defect_category``, paths matched by suffix against the dataset's images
(``product/path`` and ``path``). Here only anomalous test images may be labelled, each once.
"""
import csv
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from annotator.label_format import (
    UNRESOLVED, RowError, SuffixIndex, count_rows, match_rows, parse_label_csv, path_parts, split_skipped,
)
from annotator.models import Dataset, Image, Label, ReviewDecision, User
from annotator.services import defect_folder
from annotator.services.labels import resolve_label, save_label

EXPORT_VARIANTS = ("images", "annotations")
IMAGE_COLUMNS = [
    "dataset", "product", "image_path", "defect_type", "background", "category", "source",
    "annotators", "n_annotations", "agreement", "labelled_at",
]
ANNOTATION_COLUMNS = [
    "dataset", "product", "image_path", "defect_type", "background", "category", "annotator",
    "annotators", "agreement", "labelled_at",
]
IMPORT_SOURCE = "csv-import"
# A report lists at most this many row errors (and how many there were): a million bad rows must
# not become a 100 MB response.
MAX_REPORTED_ERRORS = 100
# Spreadsheets run a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def max_import_bytes() -> int:
    return settings.DEFECTBENCH_MAX_LABEL_CSV_BYTES


def safe_cell(value):
    """A text cell a spreadsheet will show as text: a leading ``= + - @``, tab or CR gets a ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def yes_no(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


class _Echo:
    def write(self, value):
        return value


def _csv_lines(header, rows):
    writer = csv.writer(_Echo())
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow([safe_cell(cell) for cell in row])


def _labels_for(dataset: Dataset, user: User | None):
    labels = (
        Label.objects.filter(image__product__dataset=dataset)
        .select_related("annotator", "image__product")
        .order_by("image__product__name", "image__path", "annotator__username")
    )
    if user is not None and not user.is_reviewer_role:
        labels = labels.filter(annotator=user)
    return labels


def _grouped(dataset: Dataset, user: User | None):
    """Yield (image, [labels]) in export order, without loading everything at once."""
    current, group = None, []
    for label in _labels_for(dataset, user).iterator(chunk_size=2000):
        if current is not None and label.image_id != current.pk:
            yield current, group
            group = []
        current = label.image
        group.append(label)
    if current is not None:
        yield current, group


def _final(image, group, decisions):
    decision = decisions.get(image.pk)
    resolved = resolve_label(
        [(label.background, label.category) for label in group],
        (decision.background, decision.category) if decision is not None else None,
    )
    if resolved is None:
        return None, "", UNRESOLVED, None
    return resolved.background, resolved.category, resolved.source, decision.decided_at if decision else None


def _path_and_type(image, hide: bool) -> tuple[str, str]:
    """The image's path and defect type, or what an annotator of a dataset hiding its folders sees."""
    if not hide:
        return image.path, image.defect_type
    return defect_folder.neutral_name(image), "" if image.is_anomalous else image.defect_type


def _hides(dataset: Dataset, user: User | None) -> bool:
    return user is not None and defect_folder.hidden_for(user, dataset)


def image_rows(dataset: Dataset, user: User | None = None):
    """One row per labelled image: the effective label (see the module doc)."""
    see_all = user is None or user.is_reviewer_role
    hide = _hides(dataset, user)
    decisions = (
        {d.image_id: d for d in ReviewDecision.objects.filter(image__product__dataset=dataset)}
        if see_all else {}
    )
    for image, group in _grouped(dataset, user):
        background, category, source, decided_at = _final(image, group, decisions)
        agreeing = sum(1 for label in group if (label.background, label.category) == (background, category))
        labelled_at = max([label.updated_at for label in group] + ([decided_at] if decided_at else []))
        yield [
            dataset.name, image.product.name, *_path_and_type(image, hide), yes_no(background),
            category, source, ";".join(label.annotator.username for label in group), len(group),
            f"{agreeing / len(group):.3f}" if source != UNRESOLVED else "", labelled_at.isoformat(),
        ]


def annotation_rows(dataset: Dataset, user: User | None = None):
    """One row per label; ``agreement`` is the share of the image's annotators who gave the same label."""
    hide = _hides(dataset, user)
    for image, group in _grouped(dataset, user):
        counts = Counter((label.background, label.category) for label in group)
        names = ";".join(label.annotator.username for label in group)
        for label in group:
            yield [
                dataset.name, image.product.name, *_path_and_type(image, hide), yes_no(label.background),
                label.category, label.annotator.username, names,
                f"{counts[(label.background, label.category)] / len(group):.3f}", label.updated_at.isoformat(),
            ]


def export_filename(dataset: Dataset, variant: str) -> str:
    return f"{dataset.name}-labels-{variant}.csv"


def export_lines(dataset: Dataset, variant: str, user: User | None = None):
    """CSV text, line by line, for ``StreamingHttpResponse``."""
    if variant == "images":
        return _csv_lines(IMAGE_COLUMNS, image_rows(dataset, user))
    if variant == "annotations":
        return _csv_lines(ANNOTATION_COLUMNS, annotation_rows(dataset, user))
    raise ValueError(f"Unknown export variant {variant!r}; expected one of {EXPORT_VARIANTS}.")


# --- import --------------------------------------------------------------------------------
class ImageIndex:
    """Match CSV paths to a dataset's images by path suffix (``product/path`` and ``path``)."""

    def __init__(self, dataset: Dataset):
        self.images: dict[int, Image] = {}
        candidates: dict[int, list[tuple[str, ...]]] = {}
        for image in Image.objects.filter(product__dataset=dataset).select_related("product"):
            self.images[image.pk] = image
            parts = path_parts(image.path)
            # The name an annotator's export gives it when the dataset hides its defect folders.
            candidates[image.pk] = [parts, path_parts(defect_folder.neutral_name(image))]
            if not parts or parts[0] != image.product.name:
                candidates[image.pk].append((image.product.name, *parts))
        self.suffixes = SuffixIndex(candidates)

    def find(self, path: str) -> tuple[Image | None, str]:
        pk, why = self.suffixes.find(path)
        return (None, why) if pk is None else (self.images[pk], "")


@dataclass
class ImportReport:
    dataset: str
    annotator: str
    dry_run: bool
    rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    # Rows the per-image export wrote for unresolved images: reported with their lines, not imported.
    skipped: list[RowError] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    categories: Counter = field(default_factory=Counter)
    background: Counter = field(default_factory=Counter)
    applied: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def listed_errors(self) -> list[RowError]:
        return self.errors[:MAX_REPORTED_ERRORS]

    def as_dict(self) -> dict:
        """The report; only the first ``MAX_REPORTED_ERRORS`` errors are listed, ``error_count`` says how many."""
        return {
            "dataset": self.dataset, "annotator": self.annotator, "dry_run": self.dry_run,
            "rows": self.rows, "ok": self.ok, "applied": self.applied,
            "created": self.created, "updated": self.updated, "unchanged": self.unchanged,
            "categories": dict(self.categories), "background": dict(self.background),
            "error_count": len(self.errors),
            "errors": [{"line": e.line, "image_path": e.image_path, "message": e.message}
                       for e in self.listed_errors],
            "skipped_count": len(self.skipped),
            "skipped": [{"line": e.line, "image_path": e.image_path, "message": e.message}
                        for e in self.skipped[:MAX_REPORTED_ERRORS]],
        }

    def summary(self) -> str:
        head = (
            f"{'Dry run: ' if self.dry_run else ''}{self.rows} rows for dataset {self.dataset} "
            f"as {self.annotator}: "
        )
        if self.errors:
            return head + f"{len(self.errors)} errors, nothing imported."
        verb = "would be" if self.dry_run else "were"
        skipped = ""
        if self.skipped:
            lines = ", ".join(str(e.line) for e in self.skipped[:10]) + (", …" if len(self.skipped) > 10 else "")
            skipped = (f"; {len(self.skipped)} unresolved row{'s' if len(self.skipped) != 1 else ''} "
                       f"skipped (line{'s' if len(self.skipped) != 1 else ''} {lines})")
        return head + (
            f"{self.created} labels {verb} created, {self.updated} updated, {self.unchanged} unchanged; "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.categories.items())) + skipped
        )


def _labellable(image: Image) -> bool:
    return image.is_labellable  # a category needs a mask: one without waits for it


def import_labels(
    data: bytes | str, *, dataset: Dataset, importer: User, annotator: User | None = None, dry_run: bool = False
) -> ImportReport:
    """Check every row, then (unless ``dry_run`` or any error) save all labels in one transaction.

    ``data`` is the file's content or an uploaded file (its size is checked before it is read):
    a file above ``DEFECTBENCH_MAX_LABEL_CSV_BYTES`` is refused as a whole. A file with an
    ``annotator`` column (the per-annotation export) gives each row to the user it names;
    otherwise every row goes to ``annotator`` (default: the importer).
    """
    size = len(data) if isinstance(data, (bytes, str)) else data.size
    limit = max_import_bytes()
    if size > limit:
        report = ImportReport(dataset=dataset.name, annotator=(annotator or importer).username, dry_run=dry_run)
        report.errors.append(RowError(0, "", f"The file has {size} bytes; at most {limit} bytes "
                                             "(DEFECTBENCH_MAX_LABEL_CSV_BYTES) are accepted. Split it."))
        return report
    if not isinstance(data, (bytes, str)):
        data = data.read()
    rows, errors = parse_label_csv(data)
    errors, skipped = split_skipped(errors)
    named = sorted({row.annotator for row in rows if row.annotator})
    if named:
        users = {u.username: u for u in User.objects.filter(username__in=named)}
        label = ", ".join(named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")
        report = ImportReport(dataset=dataset.name, annotator=f"the annotators in the file ({label})", dry_run=dry_run)
        if annotator is not None:
            errors.append(RowError(0, "", "The file names each label's annotator (an annotator column); "
                                          "leave the annotator field empty to import it."))
        for row in rows:
            if not row.annotator:
                errors.append(RowError(row.line, row.image_path, "empty annotator (the file names one on other rows)"))
            elif row.annotator not in users:
                errors.append(RowError(row.line, row.image_path, f"no user named {row.annotator!r}"))
    else:
        annotator = annotator or importer
        users = {annotator.username: annotator}
        report = ImportReport(dataset=dataset.name, annotator=annotator.username, dry_run=dry_run)
    report.rows = count_rows(rows, errors) + len(skipped)
    report.skipped = skipped
    report.errors.extend(errors)
    if errors and not rows:
        return report
    matches, errors = match_rows(rows, ImageIndex(dataset).find, _labellable)
    report.errors.extend(errors)
    if report.errors:
        report.errors.sort(key=lambda error: error.line)
        return report
    planned = [(image, row.background, row.category, users[row.annotator or annotator.username])
               for row, image in matches]
    existing = {
        (label.annotator_id, label.image_id): (label.background, label.category)
        for label in Label.objects.filter(annotator__in=list(users.values()),
                                          image_id__in=[p[0].pk for p in planned])
    }
    for image, background, category, owner in planned:
        report.categories[category] += 1
        report.background[yes_no(background)] += 1
        before = existing.get((owner.pk, image.pk))
        if before is None:
            report.created += 1
        elif before == (background, category):
            report.unchanged += 1
        else:
            report.updated += 1
    if dry_run:
        return report
    with transaction.atomic():
        for image, background, category, owner in planned:
            save_label(
                image=image, annotator=owner, background=background, category=category,
                changed_by=importer, source=IMPORT_SOURCE,
            )
    report.applied = True
    return report
