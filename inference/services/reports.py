"""Turning engine reports into what pages, downloads and comparisons show.

The engine's report is typed (``inference/engine/report.py``, schema in ``report.schema.json``);
everything here reads its names. A report made before the current schema (``schema_version``)
is not reinterpreted: pages say so and offer a retry.
"""
from __future__ import annotations

import csv
import io
from numbers import Number

from annotator.models import place_name
from annotator.services.label_csv import safe_cell
from inference.engine.regions import MIN_OVERLAP, SIZE_CLASSES
from inference.engine.report import (  # noqa: F401 (mask_coverage: the pages read it from here)
    NEEDS_MASKS_TEXT,
    READABLE_SCHEMA_VERSIONS,
    estimate_text,
    mask_coverage,
)
from inference.engine.thresholds import TECHNIQUES
from inference.models import BenchmarkRun, Technique

THRESHOLD_FREE_KEYS = ("image_auroc", "pixel_auroc", "aupro", "aupimo")
SEGMENTATION_KEYS = ("iou", "dice", "precision", "recall", "fpr", "good_image_fpr", "mean_image_iou")
# What an inspector counts at a technique's threshold (the report's ``techniques.<name>.regions``).
REGION_KEYS = ("detection_rate", "false_alarms_per_good_image")
IMAGE_KEYS = ("accuracy", "precision", "recall", "fpr")


def _pct(share: float) -> str:
    return f"{share * 100:g}"


def _size_column(low: float, high: float | None) -> str:
    """``size_under_0.1pct``, ``size_0.1_1pct``, ..., ``size_10pct_up``: a class's CSV column prefix."""
    if high is None:
        return f"size_{_pct(low)}pct_up"
    return f"size_under_{_pct(high)}pct" if low == 0 else f"size_{_pct(low)}_{_pct(high)}pct"


# The CSV's column prefix of each defect-size class (``techniques.<name>.regions.by_size``), in order.
SIZE_COLUMNS = {name: _size_column(low, high) for name, low, high in SIZE_CLASSES}
TECHNIQUE_LABELS = dict(Technique.choices)
TECHNIQUE_SHORT = {name: spec.short for name, spec in TECHNIQUES.items()}
SUMMARY_SKIP = ("per_image",)
# What each metric is called on every page (the two IoUs are different numbers: name them apart).
METRIC_LABELS = {
    "iou": "IoU, pooled over pixels", "mean_image_iou": "IoU, mean per image", "dice": "Dice",
    "precision": "Precision", "recall": "Recall", "fpr": "Pixel FPR", "good_image_fpr": "Good-image FPR",
    "image_auroc": "Image AUROC", "pixel_auroc": "Pixel AUROC", "aupro": "AUPRO",
    "aupimo": "AUPIMO (mean per image)", "detection_rate": "Defect regions found",
    "false_alarms_per_good_image": "False alarms per good image",
}


def is_current(report: dict | None) -> bool:
    """Read with today's names (schema 4 reports too: 5 only added the mask counts)."""
    return bool(report) and report.get("schema_version") in READABLE_SCHEMA_VERSIONS


# The pixel numbers (measured on anomalous images with a mask only): "needs masks" where none had one.
PIXEL_KEYS = ("pixel_auroc", "aupro", "aupimo", "iou", "dice", "precision", "recall", "fpr", "mean_image_iou",
              "detection_rate")


def summary(report: dict) -> dict:
    """The report without its per-image list (which can be large)."""
    return {k: v for k, v in (report or {}).items() if k not in SUMMARY_SKIP}


def _is_number(v) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool)


def _mean(values) -> float | None:
    numbers = [v for v in values if _is_number(v)]
    return sum(numbers) / len(numbers) if numbers and len(numbers) == len(values) else None


