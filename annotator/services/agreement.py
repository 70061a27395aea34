"""Inter-annotator agreement on the two label fields, separately and jointly.

* **Cohen's kappa** for every pair of annotators, over the images both labelled
  (scikit-learn's ``cohen_kappa_score``), with the pair's confusion matrix (``confusion_matrix``;
  rows: the first annotator, columns: the second, in the order of ``values``).
* **Fleiss' kappa** over all images with at least two labels. With ``n_i`` raters on item ``i``
  and ``n_ij`` of them choosing value ``j``::

      P_i   = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1))      agreement on item i
      P_bar = mean_i P_i                                    observed agreement
      p_j   = sum_i n_ij / sum_i n_i                        share of value j over all ratings
      P_e   = sum_j p_j^2                                   chance agreement
      kappa = (P_bar - P_e) / (1 - P_e)

  When every item has the same number of raters this is exactly Fleiss (1971); with varying
  numbers it is the usual generalisation (each item's agreement weighted equally).
* **Krippendorff's alpha** (nominal), from the coincidence matrix: ``alpha = 1 - D_o / D_e``.

A kappa is ``None`` when it is undefined (chance agreement 1: every rating had the same value).
The "overall" field is the pair (background, category): two labels agree only if both match.
Speed: the median number of seconds between an annotator's consecutive first submissions.
"""
import math
import statistics
from collections import Counter, defaultdict
from itertools import combinations

from django.db import connection
from django.db.models import Count
from sklearn.metrics import cohen_kappa_score

from annotator.models import Image, Label, LabelHistory, User

FIELDS = ("background", "category", "overall")


def field_value(field: str, background: bool, category: str) -> str:
    bg = "yes" if background else "no"
    if field == "background":
        return bg
    if field == "category":
        return category
    return f"{bg}/{category}"


def field_values(field: str) -> list[str]:
    if field == "background":
        return ["yes", "no"]
    if field == "category":
        return list(Label.Category.values)
    return [f"{bg}/{c}" for bg in ("yes", "no") for c in Label.Category.values]


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def cohen_kappa(a: list[str], b: list[str], values: list[str]) -> float | None:
    if not a:
        return None
    if set(a) | set(b) == {a[0]}:
        # Both raters always gave the same single value: chance agreement is 1, kappa undefined.
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _none_if_nan(cohen_kappa_score(a, b, labels=values))


def fleiss_kappa(items: list[list[str]]) -> float | None:
    """Fleiss' kappa of ``items`` (each a list of the values its raters gave; items with <2 raters ignored)."""
    items = [ratings for ratings in items if len(ratings) >= 2]
    if not items:
        return None
    per_item = []
    totals: Counter = Counter()
    n_ratings = 0
    for ratings in items:
        counts = Counter(ratings)
        n = len(ratings)
        per_item.append((sum(c * c for c in counts.values()) - n) / (n * (n - 1)))
        totals.update(counts)
        n_ratings += n
    p_bar = sum(per_item) / len(per_item)
    p_e = sum((count / n_ratings) ** 2 for count in totals.values())
    if math.isclose(p_e, 1.0):
        return None
    return (p_bar - p_e) / (1 - p_e)


def krippendorff_alpha_nominal(items: list[list[str]]) -> float | None:
    """Krippendorff's alpha for nominal data (items with fewer than two ratings are not pairable)."""
    items = [ratings for ratings in items if len(ratings) >= 2]
    if not items:
        return None
    coincidence: Counter = Counter()
    for ratings in items:
        m = len(ratings)
        counts = Counter(ratings)
        for c in counts:
            for k in counts:
                pairs = counts[c] * (counts[k] - (1 if c == k else 0))
                coincidence[(c, k)] += pairs / (m - 1)
    n_c: Counter = Counter()
    for (c, _k), value in coincidence.items():
        n_c[c] += value
    n = sum(n_c.values())
    observed = sum(v for (c, k), v in coincidence.items() if c != k)
    expected = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k) / (n - 1)
    if expected == 0:
        return None
    return 1 - observed / expected


