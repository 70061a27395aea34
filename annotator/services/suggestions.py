"""Category suggestions (label assist): features cached per image, one classifier per dataset.

A dataset with ``suggest_categories`` on gets, in the workspace, a pre-selected category for each
new image, computed from the mask and the pixels against the image's nearest defect-free reference
(``annotator.suggestion_features``), learned from the labels already given in the dataset; never
from the defect folder's name. The annotator confirms it (Enter) or changes it (1–4); every label
records the suggestion it was shown and whether it was taken (``Label.suggested_category``,
``Label.suggestion_taken``), and the dashboard reports how good the suggestions are.

Cost: the workspace reads one ``ImageFeatures`` row and the dataset's ``CategorySuggester`` row
and predicts with a dot product, at any dataset size. Everything heavier is the beat task
``annotator.refresh_suggestions`` (``refresh``): it computes missing features in bounded batches
(the labelled images first, to learn from; then the images the queue hands out next) and refits a
dataset's classifier when its labels changed. Reads write nothing.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
from django.db.models import Count, F, Max, OuterRef, Q, Subquery
from django.utils import timezone

from annotator import suggestion_features as sf
from annotator.models import (CategorySuggester, Dataset, Image, ImageFeatures, Label, LabelHistory,
                              NearestReference, ReviewDecision)
from annotator.paths import servable_file, servable_mask

logger = logging.getLogger(__name__)

# Images whose features one beat run computes at most (about 0.07 s each on a 2-core machine).
FEATURES_PER_RUN = 200
# A refit learns from at most this many of the newest labelled images (a fit stays about a second).
MAX_TRAINING_IMAGES = 20_000


@dataclass(frozen=True)
class Suggestion:
    category: str
    probability: float
    n_labels: int  # how many labels it learned from


# --- features ---------------------------------------------------------------------------------
def reference_for(image: Image) -> Image | None:
    """The reference the features compare against: the one the workspace shows first."""
    from annotator.services.references import nearest_reference

    return nearest_reference(image)


def feature_key(image: Image, reference: Image | None) -> str:
    """What the features of ``image`` are computed from; a different key means recompute."""
    dataset = image.product.dataset
    try:
        mask = servable_mask(dataset.root, image.path, image.mask_path) if image.mask_path else None
        mask_version = f"{image.mask_path}:{mask.stat().st_mtime_ns}" if mask else ""
    except (OSError, ValueError):
        mask_version = "missing"
    parts = [image.checksum, mask_version, reference.checksum if reference else "",
             str(dataset.import_options.get("mask_threshold")), str(sf.FEATURE_VERSION)]
    return hashlib.sha256(":".join(parts).encode()).hexdigest()


def compute_features(image: Image) -> ImageFeatures:
    """Compute (or recompute) and store the features of ``image``. Idempotent."""
    from inference.engine.pixels import MASK_THRESHOLD, decode_image, decode_mask, orientation_of

    reference = reference_for(image)
    key = feature_key(image, reference)
    vector = None
    if image.mask_path and reference is not None:
        root = image.product.dataset.root
        image_file = servable_file(root, image.path)
        pixels = np.asarray(decode_image(image_file))
        threshold = image.product.dataset.import_options.get("mask_threshold") or MASK_THRESHOLD
        mask = decode_mask(servable_mask(root, image.path, image.mask_path), threshold=threshold,
                           orientation=orientation_of(image_file)).defect
        vector = sf.features(pixels, np.asarray(decode_image(servable_file(root, reference.path))), mask)
    row, _ = ImageFeatures.objects.update_or_create(
        image=image, defaults={"reference": reference, "key": key, "vector": vector})
    return row


def _needing_features(dataset: Dataset):
    """The dataset's anomalous test images with no features, or features against a reference that
    is no longer their nearest (computed since): one query with a subquery, at any size."""
    nearest = NearestReference.objects.filter(image=OuterRef("pk")).values("reference_id")[:1]
    return (Image.objects.filter(product__dataset=dataset, split=Image.Split.TEST, is_anomalous=True)
            .annotate(nearest_id=Subquery(nearest))
            .filter(Q(suggestion_features__isnull=True)
                    | (Q(nearest_id__isnull=False) & ~Q(suggestion_features__reference_id=F("nearest_id")))))


def compute_missing_features(dataset: Dataset, limit: int = FEATURES_PER_RUN) -> tuple[int, int]:
    """Features of up to ``limit`` images of ``dataset`` that lack them: labelled images first (the
    classifier learns from them), then the open ones in the queue's order.

    Returns (images computed, of them labelled ones)."""
    done = labelled = 0
    pending = _needing_features(dataset).select_related("product__dataset")
    for batch in (pending.filter(label_count__gt=0).order_by("pk"),
                  pending.filter(label_count=0, needs_labels=True).order_by("product", "defect_type", "path")):
        if done >= limit:
            break
        for image in batch[:limit - done]:
            try:
                compute_features(image)
            except Exception:  # a missing or unreadable file: that image gets no suggestion
                logger.exception("suggestion features of image %s failed", image.pk)
                ImageFeatures.objects.update_or_create(
                    image=image, defaults={"reference": reference_for(image), "key": "failed", "vector": None})
            done += 1
            labelled += image.label_count > 0
    return done, labelled


# --- the classifier ---------------------------------------------------------------------------
def _history_mark(dataset: Dataset) -> int:
    return (LabelHistory.objects.filter(image__product__dataset=dataset).aggregate(mark=Max("id"))["mark"] or 0)


def training_set(dataset: Dataset) -> tuple[list[list[float]], list[str]]:
    """(vectors, categories) to learn from: each labelled image with features once, with its final
    label (a reviewer's decision, else its annotators' category when they agree); images still
    disputed teach nothing. The newest ``MAX_TRAINING_IMAGES`` only."""
    images = (Image.objects.filter(product__dataset=dataset, label_count__gt=0,
                                   suggestion_features__vector__isnull=False)
              .order_by("-pk")[:MAX_TRAINING_IMAGES])
    rows = dict(images.values_list("pk", "suggestion_features__vector"))
    decided = dict(ReviewDecision.objects.filter(image_id__in=list(rows)).values_list("image_id", "category"))
    agreed = dict(Label.objects.filter(image_id__in=list(rows), image__disagrees=False).order_by()
                  .values_list("image_id", "category"))
    vectors, categories = [], []
    for pk, vector in rows.items():
        category = decided.get(pk) or agreed.get(pk)
        if category:
            vectors.append(vector)
            categories.append(category)
    return vectors, categories


def refit(dataset: Dataset, force: bool = False) -> CategorySuggester:
    """Fit the dataset's classifier again if its labels changed since the last fit (idempotent)."""
    suggester, _ = CategorySuggester.objects.get_or_create(dataset=dataset)
    mark = _history_mark(dataset)
    if not force and suggester.fitted_at is not None and suggester.history_mark >= mark:
        return suggester
    vectors, categories = training_set(dataset)
    model, error = None, ""
    if sf.enough_labels(categories):
        try:
            model = sf.fit(vectors, categories).to_json()
        except Exception as failure:  # a degenerate set; no suggestion until the next change
            logger.exception("category suggester of dataset %s failed", dataset.pk)
            error = f"{type(failure).__name__}: {failure}"
    CategorySuggester.objects.filter(pk=suggester.pk).update(
        model=model, n_labels=len(categories), history_mark=mark, fitted_at=timezone.now(), error=error)
    suggester.refresh_from_db()
    return suggester


