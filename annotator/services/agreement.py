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

from sklearn.metrics import cohen_kappa_score, confusion_matrix

from annotator.models import Label, LabelHistory

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


def compute_agreement(labels) -> dict:
    """Agreement statistics of ``labels`` (a Label queryset or iterable with annotator loaded)."""
    ratings: dict[int, dict[str, tuple[bool, str]]] = defaultdict(dict)
    for label in labels:
        ratings[label.image_id][label.annotator.username] = (label.background, label.category)
    annotators = sorted({name for per_image in ratings.values() for name in per_image})
    result = {"annotators": annotators, "images": len(ratings),
              "images_with_several_labels": sum(1 for r in ratings.values() if len(r) >= 2),
              "fields": {}}
    for field in FIELDS:
        values = field_values(field)
        pairs = []
        for first, second in combinations(annotators, 2):
            common = [image for image, r in ratings.items() if first in r and second in r]
            if not common:
                continue
            a = [field_value(field, *ratings[image][first]) for image in sorted(common)]
            b = [field_value(field, *ratings[image][second]) for image in sorted(common)]
            matrix = confusion_matrix(a, b, labels=values).tolist()
            pairs.append({
                "annotators": [first, second],
                "n": len(common),
                "observed_agreement": sum(x == y for x, y in zip(a, b)) / len(common),
                "cohen_kappa": cohen_kappa(a, b, values),
                "confusion_matrix": {"values": values, "matrix": matrix},
            })
        items = [[field_value(field, *v) for v in r.values()] for r in ratings.values()]
        result["fields"][field] = {
            "pairs": pairs,
            "fleiss_kappa": fleiss_kappa(items),
            "krippendorff_alpha": krippendorff_alpha_nominal(items),
            "items": sum(1 for i in items if len(i) >= 2),
        }
    return result


def annotator_stats(labels) -> list[dict]:
    """Per annotator: labels given, per category and background, median seconds between submissions."""
    per_user: dict[str, dict] = {}
    user_ids = {}
    image_ids = set()
    for label in labels:
        image_ids.add(label.image_id)
        name = label.annotator.username
        user_ids[name] = label.annotator_id
        stats = per_user.setdefault(
            name, {"annotator": name, "labels": 0, "categories": Counter(), "background_yes": 0}
        )
        stats["labels"] += 1
        stats["categories"][label.category] += 1
        stats["background_yes"] += int(label.background)
    for name, stats in per_user.items():
        times = list(
            LabelHistory.objects.filter(
                annotator_id=user_ids[name], changed_by_id=user_ids[name],
                action=LabelHistory.Action.CREATED, image_id__in=image_ids,
            ).exclude(source__in=["review", "csv-import"]).order_by("changed_at").values_list("changed_at", flat=True)
        )
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
        stats["median_seconds"] = statistics.median(gaps) if gaps else None
        stats["categories"] = dict(stats["categories"])
    return sorted(per_user.values(), key=lambda s: s["annotator"])


def dataset_agreement(dataset) -> dict:
    labels = list(
        Label.objects.filter(image__product__dataset=dataset).select_related("annotator").order_by("image_id")
    )
    result = compute_agreement(labels)
    result["dataset"] = dataset.name
    result["per_annotator"] = annotator_stats(labels)
    return result
