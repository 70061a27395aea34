"""Which model and threshold technique to deploy for a product, and why.

Without results the advice follows the product's labelled defect mix: PaDiM with the IoU-curve
threshold (fast, robust, good at structural defects and contamination), CFLOW when surface
defects dominate (its normalizing flow models fine texture better), PatchCore when the product's
defect-free images are not aligned (the position-specific models need aligned images:
``annotator.services.alignment``). Once the product has succeeded runs, they win, compared on comparable evidence only (the same test images and
labels, image size and backbone; other runs are listed with the reason): the model + technique
with the best cross-validated IoU on the runs' validation parts is recommended and the runner-up
named, with their paired test-IoU difference and its interval, and how many anomalous images
the few-shot study says the threshold needs. The choice is made on validation data only, like
the thresholds themselves; the test-part IoU is the held-out estimate of what to expect.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from numbers import Number

from annotator.models import Product
from annotator.services.labels import effective_labels
from inference.engine import registry
from inference.models import ModelName, ProductRun, Status
from inference.engine.evaluation import paired_difference, paired_resample_difference
from inference.engine.report import Estimate, estimate_text
from inference.services.reports import TECHNIQUE_LABELS, is_current

SURFACE_DOMINANT = 0.5


def defect_mix(product: Product) -> tuple[Counter, int]:
    ids = list(product.images.filter(is_anomalous=True).values_list("pk", flat=True))
    labels = effective_labels(ids)
    mix = Counter(label.category for label in labels.values())
    return mix, len(ids) - len(labels)


def _number(value) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool)


def evidence_key(report: dict) -> tuple:
    """Runs compare only on the same test images with the same labels (digest), size and backbone."""
    c = report["comparability"]
    return (c["test_images_digest"], c["image_size"], c["backbone"])


def _why_not_compared(key: tuple, chosen: tuple) -> str:
    reasons = []
    if key[0] != chosen[0]:
        reasons.append("other test images (label subset, labels or split differ)")
    if key[1] != chosen[1]:
        reasons.append(f"image size {key[1]} px, not {chosen[1]} px")
    if key[2] != chosen[2]:
        reasons.append(f"backbone {key[2]}, not {chosen[2]}")
    return "; ".join(reasons)


def candidates(product: Product) -> tuple[list[dict], list[dict]]:
    """(candidates on one body of comparable evidence, best first; runs left out with the reason).

    Every succeeded run of the product with a current report is grouped by its evidence key;
    the group with the most models compared (then the most runs, then the newest) is used. Within it every
    (run, technique) with a cross-validated IoU is a candidate, ranked by it (validation data
    only; on a tie the earlier run first); the test IoU with its interval is the held-out
    estimate of what to expect.
    """
    parts = (ProductRun.objects.filter(product=product, status=Status.SUCCEEDED)
             .select_related("run").order_by("run_id"))
    groups: dict[tuple, list] = {}
    excluded = []
    for part in parts:
        report = part.report or {}
        if not is_current(report):
            excluded.append({"run": part.run_id, "reason": "made by an older version of DefectBench (retry it)"})
            continue
        groups.setdefault(evidence_key(report), []).append(part)
    if not groups:
        return [], excluded
    chosen_key = max(groups, key=lambda k: (len({p.run.model for p in groups[k]}), len(groups[k]),
                                            max(p.run_id for p in groups[k])))
    for key, members in groups.items():
        if key != chosen_key:
            excluded += [{"run": p.run_id, "reason": _why_not_compared(key, chosen_key)} for p in members]
    found = []
    for part in groups[chosen_key]:
        report = part.report
        for entry in report["selection"]["entries"]:
            result = report["techniques"].get(entry["technique"]) or {}
            if entry["cv_iou"] is None or result.get("failure"):
                continue
            test = result["test"]
            found.append({
                "run": part.run_id, "part": part, "model": part.run.model, "technique": entry["technique"],
                "cv_iou": entry["cv_iou"],
                "iou": test["iou"], "dice": test["dice"], "good_image_fpr": test["good_image_fpr"],
                "image_auroc": report["test_part"]["image_auroc"], "subset": part.run.subset_description(),
                "enough": _few_shot_enough(report, entry["technique"]),
                "n_available": report["few_shot"]["n_available"],
            })
    found.sort(key=lambda c: (-c["cv_iou"], c["run"]))
    excluded.sort(key=lambda e: e["run"])
    return found, excluded


def _few_shot_enough(report: dict, technique: str):
    curve = next((c for c in report["few_shot"]["curves"] if c["technique"] == technique), None)
    if curve is None or not curve["needs_anomalous"]:
        return 0 if curve is not None else None
    return curve["enough"]


def _refit_resamples(candidate: dict) -> list | None:
    result = candidate["part"].report["techniques"].get(candidate["technique"]) or {}
    return ((result.get("decision") or {}).get("iou_resamples")) or None


def paired(best: dict, other: dict) -> tuple[Estimate, bool]:
    """Test IoU of ``best`` minus ``other`` on the same test images, with a paired bootstrap
    interval, and whether that interval refits both thresholds in every resample.

    Two runs on the same test images and bootstrap seed drew the same validation and test
    resamples, so their decision intervals' per-resample IoUs pair: the interval then holds where
    each procedure's threshold lands, as the deployed procedure would. Otherwise (older reports)
    the thresholds stay fixed and only the test images are resampled.
    """
    a = {e["key"]: e for e in best["part"].report["per_image"]}
    b = {e["key"]: e for e in other["part"].report["per_image"]}
    # images with pixel counts in both (an anomalous image without a mask has none)
    keys = sorted(k for k in set(a) & set(b)
                  if best["technique"] in a[k]["counts"] and other["technique"] in b[k]["counts"])
    fixed = paired_difference(
        [a[k]["counts"][best["technique"]] for k in keys], [b[k]["counts"][other["technique"]] for k in keys],
        [a[k]["anomalous"] for k in keys], seed=best["part"].report["bootstrap"]["seed"],
    )
    ra, rb = _refit_resamples(best), _refit_resamples(other)
    same_draws = best["part"].report["bootstrap"] == other["part"].report["bootstrap"]
    if ra and rb and same_draws and len(ra) == len(rb):
        refitted = paired_resample_difference(fixed.value, ra, rb)
        if refitted.low is not None:
            return refitted, True
    return fixed, False


def _describe(c: dict) -> str:
    return (f"{registry.label(c['model'])} with the {TECHNIQUE_LABELS.get(c['technique'], c['technique'])} "
            f"threshold (cross-validated IoU {c['cv_iou']:.3f}, held-out test IoU {estimate_text(c['iou'])}, run {c['run']})")


def recommend(product: Product) -> dict:
    mix, unlabelled = defect_mix(product)
    labelled = sum(mix.values())
    result = {
        "product": product.name,
        "product_id": product.pk,
        "defect_mix": dict(mix),
        "labelled": labelled,
        "unlabelled": unlabelled,
        "runner_up": None,
        "evidence": [],
    }
    found, excluded = candidates(product)
    result["excluded"] = excluded
    if found:
        best = found[0]
        # Runner-up: the best candidate that differs in model or technique.
        runner = next((c for c in found[1:] if (c["model"], c["technique"]) != (best["model"], best["technique"])), None)
        reason = f"Best measured on {product.name}: {_describe(best)}."
        difference = None
        if runner:
            reason += f" Runner-up: {_describe(runner)}."
            difference, refitted = paired(best, runner)
            if difference.value is not None and difference.low is not None:
                distinguishable = not (difference.low <= 0.0 <= difference.high)
                how = (" (both thresholds refitted in every resample)" if refitted
                       else " (thresholds held fixed)")
                reason += (f" Paired on the same test images, the test IoU differs by {difference.value:+.3f} "
                           f"[{difference.low:+.3f}, {difference.high:+.3f}]{how}: "
                           + ("the winner is distinguishably better." if distinguishable and difference.value > 0
                              else "not distinguishable; either choice is supported by the evidence."))
        if best["enough"] is not None:
            reason += (f" The few-shot study says {best['enough']} of the {best['n_available']} anomalous validation "
                       "images were enough to fit this threshold (test IoU within 0.02 of using all)."
                       if best["enough"] else " This threshold needs no labelled anomalous image.")
        other_models = {c["model"] for c in found}
        if len(other_models) == 1:
            missing = [m.label for m in registry.MODELS.values() if m.name not in other_models]
            if missing:
                reason += (f" Only {registry.label(best['model'])} has been run; a run of "
                           f"{', '.join(missing)} would confirm the choice.")
        if excluded:
            reason += f" {len(excluded)} run(s) were not compared (see below)."
        for c in found:
            c.pop("part", None)
        result.update(source="runs", model=best["model"], technique=best["technique"], reason=reason,
                      best=best, runner_up=runner, evidence=found[:10],
                      difference=dataclasses.asdict(difference) if difference else None)
        return _labelled(result)
    surface_share = mix.get("surface", 0) / labelled if labelled else 0.0
    if labelled and surface_share > SURFACE_DOMINANT:
        model = ModelName.CFLOW
        reason = (f"No benchmark has been run on {product.name} yet. Surface defects dominate its labelled mix "
                  f"({mix['surface']} of {labelled}, {surface_share:.0%}); CFLOW's normalizing flow models fine "
                  "texture changes better than PaDiM's Gaussian. Threshold: the IoU curve (the threshold that "
                  "maximizes mean IoU on a validation half). Run a benchmark to confirm.")
    else:
        model = ModelName.PADIM
        mix_text = ", ".join(f"{n} {c}" for c, n in mix.most_common()) if labelled else "no labelled defects yet"
        reason = (f"No benchmark has been run on {product.name} yet ({mix_text}). Start with PaDiM: fast to fit, "
                  "no training loop, strong on structural defects and contamination. Threshold: the IoU curve "
                  "(the threshold that maximizes mean IoU on a validation half). Run a benchmark to confirm.")
    from annotator.services.alignment import alignment_of

    measured = alignment_of(product)
    result["alignment"] = measured
    if measured["aligned"] is False and registry.get(model).position_specific:
        model = ModelName.PATCHCORE
        specific = ", ".join(m.label for m in registry.MODELS.values() if m.position_specific)
        reason = (f"No benchmark has been run on {product.name} yet. Its defect-free images are not aligned: only "
                  f"{measured['aligned_share']:.0%} of the structure they share once registered is at the same "
                  f"pixels (parts moved or rotated). {specific} learn what is normal at each position and need "
                  "aligned images, so start with PatchCore: it compares each patch with a memory of normal "
                  "patches wherever they lie. Threshold: the IoU curve (the threshold that maximizes mean IoU "
                  "on a validation half). Run a benchmark to confirm.")
    result.update(source="advice", model=model, technique="iou_curve", reason=reason, best=None)
    return _labelled(result)


def _labelled(result: dict) -> dict:
    result["model_label"] = registry.label(result["model"])
    result["technique_label"] = TECHNIQUE_LABELS.get(result["technique"], result["technique"])
    return result
