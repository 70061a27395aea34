"""Turning engine reports into what pages, downloads and comparisons show."""
from __future__ import annotations

import csv
import io
from numbers import Number

from annotator.services.label_csv import safe_cell
from inference.models import BenchmarkRun, Technique

THRESHOLD_FREE_KEYS = ("image_auroc", "pixel_auroc", "aupro")
TECHNIQUE_KEYS = ("threshold", "iou", "mean_image_iou", "dice", "precision", "recall", "fpr", "image_accuracy")
TECHNIQUE_LABELS = dict(Technique.choices)
TECHNIQUE_SHORT = {"iou_curve": "IoU curve", "f1": "Max F1", "roc": "ROC (Youden)",
                   "normal_fpr": "Normal FPR", "normal_max": "Normal max"}
SUMMARY_SKIP = ("per_image",)


def summary(report: dict) -> dict:
    """The report without its per-image list (which can be large)."""
    return {k: v for k, v in (report or {}).items() if k not in SUMMARY_SKIP}


def _is_number(v) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool)


def _mean_tree(items: list):
    """Mean of numeric leaves across several same-shaped dicts (missing/None ignored)."""
    present = [i for i in items if i is not None]
    if not present:
        return None
    if all(isinstance(i, dict) for i in present):
        keys = []
        for item in present:
            keys += [k for k in item if k not in keys]
        return {k: _mean_tree([item.get(k) for item in present]) for k in keys}
    numbers = [i for i in present if _is_number(i)]
    if numbers and len(numbers) == len(present):
        return sum(numbers) / len(numbers)
    return present[0] if all(i == present[0] for i in present) else None


def best_technique(summary_report: dict) -> str | None:
    """The technique with the best validation IoU in one (product or aggregate) summary.

    Chosen on the validation part, like the engine's own ``recommended_technique``: picking it
    by test IoU would make the test figures an optimistic estimate.
    """
    best, best_iou = None, None
    for name, values in (summary_report.get("validation_inference") or {}).items():
        iou = (values or {}).get("iou")
        if _is_number(iou) and (best_iou is None or iou > best_iou):
            best, best_iou = name, iou
    return best


def aggregate_metrics(reports: dict[str, dict]) -> dict:
    """``{"products": {name: summary}, "aggregate": ..., "n_products": n}``.

    With several products the aggregate is the unweighted mean over products of every metric
    (threshold-free, per technique, per category and background); timings are summed.
    """
    products = {name: summary(r) for name, r in reports.items()}
    if len(products) == 1:
        aggregate = dict(next(iter(products.values())))
        aggregate["method"] = "single product"
    else:
        values = list(products.values())
        aggregate = {}
        for key in ("threshold_free", "test_threshold_free", "inference", "validation_inference",
                    "by_category", "by_background", "by_defect_type"):
            aggregate[key] = _mean_tree([v.get(key) for v in values]) or {}
        aggregate["timing"] = {
            k: sum(v.get("timing", {}).get(k) or 0 for v in values)
            for k in ("fit_seconds", "total_seconds")
        }
        aggregate["timing"]["inference_ms_per_image"] = _mean_tree(
            [v.get("timing", {}).get("inference_ms_per_image") for v in values]
        )
        aggregate["peak_memory_mb"] = max((v.get("peak_memory_mb") or 0) for v in values)
        aggregate["device"] = _mean_tree([v.get("device") for v in values])
        aggregate["method"] = f"mean over {len(values)} products"
        aggregate["recommended_technique"] = best_technique(aggregate)
    return {"products": products, "aggregate": aggregate, "n_products": len(products)}


def technique_rows(block: dict | None) -> list[dict]:
    """Rows for a technique x metrics table from an ``inference`` block."""
    rows = []
    for name, values in (block or {}).items():
        values = values or {}
        rows.append({
            "technique": name,
            "label": TECHNIQUE_SHORT.get(name, name),
            "description": TECHNIQUE_LABELS.get(name, name),
            "error": values.get("error"),
            **{k: values.get(k) for k in TECHNIQUE_KEYS},
        })
    return rows


def subset_tables(summary_report: dict, key: str) -> list[dict]:
    """One table per subset value of ``by_category`` / ``by_background``."""
    tables = []
    names = {"True": "with background", "False": "without background"}
    for subset, block in (summary_report.get(key) or {}).items():
        block = block or {}
        tables.append({
            "subset": names.get(subset, subset) if key == "by_background" else subset,
            "n_images": block.get("n_images"),
            "threshold_free": block.get("threshold_free") or {},
            "whole_folder_threshold_free": block.get("whole_folder_threshold_free") or {},
            "note": block.get("note", ""),
            "rows": technique_rows(block.get("inference")),
        })
    return tables


CSV_COLUMNS = ["run", "model", "product", "subset", "n_images", "technique", *TECHNIQUE_KEYS, *THRESHOLD_FREE_KEYS]


