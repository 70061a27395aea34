"""The engine's report: one typed structure, one meaning per key.

``run_benchmark`` builds a :class:`BenchmarkReport` and returns it as plain JSON (``to_json``);
the Django side stores that JSON and every consumer (results page, CSV/JSON downloads,
recommendation, CLI, bench) reads these names. ``report.schema.json`` beside this file is the
JSON schema generated from these classes (:func:`json_schema`); a test holds the two equal and
validates real reports against it. Bump :data:`SCHEMA_VERSION` when a meaning changes.

Vocabulary
----------
* *whole folder*: every image of the product's test folder (comparable with published numbers).
* *validation part* / *test part*: the seeded, stratified halves of the test folder
  (:func:`inference.engine.split.split_validation_test`). Everything fitted or chosen
  (thresholds, the technique, early stopping) uses the validation part; every number with an
  interval is measured on the test part.
* :class:`Estimate`: a test-part number with its 95 % stratified percentile bootstrap
  interval over test images (``low``/``high``; None where a resample cannot define it).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Literal

import numpy as np

SCHEMA_VERSION = 5
# Reports of these versions read with today's names (5 only added ``masks`` and
# ``per_image[].has_mask``; a report without them had a mask for every anomalous image).
READABLE_SCHEMA_VERSIONS = (4, 5)

FailureReason = Literal[
    "no_anomalous_validation_images",
    "no_defect_free_validation_images",
    "too_few_anomalous_validation_images",
    "no_masked_anomalous_validation_images",
    "invalid_setting",
]


@dataclass
class FitFailure:
    """Why a threshold (or a cross-fitted score) could not be fitted."""

    reason: FailureReason
    message: str


@dataclass
class Estimate:
    """A test-part number and its 95 % bootstrap interval."""

    value: float | None
    low: float | None = None
    high: float | None = None


def estimate_parts(estimate, digits: int = 3) -> tuple[str, str | None]:
    """An ``Estimate`` as stored in a report (a dict of value, low, high), or a plain number, or
    None, as text: ("0.912", "[0.871, 0.944]"); the interval is None where there is none, the
    value "—" where there is no value. The one formatting of estimates (CLI, pages, advice)."""
    if isinstance(estimate, dict):
        value, low, high = estimate.get("value"), estimate.get("low"), estimate.get("high")
    else:
        value, low, high = estimate, None, None

    def number(x) -> bool:
        return isinstance(x, numbers.Real) and not isinstance(x, bool)

    if not number(value):
        return "—", None
    interval = f"[{low:.{digits}f}, {high:.{digits}f}]" if number(low) and number(high) else None
    return f"{value:.{digits}f}", interval


def estimate_text(estimate, digits: int = 3) -> str:
    """``0.912 [0.871, 0.944]``: a test-part number and its 95 % interval (see ``estimate_parts``)."""
    value, interval = estimate_parts(estimate, digits)
    return f"{value} {interval}" if interval else value


# Shown instead of a pixel number that no anomalous image with a mask could measure.
NEEDS_MASKS_TEXT = "needs masks"


def mask_coverage(report: dict) -> dict | None:
    """What a stored report (JSON) says about anomalous images without a mask, for every reader
    (results page, CSV, CLI): None when every one had a mask (and in reports made before schema 5).

    ``text``: "pixel metrics on N of M anomalous images (the others have no mask)" with the counts
    per part; ``test_has_masks`` / ``validation_has_masks``: whether the test-part pixel numbers
    and the mask-based thresholds could be measured at all (else they read ``NEEDS_MASKS_TEXT``).
    """
    m = report.get("masks") if report else None
    if not m or not (m["test_image_level_only"] + m["validation_image_level_only"]):
        return None
    test_total = m["test_with_mask"] + m["test_image_level_only"]
    val_total = m["validation_with_mask"] + m["validation_image_level_only"]
    with_mask = m["test_with_mask"] + m["validation_with_mask"]
    return {
        "text": (f"pixel metrics on {with_mask} of {test_total + val_total} anomalous images (the others have "
                 f"no mask): {m['test_with_mask']} of {test_total} in the test part, "
                 f"{m['validation_with_mask']} of {val_total} in the validation part; image AUROC and the "
                 "image decision use all of them"),
        "with_mask": with_mask, "total": test_total + val_total,
        "test_has_masks": m["test_with_mask"] > 0, "validation_has_masks": m["validation_with_mask"] > 0,
        "any_masks": with_mask > 0,
    }


def pixel_estimate_text(estimate, coverage: dict | None, digits: int = 3, *, whole_folder: bool = False) -> str:
    """``estimate_text`` of a pixel number, or ``NEEDS_MASKS_TEXT`` where no anomalous image of
    its part had a mask (``coverage``: :func:`mask_coverage`)."""
    value, _ = estimate_parts(estimate, digits)
    measured = coverage is None or coverage["any_masks" if whole_folder else "test_has_masks"]
    return NEEDS_MASKS_TEXT if value == "—" and not measured else estimate_text(estimate, digits)


@dataclass
class ThresholdFree:
    """``aupimo``: the mean AUPIMO of the anomalous images (``pimo.py``); None where undefined."""

    image_auroc: float | None
    pixel_auroc: float | None
    aupro: float | None
    aupimo: float | None


@dataclass
class ThresholdFreeEstimates:
    """``aupimo``: the mean AUPIMO of the anomalous test images, its interval over test images."""

    image_auroc: Estimate
    pixel_auroc: Estimate
    aupro: Estimate
    aupimo: Estimate


@dataclass
class AupimoDistribution:
    """How AUPIMO (``pimo.py``) spreads over the anomalous test images, integrated over FPR
    ``fpr_low`` to ``fpr_high`` of the defect-free ones: the minimum, quartiles and maximum.

    The mean, with its interval, is ``test_part.aupimo``; each image's own value is in
    ``per_image``. ``note`` says why there is none ("" when there is).
    """

    fpr_low: float
    fpr_high: float
    n_images: int
    min: float | None
    q25: float | None
    median: float | None
    q75: float | None
    max: float | None
    note: str


@dataclass
class Segmentation:
    """Pixel metrics pooled over a set of images (``mean_image_iou``: mean over its anomalous ones)."""

    iou: float | None
    dice: float | None
    precision: float | None
    recall: float | None
    fpr: float | None
    mean_image_iou: float | None


@dataclass
class SegmentationEstimates:
    """Test-part pixel metrics of one threshold, with intervals.

    ``fpr``: share of all normal test pixels predicted anomalous; ``good_image_fpr``: share of
    the pixels of the defect-free test images predicted anomalous (what a clean part costs).
    """

    iou: Estimate
    dice: Estimate
    precision: Estimate
    recall: Estimate
    fpr: Estimate
    mean_image_iou: Estimate
    good_image_fpr: Estimate


@dataclass
class DecisionEstimates:
    """Intervals of the deployed procedure (``decision_intervals.py``): the validation images
    redrawn and the threshold refitted in every resample, so they hold where the threshold lands.

    ``threshold``: the fitted threshold and the 95 % interval of its refits; ``iou``: the test IoU
    (the same value as ``test.iou``) with the interval of the refitted thresholds' test IoUs.
    """

    threshold: Estimate
    iou: Estimate
    # Each bootstrap resample's test IoU at its refitted threshold (None where undefined), in
    # resample order: two runs on the same test images and seed drew the same resamples, so the
    # recommendation pairs them (:func:`evaluation.paired_resample_difference`).
    iou_resamples: list[float | None] = dataclasses.field(default_factory=list)


@dataclass
class SizeClassDetection:
    """One defect-size class at one threshold on the test part (``regions.py``).

    ``regions``: the defect regions whose area is a share of the image in [``share_low``,
    ``share_high``) (``share_high`` None: no upper bound); ``detected``: those the predicted mask
    covers by at least 30 % of their pixels (stricter than ``RegionDetection.found``, one pixel);
    ``detection_rate`` = detected / regions with its interval (None without regions);
    ``lower_than_best``: its interval lies entirely below that of the class with the highest rate.
    """

    size_class: str
    share_low: float
    share_high: float | None
    regions: int
    detected: int
    detection_rate: Estimate
    lower_than_best: bool = False


@dataclass
class RegionDetection:
    """What an inspector counts at one threshold on the test part (``regions.py``).

    ``defect_regions``: the 8-connected regions of the anomalous test images' masks; ``found``:
    those the predicted mask overlaps by at least one pixel; ``detection_rate`` = found / regions
    (pooled, with its interval); ``false_alarm_regions``: connected regions of the predicted mask
    on the ``good_images`` defect-free test images; ``false_alarms_per_good_image``: their mean.
    ``by_size``: the defect regions per size class, detected by the 30 % overlap rule.
    """

    defect_regions: int
    found: int
    detection_rate: Estimate
    good_images: int
    false_alarm_regions: int
    false_alarms_per_good_image: Estimate
    by_size: list[SizeClassDetection] = dataclasses.field(default_factory=list)


@dataclass
class TechniqueResult:
    """One threshold technique: fitted on the whole validation part, measured on the test part."""

    technique: str
    threshold: float | None
    failure: FitFailure | None
    validation: Segmentation | None
    test: SegmentationEstimates | None
    # The threshold as a percentile of the pixel scores of the defect-free validation images
    # (99.5: 0.5 % of a clean part's pixels lie above it); None without such images.
    threshold_percentile: float | None = None
    decision: DecisionEstimates | None = None
    regions: RegionDetection | None = None


@dataclass
class ImageClassification:
    precision: float | None
    recall: float | None
    accuracy: float | None
    fpr: float | None


@dataclass
class ImageClassificationEstimates:
    precision: Estimate
    recall: Estimate
    accuracy: Estimate
    fpr: Estimate


@dataclass
class ImageDecision:
    """Good or defective per image: the image score (map maximum) against its own threshold.

    Fitted on the validation part's image scores, separately from the pixel thresholds (those
    segment; this one sorts parts).
    """

    rule: str
    threshold: float | None
    failure: FitFailure | None
    validation: ImageClassification | None
    test: ImageClassificationEstimates | None
    # The image scores of the validation part's defect-free images, the ones the threshold was
    # fitted on: with the test part's (``per_image``) the reference a deployment's line scores are
    # compared with for drift (empty in reports from before it was kept).
    defect_free_validation_scores: list[float] = dataclasses.field(default_factory=list)


@dataclass
class SelectionEntry:
    technique: str
    cv_iou: float | None  # IoU pooled over the held-out folds' TP/FP/FN pixels
    folds_scored: int
    failure: FitFailure | None


@dataclass
class Selection:
    """How the recommended technique was chosen: cross-fitting inside the validation part."""

    method: str
    n_folds: int
    rule: str
    chosen: str | None
    entries: list[SelectionEntry]


@dataclass
class FewShotPoint:
    n_anomalous: int
    iou_mean: float | None
    iou_low: float | None
    iou_high: float | None
    draws: int


@dataclass
class FewShotCurve:
    technique: str
    needs_anomalous: bool
    points: list[FewShotPoint]
    # smallest n whose mean test IoU is within ``FewShot.tolerance`` of using all; None if none is
    enough: int | None
    failure: FitFailure | None


@dataclass
class FewShot:
    """Test IoU when each threshold is fitted on only n anomalous validation images.

    Every defect-free validation image is always used; the n anomalous ones are drawn at random
    (``draws`` seeded draws per n, interval = 2.5th..97.5th percentile of the draws). Thresholds
    are picked among the ``candidates`` validation-score quantiles the IoU curve uses.
    """

    draws: int
    candidates: int
    tolerance: float
    n_values: list[int]
    n_available: int
    curves: list[FewShotCurve]


@dataclass
class LabelUncertainty:
    """A subset's numbers with the anomalous test images weighted by their annotators' votes.

    ``weighted``: per technique, pixel metrics pooled over every anomalous test image, its TP, FP
    and FN pixels weighted by the share of its annotators who chose this subset's value (an image
    whose annotators agreed weighs 1 in its final label's subset, 0 elsewhere); ``weight_total``:
    the sum of those weights (the subset's size by votes); ``n_disputed``: the disputed test images
    that weigh here or have this final label; ``final_iou``: the final-label IoU of ``technique``
    (the run's chosen one) with its 95 % bootstrap interval over the subset's final-label
    anomalous test images; ``depends_on_disputed_labels``: the weighted IoU of ``technique`` lies
    outside that interval, or the subset has test images only by disputed votes
    (``label_uncertainty.py``).
    """

    weighted: dict[str, Segmentation | None]
    weight_total: float
    n_disputed: int
    technique: str | None
    final_iou: Estimate
    depends_on_disputed_labels: bool


@dataclass
class SubsetReport:
    """One category / defect type / background value.

    ``segmentation`` is measured on the subset's anomalous TEST images only (pooled over their
    pixels), so a subset's numbers do not move when another subset grows; the defect-free
    images' false positives are reported once per run (``good_image_fpr`` in each technique).
    ``threshold_free``: the subset's anomalous test images against every defect-free test
    image (AUROC does not depend on the class ratio); ``whole_folder``: the same on the whole
    test folder, so a subset whose anomalous images all fell in the validation part still
    has numbers.
    """

    n_anomalous_test: int
    n_anomalous_validation: int
    threshold_free: ThresholdFree | None
    whole_folder: ThresholdFree
    segmentation: dict[str, Segmentation | None]
    note: str
    # Per category / background value, where annotators disagreed on some anomalous test image of
    # the run; None otherwise and per defect type.
    label_uncertainty: LabelUncertainty | None = None


@dataclass
class Breakdowns:
    by_defect_type: dict[str, SubsetReport]
    by_category: dict[str, SubsetReport]
    by_background: dict[str, SubsetReport]


@dataclass
class Split:
    val_fraction: float
    seed: int
    validation_counts: dict[str, int]
    test_counts: dict[str, int]
    validation: list[str]
    test: list[str]


@dataclass
class MaskCoverage:
    """How many anomalous images had a mask, per part. An anomalous image without one (imported
    without a mask) is image-level evidence: image AUROC and the image decision (defective parts
    caught) use every anomalous image; the numbers in ``needs_masks`` (pixel AUROC, AUPRO, AUPIMO,
    every threshold technique's pixel metrics, regions and defect sizes, the few-shot study) use
    only those with a mask, and the techniques that need labelled defects are fitted only on the
    validation part's anomalous images with a mask.
    """

    test_with_mask: int
    test_image_level_only: int
    validation_with_mask: int
    validation_image_level_only: int
    needs_masks: list[str]


# The report's numbers measured on the anomalous images with a mask only (``MaskCoverage``).
PIXEL_METRICS = ("pixel_auroc", "aupro", "aupimo", "techniques", "few_shot", "selection", "curves")


@dataclass
class Bootstrap:
    resamples: int
    seed: int
    confidence: float
    method: str


@dataclass
class MeanSpread:
    mean: float | None
    std: float | None
    n: int


@dataclass
class Repeats:
    """The evaluation repeated on ``seeds`` (other validation/test splits of the same test folder)."""

    seeds: list[int]
    chosen: list[str | None]
    metrics: dict[str, MeanSpread]
    note: str


@dataclass
class Comparability:
    """What two runs must share to be compared on the same evidence (the recommendation checks it)."""

    test_images_digest: str
    image_size: int
    backbone: str
    seed: int
    val_fraction: float


@dataclass
class PerImage:
    key: str
    defect_type: str
    category: str | None
    background: bool | None
    anomalous: bool
    score: float
    predicted_anomalous: bool | None  # image decision
    iou: dict[str, float | None]
    # per technique [TP, FP, FN] pixels: paired comparisons between runs resample these
    counts: dict[str, list[int]]
    artifacts: dict[str, str] | None
    # AUPIMO of an anomalous image (None for defect-free ones, or where undefined: see ``aupimo.note``)
    aupimo: float | None = None
    # per technique [defect regions found, defect regions, false-alarm regions] (``regions.py``)
    regions: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    # False: an anomalous image without a mask (image-level evidence: score and decision only)
    has_mask: bool = True


@dataclass
class Timing:
    fit_seconds: float
    inference_ms_per_image: float
    evaluation_seconds: float
    total_seconds: float


@dataclass
class BenchmarkReport:
    schema_version: int
    config: dict[str, typing.Any]
    device: str
    threads: int
    model_info: dict[str, typing.Any]
    split: Split
    comparability: Comparability
    whole_folder: ThresholdFree
    test_part: ThresholdFreeEstimates
    aupimo: AupimoDistribution
    techniques: dict[str, TechniqueResult]
    selection: Selection
    recommended_technique: str | None
    image_decision: ImageDecision
    few_shot: FewShot
    breakdowns: Breakdowns
    bootstrap: Bootstrap
    repeats: Repeats | None
    per_image: list[PerImage]
    artifact_technique: str | None
    curves: dict[str, str]
    timing: Timing
    peak_memory_mb: float
    peak_rss_mb: float
    cuda_peak_memory_mb: float | None
    model_memory_mb: float
    n_train: int
    n_test: int
    # where the images came from, filled by the caller (CLI: data_root, product)
    source: dict[str, str]
    # The heat maps' colour scale (jet): score ``low`` is blue, ``high`` red (the validation
    # maps' 1st and 99.9th percentiles); None without artifacts.
    colour_scale: dict[str, float] | None = None
    # Anomalous images with and without a mask (None in reports made before schema 5: all had one)
    masks: MaskCoverage | None = None

    def to_json(self) -> dict:
        return clean_json(dataclasses.asdict(self))


def clean_json(obj):
    """Plain JSON values: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


# ---- JSON schema, generated from the classes above ---------------------------------------------
def _schema_of(tp, defs: dict) -> dict:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is typing.Any:
        return {}
    if origin in (typing.Union, types.UnionType):
        options = [_schema_of(a, defs) for a in args]
        return {"anyOf": options}
    if tp is type(None):
        return {"type": "null"}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is list:
        return {"type": "array", "items": _schema_of(args[0], defs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of(args[1], defs)}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            hints = typing.get_type_hints(tp)
            props = {f.name: _schema_of(hints[f.name], defs) for f in dataclasses.fields(tp)}
            entry = {"type": "object", "properties": props, "required": sorted(props),
                     "additionalProperties": False}
            doc = (tp.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            if doc and not doc.startswith(f"{name}("):
                entry["description"] = " ".join(doc.split())
            defs[name] = entry
        return {"$ref": f"#/$defs/{name}"}
    raise TypeError(f"no JSON schema for {tp!r}")


def json_schema() -> dict:
    """The JSON schema of :meth:`BenchmarkReport.to_json` (committed as report.schema.json)."""
    defs: dict = {}
    root = _schema_of(BenchmarkReport, defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"DefectBench engine report, schema version {SCHEMA_VERSION}",
        **root,
        "$defs": dict(sorted(defs.items())),
    }