# --- in SQL: what the dashboard and the agreement API read -----------------------------------
# Every statistic above depends on the labels only through a few small tables, which the database
# computes with GROUP BY, so the cost stays the same whatever the number of labels:
#   * per annotator pair, the joint counts of (background, category) over the images both
#     labelled (at most 8 x 8 rows per pair): confusion matrices and Cohen's kappa per field;
#   * per field, how many items have m ratings with sum of squared value counts q: both Fleiss'
#     P_i = (q - m) / (m (m - 1)) and Krippendorff's observed disagreement (m^2 - q) / (m - 1);
#   * per field, the value totals over items with two or more ratings.
SPEED_WINDOW = 1000  # the median speed is taken over each annotator's latest submissions

_BG = "CASE WHEN l.background THEN 'yes' ELSE 'no' END"
VALUE_SQL = {"background": _BG, "category": "l.category", "overall": f"({_BG} || '/' || l.category)"}
_IN_DATASET = (
    "FROM annotator_label l JOIN annotator_image i ON i.id = l.image_id "
    "JOIN annotator_product p ON p.id = i.product_id WHERE p.dataset_id = %s"
)


def _rows(sql: str, params) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _kappa_from_matrix(matrix: list[list[int]]) -> tuple[int, float, float | None]:
    n = sum(map(sum, matrix))
    observed = sum(matrix[i][i] for i in range(len(matrix))) / n
    rows = [sum(row) for row in matrix]
    cols = [sum(col) for col in zip(*matrix)]
    chance = sum(r * c for r, c in zip(rows, cols)) / (n * n)
    kappa = None if math.isclose(chance, 1.0) else (observed - chance) / (1 - chance)
    return n, observed, kappa


def _pairs(dataset_id: int, names: dict[int, str]) -> dict[str, list[dict]]:
    """Cohen's kappa and confusion matrices per annotator pair, per field, from joint counts."""
    joint: dict[tuple[str, str], Counter] = defaultdict(Counter)
    sql = (
        "SELECT l.annotator_id, b.annotator_id, l.background, l.category, b.background, b.category, COUNT(*) "
        "FROM annotator_label l JOIN annotator_label b ON b.image_id = l.image_id AND b.annotator_id > l.annotator_id "
        "JOIN annotator_image i ON i.id = l.image_id JOIN annotator_product p ON p.id = i.product_id "
        "WHERE p.dataset_id = %s GROUP BY l.annotator_id, b.annotator_id, l.background, l.category, "
        "b.background, b.category"
    )
    for a, b, bg_a, cat_a, bg_b, cat_b, count in _rows(sql, [dataset_id]):
        first, second = names[a], names[b]
        if first > second:  # pairs and matrices are oriented by username
            first, second, bg_a, cat_a, bg_b, cat_b = second, first, bg_b, cat_b, bg_a, cat_a
        joint[(first, second)][(bool(bg_a), cat_a, bool(bg_b), cat_b)] += count
    result: dict[str, list[dict]] = {field: [] for field in FIELDS}
    for first, second in sorted(joint):
        counts = joint[(first, second)]
        for field in FIELDS:
            values = field_values(field)
            index = {value: i for i, value in enumerate(values)}
            matrix = [[0] * len(values) for _ in values]
            for (bg_a, cat_a, bg_b, cat_b), count in counts.items():
                matrix[index[field_value(field, bg_a, cat_a)]][index[field_value(field, bg_b, cat_b)]] += count
            n, observed, kappa = _kappa_from_matrix(matrix)
            result[field].append({
                "annotators": [first, second], "n": n, "observed_agreement": observed,
                "cohen_kappa": kappa, "confusion_matrix": {"values": values, "matrix": matrix},
            })
    return result