def aggregate_metrics(reports: dict[str, dict]) -> dict:
    """``{"products": {name: summary}, "aggregate": ..., "n_products": n}``.

    The aggregate is the unweighted mean over products of the test-part numbers. A technique
    enters the aggregate only when it was fitted on every product: averaging it over the
    products where it happened to work would compare it on easier evidence than the others.
    Its row then names the products it failed on. The recommended technique is the one with
    the best mean cross-validated IoU (validation data only); timings are summed.
    """
    products = {name: summary(r) for name, r in reports.items()}
    values = [p for p in products.values() if is_current(p)]
    aggregate: dict = {"method": "single product" if len(products) == 1 else f"mean over {len(products)} products",
                       "n_products": len(products)}
    if len(values) != len(products) or not values:
        aggregate["note"] = "made by an older version of DefectBench: no aggregate"
        return {"products": products, "aggregate": aggregate, "n_products": len(products)}
    aggregate["whole_folder"] = {k: _mean([v["whole_folder"][k] for v in values]) for k in THRESHOLD_FREE_KEYS}
    aggregate["test_part"] = {k: _mean([v["test_part"][k]["value"] for v in values]) for k in THRESHOLD_FREE_KEYS}
    names = []
    for v in values:
        names += [t for t in v["techniques"] if t not in names]
    techniques, cv = {}, {}
    for name in names:
        failed = [p for p, v in products.items() if (v["techniques"].get(name) or {}).get("failure")
                  or name not in v["techniques"]]
        if failed:
            techniques[name] = {"failure": f"not fitted on {', '.join(sorted(failed))}: left out of the mean"}
            continue
        techniques[name] = {k: _mean([v["techniques"][name]["test"][k]["value"] for v in values])
                            for k in SEGMENTATION_KEYS}
        techniques[name].update({k: _mean([((v["techniques"][name].get("regions") or {}).get(k) or {}).get("value")
                                           for v in values]) for k in REGION_KEYS})
        techniques[name]["threshold"] = None  # one per product
        entries = [next((e for e in v["selection"]["entries"] if e["technique"] == name), {}) for v in values]
        cv[name] = _mean([e.get("cv_iou") for e in entries])
        techniques[name]["cv_iou"] = cv[name]
    scored = {k: x for k, x in cv.items() if x is not None}
    aggregate["techniques"] = techniques
    aggregate["recommended_technique"] = max(scored, key=scored.get) if scored else None
    aggregate["timing"] = {k: sum(v["timing"][k] for v in values)
                           for k in ("fit_seconds", "evaluation_seconds", "total_seconds")}
    aggregate["timing"]["inference_ms_per_image"] = _mean([v["timing"]["inference_ms_per_image"] for v in values])
    aggregate["peak_memory_mb"] = max(v["peak_memory_mb"] for v in values)
    devices = {v["device"] for v in values}
    aggregate["device"] = devices.pop() if len(devices) == 1 else "mixed"
    aggregate["threads"] = max(v.get("threads") or 0 for v in values)
    return {"products": products, "aggregate": aggregate, "n_products": len(products)}


def decision_card(report: dict, model_label: str) -> dict | None:
    """What a line manager needs first: the chosen model and threshold (rule and value), what it
    does on the line (defective parts caught, good parts rejected, the defect outline's IoU), each
    with its interval, how many labelled defects it rests on, and what to do next."""
    selection = report.get("selection") or {}
    chosen = selection.get("chosen")
    result = (report.get("techniques") or {}).get(chosen or "") or {}
    if not chosen or result.get("failure"):
        return None
    test = result.get("test") or {}
    decision = report.get("image_decision") or {}
    image_test = decision.get("test") or {}
    few = report.get("few_shot") or {}
    curve = next((c for c in few.get("curves", []) if c.get("technique") == chosen), {})
    n_available = few.get("n_available")
    enough = curve.get("enough") if curve.get("needs_anomalous") else 0
    if enough is None:
        next_step = (f"Label more defects: with all {n_available} labelled validation defects the test IoU was "
                     "still improving, so more should help.")
    elif n_available and enough >= n_available:
        next_step = "Label a few more defects: the threshold needed every labelled validation defect there was."
    else:
        next_step = "Deploy it, or compare it with another model on the same images."
    coverage = mask_coverage(report)
    if coverage is not None and not coverage["validation_has_masks"]:
        next_step = ("Draw masks for some defect images: this label-free threshold was chosen because no "
                     "validation defect had a mask; with masks the techniques fitted on defects can compete.")
    return {
        "model": model_label,
        "technique": chosen,
        "technique_label": TECHNIQUE_LABELS.get(chosen, chosen),
        "threshold": result.get("threshold"),
        "threshold_refits": ((result.get("decision") or {}).get("threshold")) or {},
        "image_threshold": decision.get("threshold"),
        "caught": image_test.get("recall") or {},
        "rejected": image_test.get("fpr") or {},
        "iou": test.get("iou") or {},
        "iou_refitted": ((result.get("decision") or {}).get("iou")) or {},
        "rule": selection.get("rule", ""),
        "n_labelled_defects": n_available,
        "enough": enough,
        "next_step": next_step,
        "iou_needs_masks": coverage is not None and not coverage["test_has_masks"],
    }


