"""The label CSV format, in one place and without Django (the benchmark CLI reads it with no database).

Header ``image_path,background,defect_category`` (``category`` is accepted for the last; other
columns are allowed and ignored). ``background``: yes/no (also y/n, true/false, 1/0,
with/without). ``defect_category``: one of ``CATEGORIES``. ``image_path`` is matched to images by
path suffix (``SuffixIndex``), so paths relative to the dataset folder, to its parent or with any
longer prefix all work.

``parse_label_csv`` checks the file and every row; ``SuffixIndex`` finds which image a path names;
``match_rows`` ties rows to images (each image once, and only images the caller says may be
labelled: anomalous test images).
"""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

# Equal to annotator.models.Label.Category.values (a test holds them together).
CATEGORIES = ("structural", "surface", "contamination", "combined")
BACKGROUND_VALUES = {
    "yes": True, "y": True, "true": True, "1": True, "with": True,
    "no": False, "n": False, "false": False, "0": False, "without": False,
}
COLUMNS = ("image_path", "background", "defect_category")
MIN_SUFFIX_PARTS = 3  # e.g. test/broken_large/000.png: file name alone is ambiguous
NOT_LABELLED_IMAGE = "not an anomalous test image (only those are labelled)"
# The per-image export's ``source`` of an image whose annotators disagree (no label to give it):
# such a row, with empty background and category, is skipped and reported, never an error, so
# that the export re-imports as it is written.
UNRESOLVED = "unresolved"
SKIPPED_UNRESOLVED = ("skipped: unresolved in the export (its annotators disagree and no reviewer has "
                      "decided), so there is no label to import")
MALFORMED = "malformed CSV"


@dataclass
class RowError:
    line: int  # 0: the file as a whole
    image_path: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.image_path or '-'}: {self.message}" if self.line else self.message


@dataclass(frozen=True)
class LabelRow:
    line: int
    image_path: str
    background: bool
    category: str
    # The ``annotator`` column of a per-annotation export ("" when the file has none): whose
    # label the row is, so a re-import gives each label back to its annotator.
    annotator: str = ""


def decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"The file is not UTF-8 text ({error.reason} at byte {error.start}).") from None


def _header(reader) -> tuple[dict[str, int] | None, int, list[RowError]]:
    """Column positions, column count, errors."""
    try:
        header = next(reader, None)
    except csv.Error as error:
        return None, 0, [RowError(1, "", f"{MALFORMED}: {error}")]
    if not header:
        return None, 0, [RowError(0, "", "The file is empty: expected the header image_path,background,defect_category.")]
    columns = [h.strip().lower() for h in header]
    if "category" in columns and "defect_category" not in columns:
        columns[columns.index("category")] = "defect_category"
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        return None, 0, [RowError(1, "", f"missing header column(s): {', '.join(missing)} "
                                         f"(expected image_path,background,defect_category)")]
    at = {name: columns.index(name) for name in COLUMNS}
    for optional in ("annotator", "source"):
        if optional in columns:
            at[optional] = columns.index(optional)
    return at, len(columns), []


def _row(line: int, row: list[str], at: dict[str, int], width: int) -> LabelRow | list[RowError]:
    if len(row) != width:
        return [RowError(line, row[0] if row else "", f"expected {width} columns, found {len(row)}")]
    path = row[at["image_path"]].strip()
    raw_background, raw_category = row[at["background"]], row[at["defect_category"]]
    if ("source" in at and row[at["source"]].strip().lower() == UNRESOLVED
            and not raw_background.strip() and not raw_category.strip()):
        return [RowError(line, path, SKIPPED_UNRESOLVED)]
    background = BACKGROUND_VALUES.get(raw_background.strip().lower())
    category = raw_category.strip().lower()
    problems = []
    if background is None:
        problems.append(f"bad background value {raw_background!r} (expected yes or no)")
    if category not in CATEGORIES:
        problems.append(f"unknown defect category {raw_category!r} (expected one of {', '.join(CATEGORIES)})")
    if problems:
        return [RowError(line, path, message) for message in problems]
    annotator = row[at["annotator"]].strip() if "annotator" in at else ""
    return LabelRow(line, path, background, category, annotator)