def refresh(limit: int = FEATURES_PER_RUN) -> int:
    """The beat task's work: for every dataset with suggestions on, missing features (bounded),
    then a refit if its labels (or the features it can learn from) changed. Returns images computed."""
    computed = 0
    for dataset in Dataset.objects.filter(suggest_categories=True, archived=False):
        new, labelled = compute_missing_features(dataset, limit)
        computed += new
        # Labelled images that just got features are new examples even if no label changed.
        refit(dataset, force=labelled > 0)
    return computed


# --- what the workspace shows -----------------------------------------------------------------
def requirement() -> str:
    return (f"Suggestions start once the dataset has {sf.MIN_LABELS} labels of at least "
            f"{sf.MIN_CATEGORIES} categories (and its features are computed).")


def suggestion_for(image: Image, reference: Image | None) -> Suggestion | None:
    """The suggested category of ``image`` (None: setting off, too few labels, features not yet
    computed or stale). Two row reads and a dot product; writes nothing."""
    dataset = image.product.dataset
    if not dataset.suggest_categories:
        return None
    suggester = CategorySuggester.objects.filter(dataset=dataset).values_list("model", flat=True).first()
    model = sf.SuggestionModel.from_json(suggester) if suggester else None
    if model is None:
        return None
    row = ImageFeatures.objects.filter(image=image).values_list("key", "vector").first()
    if row is None or row[1] is None or row[0] != feature_key(image, reference):
        return None
    category, probability = model.predict(row[1])
    return Suggestion(category, round(probability, 3), model.n_labels)


