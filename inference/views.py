"""Benchmark pages (thin: the rules live in inference.services). Every page needs login."""
from pathlib import Path

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from annotator.downloads import attachment
from annotator.forms import read
from annotator.models import Dataset, Product
from annotator.views import role_required
from inference.engine.colours import PREDICTION_RGB, TRUTH_RGB, hex_colour
from inference.engine.types import MAX_REPEATS
from inference.forms import CompareQuery, LaunchForm, LaunchQuery
from inference.models import BenchmarkRun, Deployment, RunSample, Status
from inference.services import board, deploy, drift, recommendation, reports, runs
from inference.services.feedback import deployment_rates


@require_GET
def run_list(request):
    queryset = BenchmarkRun.objects.select_related("dataset", "created_by").prefetch_related("product_runs__product")[:200]
    return render(request, "inference/run_list.html", {"runs": queryset})


@require_http_methods(["GET", "POST"])
@role_required("admin")
def launch(request):
    """The launch form (:class:`inference.forms.LaunchForm`, built from the engine's model registry)."""
    problems = []
    if request.method == "POST":
        form = LaunchForm(request.POST)
        if not form.is_valid():
            problems = [f"{form.fields[name].label or name}: {' '.join(errors)}" if name != "__all__" else " ".join(errors)
                        for name, errors in form.errors.items()]
        else:
            data = form.cleaned_data
            try:
                launched = runs.launch_runs(
                    request.user, data["dataset"], list(data["products"]), data["models"],
                    categories=data["categories"], background=data["background"] or "any", config=form.config(),
                    techniques=data["techniques"] or None, seed=data["seed"] or 0,
                )
            except runs.LaunchRefused as error:
                problems = error.messages
            else:
                ids = [run.pk for run in launched]
                if len(ids) == 1:
                    messages.success(request, f"Run {ids[0]} queued.")
                    return redirect("benchmark-detail", pk=ids[0])
                messages.success(request, f"Runs {', '.join(map(str, ids))} queued, one per model; they appear "
                                          "side by side here as they finish.")
                return redirect(f"{reverse('benchmark-compare')}?runs={','.join(map(str, ids))}")
    else:
        initial = {}
        query = read(LaunchQuery, request.GET)
        if query["dataset"] is not None:
            initial["dataset"] = query["dataset"]
            initial["products"] = query["product"]
        form = LaunchForm(initial=initial)
    datasets = Dataset.objects.prefetch_related("products").order_by("name")
    selected_dataset = form.selected("dataset") or (datasets[0].pk if datasets else None)
    context = {
        "datasets": datasets, "form": form, "problems": problems,
        "selected": {"dataset": str(selected_dataset or ""), "models": form.selected("models") or [],
                     "products": [str(p) for p in form.selected("products") or []],
                     "categories": form.selected("categories") or [],
                     "background": form.selected("background") or "any",
                     "techniques": form.selected("techniques") or []},
        "backbones": runs.available_backbones(), "max_repeats": MAX_REPEATS,
    }
    return render(request, "inference/launch.html", context, status=400 if problems else 200)


# The gallery's legend and enlarged view draw the outlines in the colours the engine's pictures use.
OUTLINE_COLOURS = {"truth": hex_colour(TRUTH_RGB), "prediction": hex_colour(PREDICTION_RGB)}

CURVE_NAMES = {"roc": "Pixel ROC", "pr": "Pixel precision–recall", "pro": "PRO (per-region overlap)",
               "iou_vs_threshold": "IoU vs threshold (validation)",
               "few_shot": "Anomalous images labelled → expected test IoU"}


def _file_url(run, part, relpath):
    if not relpath:
        return None
    part_dir = Path(part.artifacts_path).relative_to(run.artifacts_path).as_posix() if part.artifacts_path else ""
    return reverse("benchmark-file", args=[run.pk, f"{part_dir}/{relpath}" if part_dir else relpath])


def _part_context(run, part, per_image=True):
    report = part.report or {}
    s = reports.summary(report)
    curves = [
        {"name": CURVE_NAMES.get(Path(c).stem, Path(c).stem.replace("_", " ")), "url": _file_url(run, part, c),
         "key": key}
        for key, c in sorted((report.get("curves") or {}).items())  # paths relative to the part's folder
    ]
    context = {"part": part, "summary": s, "current": reports.is_current(report),
               "recommendation": recommendation.recommend(part.product),
               "deployable": sorted(deploy.deployable_techniques(part).items())}
    if not context["current"]:
        return context
    gallery = reports.gallery(part)
    if not per_image:  # annotators: no other annotators' labels, image by image
        gallery = {**gallery, "worst": [], "best": [], "good": []}
    # The file each tile shows (the run's snapshot of the image's path).
    paths = dict(part.samples.filter(role=RunSample.Role.TEST).values_list("image_id", "path"))
    for group in ("worst", "best", "good"):
        for entry in gallery[group]:
            path = paths.get(entry["image_id"]) or ("" if entry["image_id"] else entry["key"])
            entry["file_path"], entry["file_name"] = path, Path(path).name if path else ""
            entry["heatmap_url"] = _file_url(run, part, entry["heatmap"])
            entry["predicted_url"] = _file_url(run, part, entry["predicted"])
            entry["outline_url"] = _file_url(run, part, entry["outline"])
    split = s["split"]
    context.update({
        "n_test_part": len(split["test"]), "n_val_part": len(split["validation"]),
        "free": s["test_part"], "whole": s["whole_folder"],
        # anomalous images without a mask: which numbers rest on how many masks
        "coverage": reports.mask_coverage(s),
        "rows": reports.technique_rows(s),
        "defect_sizes": reports.defect_sizes(s),
        "decision_card": reports.decision_card(s, run.get_model_display()),
        "selection": s["selection"], "decision": s["image_decision"],
        "few_shot": s["few_shot"], "few_shot_rows": reports.few_shot_rows(s),
        "few_shot_chart": next((c for c in curves if c["key"] == "few_shot"), None),
        "by_category": reports.subset_tables(s, "by_category"),
        "by_background": reports.subset_tables(s, "by_background"),
        "by_defect_type": reports.subset_tables(s, "by_defect_type"),
        "repeats": s.get("repeats"), "repeat_rows": reports.repeat_rows(s),
        "gallery": gallery, "curves": [c for c in curves if c["key"] != "few_shot"],
    })
    return context