def technique_rows(report: dict) -> list[dict]:
    """Rows of the technique table: test-part metrics with intervals, the cross-fitted score."""
    entries = {e["technique"]: e for e in (report.get("selection") or {}).get("entries", [])}
    chosen = (report.get("selection") or {}).get("chosen")
    coverage = mask_coverage(report)
    needs_masks = coverage is not None and not coverage["test_has_masks"]
    rows = []
    for name, result in (report.get("techniques") or {}).items():
        failure = result.get("failure")
        entry = entries.get(name, {})
        rows.append({
            "technique": name,
            "label": TECHNIQUE_SHORT.get(name, name),
            "description": TECHNIQUE_LABELS.get(name, name),
            "error": failure["message"] if failure else None,
            "threshold": result.get("threshold"),
            "threshold_percentile": result.get("threshold_percentile"),
            "chosen": name == chosen,
            "cv_iou": entry.get("cv_iou"),
            "cv_folds": entry.get("folds_scored"),
            # the intervals with the threshold refitted on redrawn validation images
            "decision_iou": ((result.get("decision") or {}).get("iou")) or {},
            "threshold_refits": ((result.get("decision") or {}).get("threshold")) or {},
            "cv_failure": (entry.get("failure") or {}).get("message"),
            **{k: (result.get("test") or {}).get(k) or {} for k in SEGMENTATION_KEYS},
            # what an inspector counts at this threshold: defect regions found, false alarms
            "regions": result.get("regions") or {},
            **{k: (result.get("regions") or {}).get(k) or {} for k in REGION_KEYS},
            # per defect-size class (absent from reports made before it existed)
            "by_size": (result.get("regions") or {}).get("by_size") or [],
            # no anomalous test image has a mask: its pixel numbers read "needs masks"
            "needs_masks": needs_masks and not failure,
        })
    return rows


def defect_sizes(report: dict) -> dict | None:
    """The chosen technique's detection rate per defect-size class, for the results page: the
    classes with regions, each rate's share for a bar, and the classes flagged as detected less
    often than the best (``lower_than_best``, decided in the engine). None where the report has
    no size classes (made before them) or no technique was chosen."""
    chosen = (report.get("selection") or {}).get("chosen")
    regions = (((report.get("techniques") or {}).get(chosen or "") or {}).get("regions")) or {}
    classes = regions.get("by_size") or []
    if not chosen or not classes:
        return None
    rows = [{**c, "rate": (c.get("detection_rate") or {}).get("value")} for c in classes]
    rated = [r for r in rows if _is_number(r["rate"])]
    best = max(rated, key=lambda r: r["rate"], default=None)
    return {"technique": chosen, "label": TECHNIQUE_SHORT.get(chosen, chosen), "rows": rows,
            "min_overlap_percent": round(MIN_OVERLAP * 100),
            "flagged": [r for r in rows if r.get("lower_than_best")], "best": best,
            "found": regions.get("found"), "defect_regions": regions.get("defect_regions"),
            "false_alarms_per_good_image": regions.get("false_alarms_per_good_image") or {}}


def aggregate_rows(aggregate: dict) -> list[dict]:
    rows = []
    for name, values in (aggregate.get("techniques") or {}).items():
        rows.append({
            "technique": name, "label": TECHNIQUE_SHORT.get(name, name),
            "description": TECHNIQUE_LABELS.get(name, name), "error": values.get("failure"),
            "chosen": name == aggregate.get("recommended_technique"), "cv_iou": values.get("cv_iou"),
            **{k: {"value": values.get(k)} for k in SEGMENTATION_KEYS + REGION_KEYS},
        })
    return rows


