"""Drift of each deployment: its line scores (``InspectionVerdict``) against the scores it was
validated on (the run's report), as :mod:`inference.engine.drift` computes them.

The line side is the deployment's newest ``LINE_WINDOW`` verdicts (one indexed query, so the
product page costs the same after a million inspections); the reference side is the run's
report, already in the row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from annotator.models import Product
from inference.engine import drift
from inference.models import Deployment, InspectionVerdict

LINE_WINDOW = 500  # the newest verdicts of a deployment that are compared
DEPLOYMENTS_SHOWN = 5
CHART_WIDTH, CHART_HEIGHT = 320.0, 120.0


@dataclass
class DeploymentDrift:
    deployment: Deployment
    statistics: drift.DriftStatistics
    image_threshold: float
    chart: dict  # SVG polylines and axis values for the template
    is_current: bool

    @property
    def message(self) -> str:
        s = self.statistics
        if not s.enough:
            return (f"{s.line_count} image{'s' if s.line_count != 1 else ''} inspected with it; the check needs "
                    f"{drift.MIN_LINE_IMAGES}.")
        parts = []
        if s.shifted:
            parts.append(f"the line's image scores differ from the validation scores (Kolmogorov-Smirnov "
                         f"p = {s.p_value:.2g} < {drift.SIGNIFICANCE})")
        if s.more_rejected:
            parts.append("more parts are rejected than the validation images predict (or the line makes more "
                         "defective parts than it did)")
        if not parts:
            return (f"No drift seen: the line's scores match validation (Kolmogorov-Smirnov p = {s.p_value:.2g}) "
                    "and rejections are as expected.")
        return "Drift: " + "; ".join(parts) + ". Check lighting, camera and parts, then re-benchmark on new images."


def _reference(part) -> tuple[np.ndarray, np.ndarray]:
    """(every defect-free score the run measured: its validation part's, which the image
    threshold was fitted on, and its test part's; the test part's alone, for the false-reject
    rate the threshold was not fitted to)."""
    report = part.report or {}
    validation = [float(v) for v in ((report.get("image_decision") or {}).get("defect_free_validation_scores") or [])]
    test_part = [float(e["score"]) for e in report.get("per_image") or [] if not e.get("anomalous")]
    return np.array(validation + test_part), np.array(test_part)


def _image_threshold(deployment: Deployment) -> float | None:
    decision = (deployment.product_run.report or {}).get("image_decision") or {}
    return decision.get("threshold")


def deployment_drift(deployment: Deployment, is_current: bool = False) -> DeploymentDrift | None:
    threshold = _image_threshold(deployment)
    if threshold is None:
        return None
    reference, test_part = _reference(deployment.product_run)
    line = np.array(list(InspectionVerdict.objects.filter(deployment=deployment)
                         .order_by("-inspected_at", "-id").values_list("score", flat=True)[:LINE_WINDOW]))
    statistics = drift.drift_statistics(reference, line, threshold,
                                        expected_from=test_part if test_part.size else None)
    everything = np.concatenate([reference, line, [threshold]])
    low, high = float(everything.min()), float(everything.max())
    pad = (high - low) * 0.05 or 1.0
    low, high = low - pad, high + pad
    chart = {
        "width": CHART_WIDTH, "height": CHART_HEIGHT, "low": low, "high": high,
        "reference": drift.ecdf_polyline(reference, low, high, CHART_WIDTH, CHART_HEIGHT),
        "line": drift.ecdf_polyline(line, low, high, CHART_WIDTH, CHART_HEIGHT),
        "threshold_x": (threshold - low) / (high - low) * CHART_WIDTH,
    }
    return DeploymentDrift(deployment, statistics, float(threshold), chart, is_current)


def product_drift(product: Product) -> list[DeploymentDrift]:
    """The current deployment and the latest others that inspected images, newest first."""
    deployments = list(Deployment.objects.filter(product=product).select_related("product_run")
                       .order_by("-deployed_at", "-id")[:DEPLOYMENTS_SHOWN])
    if not deployments:
        return []
    with_verdicts = set(InspectionVerdict.objects.filter(deployment__in=deployments)
                        .values_list("deployment", flat=True).distinct())
    checks = []
    for position, deployment in enumerate(deployments):
        if position == 0 or deployment.pk in with_verdicts:
            check = deployment_drift(deployment, is_current=position == 0)
            if check is not None:
                checks.append(check)
    return checks