@require_GET
def run_detail(request, pk):
    run = get_object_or_404(
        BenchmarkRun.objects.select_related("dataset", "created_by").prefetch_related("product_runs__product"), pk=pk
    )
    parts = list(run.product_runs.all())
    metrics = run.metrics or {}
    agg = metrics.get("aggregate") or {}
    context = {
        "run": run, "parts": [_part_context(run, p, runs.sees_per_image_results(request.user)) for p in parts if p.report] if run.status == Status.SUCCEEDED or any(p.report for p in parts) else [],
        "all_parts": parts,
        "multi": len(parts) > 1,
        "agg": agg,
        "agg_free": agg.get("test_part") or {},
        "agg_rows": reports.aggregate_rows(agg),
        "threads_used": sorted({p.report.get("threads") for p in parts if p.report and p.report.get("threads")}),
        "other_runs": BenchmarkRun.objects.filter(status=Status.SUCCEEDED).exclude(pk=run.pk)[:20],
        "retries": run.retries.order_by("pk"),  # linked both ways with run.retry_of
        "outline_colours": OUTLINE_COLOURS,
    }
    return render(request, "inference/run_detail.html", context)


@require_GET
def download(request, pk, fmt):
    run = get_object_or_404(BenchmarkRun, pk=pk)
    if fmt == "json":
        data = reports.run_json(run)
        if not runs.sees_per_image_results(request.user):
            data["products"] = {name: reports.summary(report) for name, report in data["products"].items()}
        response = JsonResponse(data, json_dumps_params={"indent": 2})
    else:
        response = HttpResponse(reports.run_csv(run), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = attachment(f"benchmark-{run.pk}.{fmt}")
    return response


def resolve_artifact(run: BenchmarkRun, relpath: str) -> Path:
    """The file ``relpath`` inside the run's artifact folder, or Http404 (no traversal, no links out)."""
    parts = Path(relpath).parts
    if not relpath or relpath.startswith(("/", "\\")) or ".." in parts or "\x00" in relpath:
        raise Http404("No such file.")
    base = run.artifacts_root.resolve()
    target = (base / relpath).resolve()
    if not target.is_relative_to(base) or not target.is_file():
        raise Http404("No such file.")
    return target


@require_GET
def artifact_file(request, pk, relpath):
    run = get_object_or_404(BenchmarkRun, pk=pk)
    if not runs.sees_per_image_results(request.user) and not runs.is_aggregate_artifact(relpath):
        raise PermissionDenied("Per-image results of a run are for reviewers and admins.")
    target = resolve_artifact(run, relpath)
    response = FileResponse(target.open("rb"))
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_GET
def compare(request):
    ids = read(CompareQuery, request.GET)["runs"]
    chosen = list(BenchmarkRun.objects.filter(pk__in=ids).select_related("dataset", "created_by")
                  .prefetch_related("products", "product_runs__product").order_by("pk"))
    context = {
        "groups": reports.comparison_groups(chosen) if len(chosen) >= 2 else None,
        "active": [r.pk for r in chosen if r.is_active],
        "chosen": chosen,
        "candidates": BenchmarkRun.objects.filter(status=Status.SUCCEEDED).select_related("dataset")[:100],
        "chosen_ids": [r.pk for r in chosen],
    }
    return render(request, "inference/compare.html", context)


@require_GET
def product_benchmarks(request, pk):
    """The product's decision first (the card of its newest run with a current report, as on that
    run's results page), then the recommendation over every run and the list of runs."""
    product = get_object_or_404(Product.objects.select_related("dataset"), pk=pk)
    product_runs = (
        BenchmarkRun.objects.filter(product_runs__product=product).select_related("created_by").distinct()[:50]
    )
    drift_checks = drift.product_drift(product)
    decided = board.latest_decided_part(product)
    deployments = list(Deployment.objects.filter(product=product).select_related("product_run__run", "deployed_by")[:20])
    rates = deployment_rates([d.pk for d in deployments])
    return render(request, "inference/product.html", {
        "product": product, "recommendation": recommendation.recommend(product), "runs": product_runs,
        "decided": {"part": decided, "deployable": deploy.deployable_techniques(decided)} if decided else None,
        "decision_card": reports.decision_card(reports.summary(decided.report), decided.run.get_model_display())
        if decided else None,
        "deployed": deploy.current(product),
        "drift_checks": drift_checks, "drift_window": drift.LINE_WINDOW,
        "drift_significance": drift.drift.SIGNIFICANCE,
        "drift_warning": next((c for c in drift_checks if c.is_current and c.statistics.drifted), None),
        "deployment_rates": [(d, rates[d.pk]) for d in deployments],
    })