def _csv_rows(run: BenchmarkRun, scope: str, s: dict):
    def rows_for(subset, block, n_images):
        free = (block or {}).get("test_threshold_free") or (block or {}).get("threshold_free") or {}
        for name, values in ((block or {}).get("inference") or {"-": {}}).items():
            values = values or {}
            yield [run.pk, run.model, scope, subset, n_images, name,
                   *[values.get(k, values.get("error") if k == "threshold" else None) for k in TECHNIQUE_KEYS],
                   *[free.get(k) for k in THRESHOLD_FREE_KEYS]]

    yield from rows_for("all", s, len((s.get("split") or {}).get("test") or []) or None)
    for key, prefix in (("by_category", "category"), ("by_background", "background")):
        for subset, block in (s.get(key) or {}).items():
            subset = {"True": "yes", "False": "no"}.get(subset, subset) if prefix == "background" else subset
            yield from rows_for(f"{prefix}:{subset}", block, (block or {}).get("n_images"))


def run_csv(run: BenchmarkRun) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    metrics = run.metrics or {}
    if metrics.get("n_products", 0) > 1:
        for row in _csv_rows(run, "aggregate", metrics.get("aggregate") or {}):
            writer.writerow(row)
    for name, s in (metrics.get("products") or {}).items():
        for row in _csv_rows(run, safe_cell(name), s):  # a product name is user text: no live formulas
            writer.writerow(row)
    return out.getvalue()


def run_json(run: BenchmarkRun) -> dict:
    return {
        "run": describe_run(run),
        "metrics": run.metrics,
        "products": {
            part.product.name: part.report for part in run.product_runs.select_related("product")
        },
    }


def describe_run(run: BenchmarkRun) -> dict:
    return {
        "id": run.pk,
        "dataset": run.dataset.name,
        "products": [p.name for p in run.products.all()],
        "categories": run.categories,
        "background": run.background,
        "model": run.model,
        "config": run.config,
        "techniques": run.techniques,
        "seed": run.seed,
        "status": run.status,
        "created_by": run.created_by.username if run.created_by else None,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def gallery(part, limit: int = 12) -> dict:
    """Per-image entries of a product report, anomalous ones worst and best first by IoU.

    The IoU shown is the one of the technique whose threshold drew the predicted masks.
    """
    report = part.report or {}
    technique = report.get("artifact_technique") or report.get("recommended_technique") or best_technique(report)
    entries = []
    for entry in report.get("per_image") or []:
        iou = entry.get("iou")
        if isinstance(iou, dict):
            iou = iou.get(technique) if technique else None
        artifacts = entry.get("artifacts") or {}
        key = str(entry.get("key", ""))
        entries.append({
            "key": key,
            "image_id": int(key) if key.isdigit() else None,
            "defect_type": entry.get("defect_type"),
            "category": entry.get("category"),
            "score": entry.get("score"),
            "iou": iou if _is_number(iou) else None,
            "heatmap": artifacts.get("overlay") or artifacts.get("heatmap"),
            "predicted": artifacts.get("mask") or artifacts.get("predicted_mask"),
            "anomalous": (entry.get("defect_type") or "good") != "good",
        })
    anomalous = [e for e in entries if e["anomalous"] and e["iou"] is not None]
    anomalous.sort(key=lambda e: (e["iou"], e["key"]))
    half = min(max(1, limit // 2), (len(anomalous) + 1) // 2)
    worst = anomalous[:half]
    best = [e for e in reversed(anomalous[half:])][:half]
    good = sorted((e for e in entries if not e["anomalous"]), key=lambda e: -(e["score"] or 0))[:4]
    return {"technique": technique, "worst": worst, "best": best, "good": good, "count": len(entries)}


def comparison(runs: list[BenchmarkRun]) -> dict:
    """Side-by-side rows: threshold-free metrics and every technique's metrics per run."""
    columns = []
    for run in runs:
        agg = (run.metrics or {}).get("aggregate") or {}
        columns.append({"run": run, "agg": agg})
    free_rows = []
    for key in THRESHOLD_FREE_KEYS:
        values = [((c["agg"].get("test_threshold_free") or c["agg"].get("threshold_free") or {}).get(key)) for c in columns]
        free_rows.append({"metric": key, "values": values, "best": _best_index(values)})
    techniques = []
    for c in columns:
        techniques += [t for t in (c["agg"].get("inference") or {}) if t not in techniques]
    technique_rows_ = []
    for t in techniques:
        for key in ("iou", "dice", "precision", "recall", "fpr"):
            values = [((c["agg"].get("inference") or {}).get(t) or {}).get(key) for c in columns]
            technique_rows_.append({"technique": t, "metric": key, "values": values,
                                    "best": _best_index(values, lower=key == "fpr")})
    return {"runs": runs, "free_rows": free_rows, "technique_rows": technique_rows_}


def _best_index(values, lower=False):
    numbers = [(v, i) for i, v in enumerate(values) if _is_number(v)]
    if len(numbers) < 2:
        return None
    return (min(numbers) if lower else max(numbers))[1]