def parse_label_csv(data: bytes | str) -> tuple[list[LabelRow], list[RowError]]:
    """The well-formed rows and an error for every problem (blank lines are skipped).

    The file is usable only when the error list is empty: callers import all rows or none. Rows
    the per-image export wrote for unresolved images are not errors: see ``split_skipped``.
    """
    try:
        text = decode(data)
    except ValueError as error:
        return [], [RowError(0, "", str(error))]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    at, width, errors = _header(reader)
    if at is None:
        return [], errors
    rows: list[LabelRow] = []
    seen_rows = 0
    line = 1
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            seen_rows += 1
            parsed = _row(line, row, at, width)
            if isinstance(parsed, LabelRow):
                rows.append(parsed)
            else:
                errors.extend(parsed)
    except csv.Error as error:
        errors.append(RowError(line + 1, "", f"{MALFORMED}: {error}"))
    if seen_rows == 0 and not errors:
        errors.append(RowError(0, "", "The file has a header but no rows."))
    return rows, errors


def split_skipped(errors: list[RowError]) -> tuple[list[RowError], list[RowError]]:
    """(errors, skipped rows): the unresolved rows of a per-image export are reported, not refused."""
    skipped = [e for e in errors if e.message == SKIPPED_UNRESOLVED]
    return [e for e in errors if e.message != SKIPPED_UNRESOLVED], skipped


def count_rows(rows: list[LabelRow], errors: list[RowError]) -> int:
    """How many data rows ``parse_label_csv`` read: the good ones plus the lines with row errors."""
    bad = {e.line for e in errors if e.line > 1 and not e.message.startswith(MALFORMED)}
    return len(rows) + len(bad)


def path_parts(path: str) -> tuple[str, ...]:
    """``a\\b/./c/`` -> ``("a", "b", "c")``."""
    return tuple(p for p in path.strip().replace("\\", "/").split("/") if p not in ("", "."))


K = TypeVar("K", bound=Hashable)


class SuffixIndex(Generic[K]):
    """Which key a path names, by path suffix.

    Built from ``{key: [candidate paths]}`` (strings or part tuples; an image may be known by
    several, e.g. relative to the dataset folder and to its parent). ``find(path)`` takes the
    longest suffix of ``path`` (at least ``MIN_SUFFIX_PARTS`` parts, or all of a shorter path)
    that ends some candidate: it must name exactly one key. One path must end the other: a path
    with leading folders beyond a candidate (``capsule/test/crack/000.png``) never matches a
    candidate that has other folders there (``hazelnut/test/crack/000.png``).
    """

    def __init__(self, candidates: Mapping[K, Iterable[str | Sequence[str]]]):
        self.by_suffix: dict[tuple[str, ...], set[K]] = defaultdict(set)
        self.by_full_path: dict[tuple[str, ...], set[K]] = defaultdict(set)
        for key, paths in candidates.items():
            for path in paths:
                parts = path_parts(path) if isinstance(path, str) else tuple(path)
                self.by_full_path[parts].add(key)
                for k in range(1, len(parts) + 1):
                    self.by_suffix[parts[-k:]].add(key)

    def find(self, path: str) -> tuple[K | None, str]:
        """``(key, "")``, or ``(None, why)``."""
        parts = path_parts(path)
        if not parts:
            return None, "empty image path"
        minimum = min(MIN_SUFFIX_PARTS, len(parts))
        for k in range(len(parts), minimum - 1, -1):
            # All of ``path`` ends a candidate, or part of it is a whole candidate.
            found = self.by_suffix.get(parts) if k == len(parts) else self.by_full_path.get(parts[-k:])
            if found:
                if len(found) > 1:
                    return None, f"ambiguous image path (matches {len(found)} images)"
                return next(iter(found)), ""
        return None, "unknown image (no image of this dataset has this path)"


def match_rows(
    rows: Iterable[LabelRow], find: Callable[[str], tuple[K | None, str]], labellable: Callable[[K], bool],
) -> tuple[list[tuple[LabelRow, K]], list[RowError]]:
    """``(row, image)`` pairs for the rows ``find`` resolves to a labellable image not named before
    (by the same annotator, for rows that name theirs)."""
    matches: list[tuple[LabelRow, K]] = []
    errors: list[RowError] = []
    seen: dict = {}
    for row in rows:
        image, why = find(row.image_path)
        key = (row.annotator, image) if row.annotator else image
        if image is None:
            errors.append(RowError(row.line, row.image_path, why))
        elif not labellable(image):
            errors.append(RowError(row.line, row.image_path, NOT_LABELLED_IMAGE))
        elif key in seen:
            errors.append(RowError(row.line, row.image_path,
                                   f"duplicate row: the same image is already on line {seen[key]}"
                                   + (f" for {row.annotator}" if row.annotator else "")))
        else:
            seen[key] = row.line
            matches.append((row, image))
    return matches, errors