def _subset_techniques(block: dict) -> list[str]:
    """A subset's techniques: those with final-label numbers, then those it has only by votes
    (a value only some annotators chose)."""
    segmentation = block.get("segmentation") or {}
    weighted = (block.get("label_uncertainty") or {}).get("weighted") or {}
    return [*segmentation, *(name for name in weighted if name not in segmentation)]


def subset_tables(report: dict, key: str) -> list[dict]:
    """One table per value of ``by_category`` / ``by_background`` / ``by_defect_type``."""
    tables = []
    names = {"True": "with background", "False": "without background"}
    for subset, block in ((report.get("breakdowns") or {}).get(key) or {}).items():
        uncertainty = block.get("label_uncertainty")  # absent from reports made before it existed
        weighted = (uncertainty or {}).get("weighted") or {}
        segmentation = block.get("segmentation") or {}
        rows = []
        for name in _subset_techniques(block):
            rows.append({"technique": name, "label": TECHNIQUE_SHORT.get(name, name), **(segmentation.get(name) or {}),
                         "weighted": weighted.get(name) or {},
                         "chosen": uncertainty is not None and name == uncertainty.get("technique")})
        tables.append({
            "subset": names.get(subset, subset) if key == "by_background" else subset,
            "n_anomalous_test": block.get("n_anomalous_test"),
            "n_anomalous_validation": block.get("n_anomalous_validation"),
            "threshold_free": block.get("threshold_free") or {},
            "whole_folder": block.get("whole_folder") or {},
            "note": block.get("note", ""),
            "rows": rows,
            "label_uncertainty": uncertainty,
            "disputed_tag_title": disputed_tag_title(uncertainty) if uncertainty else "",
        })
    return tables


def disputed_tag_title(uncertainty: dict) -> str:
    """Why a subset carries the tag (or what its vote-weighted figures mean where it does not)."""
    technique = uncertainty.get("technique")
    weighted = ((uncertainty.get("weighted") or {}).get(technique) or {}).get("iou") if technique else None
    final = uncertainty.get("final_iou") or {}
    text = ("Where annotators disagreed, each anomalous test image also counts by the share of its annotators "
            "who chose this value (an image one of two annotators put here weighs 0.5). "
            f"{uncertainty.get('n_disputed', 0)} disputed test image(s) weigh in this subset.")
    if technique and _is_number(weighted):
        text += (f" {TECHNIQUE_SHORT.get(technique, technique)} (the chosen technique): IoU {weighted:.3f} "
                 f"weighted by votes against {estimate_text(final)} by final labels.")
    if uncertainty.get("depends_on_disputed_labels"):
        text += (" The weighted IoU lies outside the final-label figure's 95 % interval (or the subset exists only "
                 "by votes): how the disputed labels are settled changes this subset's numbers by more than "
                 "their sampling uncertainty.")
    return text


def few_shot_rows(report: dict) -> list[dict]:
    """The few-shot study as a table (the chart is a PNG among the curves)."""
    few = report.get("few_shot") or {}
    rows = []
    for curve in few.get("curves", []):
        rows.append({
            "technique": curve["technique"], "label": TECHNIQUE_SHORT.get(curve["technique"], curve["technique"]),
            "needs_anomalous": curve["needs_anomalous"], "enough": curve["enough"],
            "points": {p["n_anomalous"]: p for p in curve["points"]},
            "error": (curve.get("failure") or {}).get("message"),
        })
    return rows


REPEAT_LABELS = {"test_part.image_auroc": "Image AUROC (test part)", "test_part.pixel_auroc": "Pixel AUROC (test part)",
                 "test_part.aupro": "AUPRO (test part)", "test_part.aupimo": "AUPIMO (test part)",
                 "chosen_technique.iou": "Test IoU of the chosen technique",
                 "image_decision.accuracy": "Image decision accuracy"}