# --- how good they are (the dashboard) ----------------------------------------------------------
def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _pair_agreement(dataset: Dataset) -> dict:
    """Category agreement of two annotators on the same image, by whether each was shown a
    suggestion: pairs both shown one, pairs neither shown one, mixed pairs. One GROUP BY."""
    from django.db import connection

    sql = (
        "SELECT a.suggested_category <> '' AS a_shown, b.suggested_category <> '' AS b_shown, "
        "a.category = b.category AS agree, COUNT(*) "
        "FROM annotator_label a JOIN annotator_label b ON a.image_id = b.image_id AND a.annotator_id < b.annotator_id "
        "JOIN annotator_image i ON i.id = a.image_id JOIN annotator_product p ON p.id = i.product_id "
        "WHERE p.dataset_id = %s GROUP BY 1, 2, 3"
    )
    groups = {"both_shown": [0, 0], "neither_shown": [0, 0], "one_shown": [0, 0]}
    with connection.cursor() as cursor:
        cursor.execute(sql, [dataset.pk])
        for a_shown, b_shown, agree, n in cursor.fetchall():
            name = "both_shown" if a_shown and b_shown else "neither_shown" if not (a_shown or b_shown) else "one_shown"
            groups[name][0] += n
            groups[name][1] += n if agree else 0
    return {name: {"pairs": pairs, "agree": agree, "agreement": _share(agree, pairs)}
            for name, (pairs, agree) in groups.items()}


def statistics(dataset: Dataset) -> dict:
    """The suggestion's record in ``dataset`` (aggregates only; the statistics snapshot stores it).

    * ``taken_share``: of the labels shown a suggestion, the share submitted with it;
    * ``accuracy``: of those whose image has a final label (a reviewer's, else all its annotators
      agree), the share whose suggestion equals it;
    * ``with_final``: labels agreeing with their image's final label, with and without a suggestion;
    * ``pairs``: agreement between two annotators of an image, by who was shown a suggestion.
    """
    labels = Label.objects.filter(image__product__dataset=dataset).order_by()
    final = Q(image__review_decision__isnull=False) | Q(image__disagrees=False)
    matches_final = (Q(image__review_decision__isnull=False, image__review_decision__category=F("category"))
                     | Q(image__review_decision__isnull=True, image__disagrees=False))
    suggestion_right = (Q(image__review_decision__isnull=False,
                          image__review_decision__category=F("suggested_category"))
                        | Q(image__review_decision__isnull=True, image__disagrees=False,
                            category=F("suggested_category")))
    shown = ~Q(suggested_category="")
    counts = labels.aggregate(
        shown=Count("id", filter=shown), taken=Count("id", filter=shown & Q(suggestion_taken=True)),
        judged=Count("id", filter=shown & final), correct=Count("id", filter=shown & suggestion_right),
        final_shown=Count("id", filter=shown & final), agree_shown=Count("id", filter=shown & matches_final),
        final_hidden=Count("id", filter=~shown & final), agree_hidden=Count("id", filter=~shown & matches_final),
    )
    by_category = dict(labels.filter(shown).values_list("suggested_category").annotate(n=Count("id")))
    suggester = CategorySuggester.objects.filter(dataset=dataset).first()
    return {
        "enabled": dataset.suggest_categories,
        "shown": counts["shown"],
        "taken": counts["taken"],
        "taken_share": _share(counts["taken"], counts["shown"]),
        "judged": counts["judged"],
        "correct": counts["correct"],
        "accuracy": _share(counts["correct"], counts["judged"]),
        "suggested_categories": by_category,
        "with_final": {
            "shown": {"labels": counts["final_shown"], "agree": counts["agree_shown"],
                      "agreement": _share(counts["agree_shown"], counts["final_shown"])},
            "not_shown": {"labels": counts["final_hidden"], "agree": counts["agree_hidden"],
                          "agreement": _share(counts["agree_hidden"], counts["final_hidden"])},
        },
        "pairs": _pair_agreement(dataset),
        "model_labels": suggester.n_labels if suggester else 0,
        "model_ready": bool(suggester and suggester.model),
        "fitted_at": suggester.fitted_at.isoformat() if suggester and suggester.fitted_at else None,
    }
