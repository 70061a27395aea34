"""Which model and threshold technique to deploy for a product, and why.

Without results the advice follows the product's labelled defect mix: PaDiM with the IoU-curve
threshold (fast, robust, good at structural defects and contamination), CFLOW when surface
defects dominate (its normalizing flow models fine texture better). Once the product has
succeeded runs, they win: the model + technique with the best IoU on the runs' validation parts
is recommended and the runner-up named. The choice is made on validation data only, like the
thresholds themselves; the test-part IoU is shown as the held-out estimate of what to expect.
"""
from __future__ import annotations

from collections import Counter
from numbers import Number

from annotator.models import Product
from annotator.services.labels import effective_labels
from inference.models import ProductRun, Status
from inference.services.reports import TECHNIQUE_LABELS

MODEL_LABELS = {"padim": "PaDiM", "cflow": "CFLOW"}
SURFACE_DOMINANT = 0.5


def defect_mix(product: Product) -> tuple[Counter, int]:
    ids = list(product.images.filter(is_anomalous=True).values_list("pk", flat=True))
    labels = effective_labels(ids)
    mix = Counter(label.category for label in labels.values())
    return mix, len(ids) - len(labels)


def _number(value) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool)


def candidates(product: Product) -> list[dict]:
    """Every (run, model, technique) with a validation and a test IoU on this product, best first.

    Ranked by validation IoU; on a tie the earlier run comes first.
    """
    found = []
    parts = ProductRun.objects.filter(product=product, status=Status.SUCCEEDED).select_related("run")
    for part in parts:
        report = part.report or {}
        validation = report.get("validation_inference") or {}
        for technique, values in (report.get("inference") or {}).items():
            iou = (values or {}).get("iou")
            validation_iou = (validation.get(technique) or {}).get("iou")
            if not (_number(iou) and _number(validation_iou)):
                continue
            free = report.get("test_threshold_free") or report.get("threshold_free") or {}
            found.append({
                "run": part.run_id, "model": part.run.model, "technique": technique,
                "validation_iou": validation_iou, "iou": iou,
                "dice": values.get("dice"), "fpr": values.get("fpr"),
                "image_auroc": free.get("image_auroc"), "subset": part.run.subset_description(),
            })
    found.sort(key=lambda c: (-c["validation_iou"], c["run"]))
    return found


def _describe(c: dict) -> str:
    return (f"{MODEL_LABELS.get(c['model'], c['model'])} with the {TECHNIQUE_LABELS.get(c['technique'], c['technique'])} "
            f"threshold (validation IoU {c['validation_iou']:.3f}, held-out test IoU {c['iou']:.3f}, run {c['run']})")


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
    found = candidates(product)
    if found:
        best = found[0]
        # Runner-up: the best candidate that differs in model or technique.
        runner = next((c for c in found[1:] if (c["model"], c["technique"]) != (best["model"], best["technique"])), None)
        reason = f"Best measured on {product.name}: {_describe(best)}."
        if runner:
            reason += f" Runner-up: {_describe(runner)}."
        other_models = {c["model"] for c in found}
        if len(other_models) == 1:
            missing = [m for m in MODEL_LABELS if m not in other_models]
            if missing:
                reason += f" Only {MODEL_LABELS[best['model']]} has been run; a {MODEL_LABELS[missing[0]]} run would confirm the choice."
        result.update(source="runs", model=best["model"], technique=best["technique"], reason=reason,
                      best=best, runner_up=runner, evidence=found[:10])
        return _labelled(result)
    surface_share = mix.get("surface", 0) / labelled if labelled else 0.0
    if labelled and surface_share > SURFACE_DOMINANT:
        model = "cflow"
        reason = (f"No benchmark has been run on {product.name} yet. Surface defects dominate its labelled mix "
                  f"({mix['surface']} of {labelled}, {surface_share:.0%}); CFLOW's normalizing flow models fine "
                  "texture changes better than PaDiM's Gaussian. Threshold: the IoU curve (the threshold that "
                  "maximizes mean IoU on a validation half). Run a benchmark to confirm.")
    else:
        model = "padim"
        mix_text = ", ".join(f"{n} {c}" for c, n in mix.most_common()) if labelled else "no labelled defects yet"
        reason = (f"No benchmark has been run on {product.name} yet ({mix_text}). Start with PaDiM: fast to fit, "
                  "no training loop, strong on structural defects and contamination. Threshold: the IoU curve "
                  "(the threshold that maximizes mean IoU on a validation half). Run a benchmark to confirm.")
    result.update(source="advice", model=model, technique="iou_curve", reason=reason, best=None)
    return _labelled(result)


def _labelled(result: dict) -> dict:
    result["model_label"] = MODEL_LABELS.get(result["model"], result["model"])
    result["technique_label"] = TECHNIQUE_LABELS.get(result["technique"], result["technique"])
    return result