def repeat_rows(report: dict) -> list[dict]:
    """The repeated splits' mean ± spread, labelled for people (the report's keys are dotted paths)."""
    rows = []
    for key, value in ((report.get("repeats") or {}).get("metrics") or {}).items():
        if key.startswith("techniques."):
            technique = key.split(".")[1]
            label = f"Test IoU · {TECHNIQUE_SHORT.get(technique, technique)}"
        else:
            label = REPEAT_LABELS.get(key, key)
        rows.append({"key": key, "label": label, **value})
    order = list(REPEAT_LABELS)
    rows.sort(key=lambda r: (order.index(r["key"]) if r["key"] in order else len(order), r["label"]))
    return rows


CSV_COLUMNS = ["run", "model", "product", "subset", "n_anomalous_test", "technique", "threshold", "cv_iou",
               *[f"{k}{suffix}" for k in SEGMENTATION_KEYS for suffix in ("", "_low", "_high")],
               "iou_refitted_low", "iou_refitted_high",
               "defect_regions", "defect_regions_found",
               *[f"{k}{suffix}" for k in REGION_KEYS for suffix in ("", "_low", "_high")],
               # per defect-size class: regions, those covered >= 30 %, the rate with its interval, the flag
               *[f"{prefix}_{k}" for prefix in SIZE_COLUMNS.values()
                 for k in ("regions", "detected", "detection_rate", "detection_rate_low", "detection_rate_high",
                           "lower_than_best")],
               *[f"{k}{suffix}" for k in THRESHOLD_FREE_KEYS for suffix in ("", "_low", "_high")],
               "aupimo_median",
               # category / background rows where annotators disagreed: the IoU with each image
               # weighted by its annotators' votes, and whether that leaves the final-label interval
               "iou_weighted_by_votes", "depends_on_disputed_labels",
               # "pixel metrics on N of M anomalous images (the others have no mask)", where some had none
               "pixel_metrics_on"]


SIZE_CELLS = 6 * len(SIZE_COLUMNS)


def _size_cells(by_size: list[dict]) -> list:
    """The CSV cells of the size classes, in ``SIZE_COLUMNS`` order (blank where the report has none)."""
    classes = {c.get("size_class"): c for c in by_size}
    cells = []
    for name in SIZE_COLUMNS:
        c = classes.get(name) or {}
        rate = c.get("detection_rate") or {}
        cells += [c.get("regions"), c.get("detected"), rate.get("value"), rate.get("low"), rate.get("high"),
                  c.get("lower_than_best")]
    return cells


def _needs_masks(columns: list[str], cells: list, measured: bool) -> list:
    """``cells`` (under ``columns``) with NEEDS_MASKS_TEXT in the empty pixel-number cells when no
    anomalous image of their part had a mask."""
    if measured:
        return cells
    return [NEEDS_MASKS_TEXT if cell is None and column.removesuffix("_low").removesuffix("_high") in PIXEL_KEYS
            else cell for column, cell in zip(columns, cells)]


def _csv_rows(run: BenchmarkRun, product: str, s: dict):
    coverage = mask_coverage(s)
    note = coverage["text"] if coverage else None
    measured = coverage is None or coverage["test_has_masks"]
    for row in _csv_rows_measured(run, product, s):
        yield _needs_masks(CSV_COLUMNS, row, measured) + [note]