def _item_statistics(dataset_id: int, field: str) -> dict:
    """Fleiss' kappa and Krippendorff's alpha of one field, from item profiles counted in SQL."""
    value = VALUE_SQL[field]
    profiles = _rows(
        "SELECT m, q, COUNT(*) FROM (SELECT image_id, SUM(c) AS m, SUM(c * c) AS q FROM ("
        f"SELECT l.image_id AS image_id, {value} AS v, COUNT(*) AS c {_IN_DATASET} AND i.label_count >= 2 "
        "GROUP BY l.image_id, v) per_value GROUP BY image_id) per_item GROUP BY m, q",
        [dataset_id],
    )
    profiles = [(int(m), int(q), int(count)) for m, q, count in profiles]  # PostgreSQL sums are Decimal
    totals = dict(_rows(f"SELECT {value} AS v, COUNT(*) {_IN_DATASET} AND i.label_count >= 2 GROUP BY v",
                        [dataset_id]))
    items = sum(count for _m, _q, count in profiles if _m >= 2)
    result = {"fleiss_kappa": None, "krippendorff_alpha": None, "items": items}
    if not items:
        return result
    n = sum(totals.values())
    p_bar = sum(count * (q - m) / (m * (m - 1)) for m, q, count in profiles if m >= 2) / items
    p_e = sum((total / n) ** 2 for total in totals.values())
    if not math.isclose(p_e, 1.0):
        result["fleiss_kappa"] = (p_bar - p_e) / (1 - p_e)
    observed = sum(count * (m * m - q) / (m - 1) for m, q, count in profiles if m >= 2)
    expected = (n * n - sum(total * total for total in totals.values())) / (n - 1)
    if expected:
        result["krippendorff_alpha"] = 1 - observed / expected
    return result


def _per_annotator(dataset, names: dict[int, str]) -> list[dict]:
    """Labels given per annotator, per category and background, and the median seconds between
    their latest ``SPEED_WINDOW`` first submissions in this dataset."""
    per_user: dict[int, dict] = {}
    counts = (
        Label.objects.filter(image__product__dataset=dataset).order_by()
        .values_list("annotator_id", "category", "background").annotate(n=Count("id"))
    )
    for user_id, category, background, n in counts:
        stats = per_user.setdefault(user_id, {"annotator": names[user_id], "labels": 0, "categories": Counter(),
                                              "background_yes": 0})
        stats["labels"] += n
        stats["categories"][category] += n
        stats["background_yes"] += n if background else 0
    for user_id, stats in per_user.items():
        times = list(
            LabelHistory.objects.filter(
                annotator_id=user_id, changed_by_id=user_id, action=LabelHistory.Action.CREATED,
                image__product__dataset=dataset,
            ).exclude(source__in=["review", "csv-import"]).order_by("-changed_at").values_list("changed_at", flat=True)[
                :SPEED_WINDOW
            ]
        )[::-1]
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
        stats["median_seconds"] = statistics.median(gaps) if gaps else None
        stats["categories"] = dict(stats["categories"])
    return sorted(per_user.values(), key=lambda s: s["annotator"])


def dataset_agreement(dataset) -> dict:
    """Everything the agreement API and the dashboard show, computed in SQL (see above)."""
    annotator_ids = Label.objects.filter(image__product__dataset=dataset).order_by().values_list(
        "annotator_id", flat=True).distinct()
    names = dict(User.objects.filter(pk__in=annotator_ids).values_list("pk", "username"))
    labelled = Image.objects.filter(product__dataset=dataset, label_count__gte=1)
    pairs = _pairs(dataset.pk, names)
    result = {
        "annotators": sorted(names.values()),
        "images": labelled.count(),
        "images_with_several_labels": labelled.filter(label_count__gte=2).count(),
        "fields": {field: {"pairs": pairs[field], **_item_statistics(dataset.pk, field)} for field in FIELDS},
        "dataset": dataset.name,
        "per_annotator": _per_annotator(dataset, names),
    }
    return result