def _csv_rows_measured(run: BenchmarkRun, product: str, s: dict):
    free = s["test_part"]
    free_cells = [free[k].get(part) for k in THRESHOLD_FREE_KEYS for part in ("value", "low", "high")]
    free_cells.append((s.get("aupimo") or {}).get("median"))
    n_test = sum(1 for key in (s.get("split") or {}).get("test", []))
    for row in technique_rows(s):
        cells = [row[k].get(part) for k in SEGMENTATION_KEYS for part in ("value", "low", "high")]
        region_cells = [row["regions"].get("defect_regions"), row["regions"].get("found"),
                        *[row[k].get(part) for k in REGION_KEYS for part in ("value", "low", "high")],
                        *_size_cells(row["by_size"])]
        yield [run.pk, run.model, product, "all", n_test, row["technique"],
               row["threshold"] if not row["error"] else row["error"], row["cv_iou"], *cells,
               row["decision_iou"].get("low"), row["decision_iou"].get("high"), *region_cells, *free_cells, None, None]
    for key, prefix in (("by_defect_type", "defect_type"), ("by_category", "category"),
                        ("by_background", "background")):
        for subset, block in (s["breakdowns"].get(key) or {}).items():
            label = {"True": "yes", "False": "no"}.get(subset, subset) if prefix == "background" else subset
            tf = block.get("threshold_free") or {}
            uncertainty = block.get("label_uncertainty")
            weighted = (uncertainty or {}).get("weighted") or {}
            segmentation = block.get("segmentation") or {}
            for name in _subset_techniques(block):
                seg = segmentation.get(name) or {}
                cells = [seg.get(k) if part == "" else None for k in SEGMENTATION_KEYS for part in ("", "_low", "_high")]
                votes = [(weighted.get(name) or {}).get("iou"),
                         uncertainty["depends_on_disputed_labels"] if name == uncertainty["technique"] else None
                         ] if uncertainty else [None, None]
                yield [run.pk, run.model, product, f"{prefix}:{label}", block.get("n_anomalous_test"), name, None,
                       None, *cells, None, None, *[None] * (2 + 3 * len(REGION_KEYS) + SIZE_CELLS),
                       *[tf.get(k) if part == "" else None for k in THRESHOLD_FREE_KEYS
                         for part in ("", "_low", "_high")], None, *votes]


def run_csv(run: BenchmarkRun) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for name, s in ((run.metrics or {}).get("products") or {}).items():
        if is_current(s):
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
    technique = report.get("artifact_technique")
    entries = []
    for entry in report.get("per_image") or []:
        # A defect-free image has no defect to overlap: its tile shows the score, never "IoU 0.000".
        iou = (entry.get("iou") or {}).get(technique) if technique and entry.get("anomalous") else None
        artifacts = entry.get("artifacts") or {}
        key = str(entry.get("key", ""))
        entries.append({
            "key": key,
            "image_id": int(key) if key.isdigit() else None,
            "defect_type": entry.get("defect_type"),
            "category": entry.get("category"),
            "score": entry.get("score"),
            "iou": iou if _is_number(iou) else None,
            "predicted_anomalous": entry.get("predicted_anomalous"),
            "heatmap": artifacts.get("overlay"),
            "predicted": artifacts.get("mask"),
            "outline": artifacts.get("outline"),  # absent in runs made before the outlined pictures
            "anomalous": bool(entry.get("anomalous")),
        })
    anomalous = [e for e in entries if e["anomalous"] and e["iou"] is not None]
    anomalous.sort(key=lambda e: (e["iou"], e["key"]))
    half = min(max(1, limit // 2), (len(anomalous) + 1) // 2)
    worst = anomalous[:half]
    best = [e for e in reversed(anomalous[half:])][:half]
    good = sorted((e for e in entries if not e["anomalous"]), key=lambda e: -(e["score"] or 0))[:4]
    threshold = ((report.get("techniques") or {}).get(technique) or {}).get("threshold") if technique else None
    return {"technique": technique, "worst": worst, "best": best, "good": good, "count": len(entries),
            "threshold": threshold}


COST_ROWS = (("fit_seconds", "Fit time (s)", 1), ("inference_ms_per_image", "Inference per image (ms)", 1),
             ("peak_memory_mb", "Peak memory (MB)", 0))


def _settings_of(run: BenchmarkRun) -> dict:
    return {"model": run.get_model_display(), "subset": run.subset_description(), "seed": run.seed,
            "techniques": ", ".join(run.techniques), **{k: v for k, v in (run.config or {}).items()}}


def comparison_groups(runs: list[BenchmarkRun]) -> list[dict]:
    """The runs grouped by the products they measured (numbers of different products are not
    comparable), each group with the settings that differ, the quality table and the cost rows."""
    groups: dict[tuple, list[BenchmarkRun]] = {}
    for run in runs:
        key = (run.dataset.name, tuple(sorted(p.name for p in run.products.all())))
        groups.setdefault(key, []).append(run)
    out = []
    for (dataset, products), members in groups.items():
        settings = [_settings_of(r) for r in members]
        keys = sorted({k for s in settings for k in s}, key=lambda k: (k not in ("model", "subset"), k))
        differing = [{"setting": k, "values": [s.get(k, "—") for s in settings]}
                     for k in keys if len({str(s.get(k)) for s in settings}) > 1]
        table = comparison(members)
        cost = []
        for key, label, digits in COST_ROWS:
            values = []
            for r in members:
                agg = (r.metrics or {}).get("aggregate") or {}
                values.append((agg.get("timing") or {}).get(key) if key != "peak_memory_mb" else agg.get(key))
            cost.append({"label": label, "values": values, "digits": digits, "best": _best_index(values, lower=True)})
        out.append({"dataset": dataset, "products": ", ".join(products), "place": place_name(dataset, products),
                    "runs": members,
                    "differing": differing, "cost": cost, **table})
    return out


def comparison(runs: list[BenchmarkRun]) -> dict:
    """Side-by-side rows: test-part threshold-free metrics and every technique's metrics per run."""
    columns = []
    for run in runs:
        agg = (run.metrics or {}).get("aggregate") or {}
        columns.append({"run": run, "agg": agg})
    free_rows = []
    for key in THRESHOLD_FREE_KEYS:
        values = [(c["agg"].get("test_part") or {}).get(key) for c in columns]
        free_rows.append({"metric": key, "label": METRIC_LABELS[key], "values": values, "best": _best_index(values)})
    techniques = []
    for c in columns:
        techniques += [t for t in (c["agg"].get("techniques") or {}) if t not in techniques]
    technique_rows_ = []
    for t in techniques:
        for key in ("iou", "mean_image_iou", "dice", "precision", "recall", "fpr"):
            values = [((c["agg"].get("techniques") or {}).get(t) or {}).get(key) for c in columns]
            technique_rows_.append({"technique": t, "metric": key, "label": METRIC_LABELS[key], "values": values,
                                    "best": _best_index(values, lower=key == "fpr")})
    return {"runs": runs, "free_rows": free_rows, "technique_rows": technique_rows_, **paired_comparison(runs)}


def paired_comparison(runs: list[BenchmarkRun]) -> dict:
    """Each run's chosen technique against the first run's, paired on the same test images.

    Only for runs of one product each, on the same evidence (test images and labels, image size,
    backbone: :func:`recommendation.evidence_key`); otherwise ``paired_note`` says why not.
    """
    from inference.engine.evaluation import paired_difference
    from inference.services.recommendation import evidence_key

    reports = []
    for run in runs:
        parts = [p for p in run.product_runs.all() if p.report]
        if len(parts) != 1 or not is_current(parts[0].report):
            return {"paired": [], "paired_note": "Paired differences need runs of one product each, made by this version."}
        reports.append(parts[0].report)
    if len({evidence_key(r) for r in reports}) != 1:
        return {"paired": [], "paired_note": "Not compared pairwise: the runs do not share the same test images, "
                                             "labels, image size and backbone."}
    first = reports[0]
    chosen_first = first["selection"]["chosen"]
    base = {e["key"]: e for e in first["per_image"]}
    paired = []
    for run, report in zip(runs[1:], reports[1:]):
        chosen = report["selection"]["chosen"]
        other = {e["key"]: e for e in report["per_image"]}
        keys = sorted(set(base) & set(other))
        if not (chosen and chosen_first):
            continue
        diff = paired_difference([other[k]["counts"][chosen] for k in keys], [base[k]["counts"][chosen_first] for k in keys],
                                 [base[k]["anomalous"] for k in keys], seed=first["bootstrap"]["seed"])
        paired.append({"run": run, "technique": chosen, "difference": diff.__dict__,
                       "distinguishable": diff.low is not None and not (diff.low <= 0.0 <= diff.high)})
    return {"paired": paired, "paired_note": "", "paired_base": runs[0], "paired_base_technique": chosen_first}


def _best_index(values, lower=False):
    numbers = [(v, i) for i, v in enumerate(values) if _is_number(v)]
    if len(numbers) < 2:
        return None
    best = (min(numbers) if lower else max(numbers))
    if sum(1 for v, _ in numbers if v == best[0]) > 1:  # a tie: nothing is best
        return None
    return best[1]
