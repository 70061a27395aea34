"""Deploy and inspect pages (thin: the rules live in inference.services.deploy). Login everywhere;
admins deploy and roll back, reviewers and admins inspect."""
from pathlib import Path

from django.contrib import messages
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotator.downloads import attachment
from annotator.forms import read
from annotator.models import Product
from annotator.services.background import NothingToCancel
from annotator.paths import shown_path
from annotator.views import role_required
from inference.forms import BatchForm, DeployForm, HistoryQuery, TrailPeriodForm
from inference.models import FeedbackKind, InspectionJob, ProductRun, Status
from inference.services import deploy, feedback, trail
from inference.services.reports import TECHNIQUE_LABELS


@require_POST
@role_required("admin")
def deploy_model(request, pk):
    product = get_object_or_404(Product, pk=pk)
    chosen = read(DeployForm, request.POST)
    part = ProductRun.objects.filter(run_id=chosen["run"], product=product).first() if chosen["run"] else None
    if part is None:
        messages.error(request, f"No run {chosen['run'] or '(none given)'} on {product.name}.")
        return redirect("benchmark-product", pk=product.pk)
    try:
        deployment = deploy.deploy(part, chosen["technique"], request.user, note=chosen["note"])
    except deploy.DeployRefused as error:
        messages.error(request, " ".join(error.messages))
        return redirect("benchmark-product", pk=product.pk)
    messages.success(request, f"Deployed run {part.run_id} with the "
                              f"{TECHNIQUE_LABELS.get(deployment.technique, deployment.technique)} threshold.")
    return redirect("inspect-page", pk=product.pk)


@require_POST
@role_required("admin")
def rollback(request, pk, deployment):
    product = get_object_or_404(Product, pk=pk)
    try:
        deploy.rollback(product, deployment, request.user)
    except deploy.DeployRefused as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"Rolled back to deployment {deployment}.")
    return redirect("inspect-page", pk=product.pk)


def _deployment_context(product):
    current = deploy.current(product)
    context = {"product": product, "current": current, "history": deploy.history(product)[:50],
               "technique_labels": TECHNIQUE_LABELS}
    if current is not None:
        manifest = deploy.package_manifest(current.product_run) or {}
        thresholds = manifest.get("thresholds") or {}
        context.update(manifest=manifest, image_threshold=(thresholds.get("image") or {}).get("value"),
                       pixel_threshold=((thresholds.get("pixel") or {}).get(current.technique) or {}).get("value"))
    return context


@require_GET
@role_required("reviewer")
def inspect_page(request, pk):
    product = get_object_or_404(Product.objects.select_related("dataset"), pk=pk)
    context = _deployment_context(product)
    context["jobs"] = InspectionJob.objects.filter(product=product, kind=InspectionJob.Kind.BATCH)[:20]
    return render(request, "inference/inspect.html", context)


@require_POST
@role_required("reviewer")
def start_batch(request, pk):
    product = get_object_or_404(Product, pk=pk)
    folder = read(BatchForm, request.POST)["folder"] or None
    try:
        job = deploy.start_batch(product, request.user, folder=folder, zip_file=request.FILES.get("zip"))
    except deploy.DeployRefused as error:
        messages.error(request, " ".join(error.messages))
        return redirect("inspect-page", pk=product.pk)
    return redirect("inspection-detail", pk=job.pk)


def _shown_source(job) -> str:
    """What the job inspects, as a reviewer may read it: never the server's absolute path."""
    if not job.source:
        return ""
    if Path(job.source).is_relative_to(job.artifacts_root.resolve()):
        return "the uploaded zip"
    return shown_path(job.source)


@require_GET
@role_required("reviewer")
def job_detail(request, pk):
    job = get_object_or_404(InspectionJob.objects.select_related("product", "deployment__product_run"), pk=pk)
    verdicts = dict(job.verdicts.values_list("index", "id"))
    marks = feedback.latest_feedback(verdicts.values())
    results = []
    for r in job.results:
        if "error" in r:
            continue
        verdict = verdicts.get(r.get("index"))
        results.append({**r, "verdict_id": verdict, "mark": marks.get(verdict)})
    return render(request, "inference/inspection_job.html", {
        "job": job, "source": _shown_source(job), "active": job.status in (Status.QUEUED, Status.RUNNING),
        "defective": [r for r in results if r["defective"]], "good": [r for r in results if not r["defective"]],
        "failed": [r for r in job.results if "error" in r], "feedback_kinds": FeedbackKind.choices,
    })


@require_POST
@role_required("reviewer")
def job_cancel(request, pk):
    try:
        job = deploy.cancel_job(get_object_or_404(InspectionJob, pk=pk))
    except NothingToCancel as error:
        messages.info(request, str(error))
    else:
        messages.success(request, f"Inspection {job.pk} cancelled." if job.status == Status.CANCELLED else
                         f"Inspection {job.pk} stops after its current group of images.")
    return redirect("inspection-detail", pk=pk)


@require_GET
@role_required("reviewer")
def job_csv(request, pk):
    job = get_object_or_404(InspectionJob, pk=pk)
    response = HttpResponse(deploy.results_csv(job), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = attachment(f"inspection-{job.pk}.csv")
    return response


@require_GET
@role_required("reviewer")
def job_file(request, pk, relpath):
    job = get_object_or_404(InspectionJob, pk=pk)
    target = deploy.resolve_job_file(job, relpath)
    if target is None:
        raise Http404("No such file.")
    response = FileResponse(target.open("rb"))
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_GET
def mask_proposal(request, pk):
    """JSON: the model's proposed mask of an anomalous image (``inference.services.mask_proposal``),
    for the mask editor; ``{"available": false, "detail": ...}`` when no model can propose one.
    Any signed-in user (the editor's users): it shows the model's output, not anyone's labels."""
    from django.http import JsonResponse

    from annotator.models import Image
    from annotator.paths import UnsafeFile
    from inference.services.mask_proposal import NoProposal, propose_mask

    image = get_object_or_404(Image.objects.select_related("product__dataset"), pk=pk, is_anomalous=True)
    try:
        proposal = propose_mask(image)
    except NoProposal as error:
        return JsonResponse({"available": False, "detail": str(error)})
    except (FileNotFoundError, UnsafeFile):
        return JsonResponse({"available": False, "detail": "The image file is missing from the dataset folder."},
                            status=404)
    except (OSError, ValueError):  # a file no longer readable (replaced, truncated) or above the pixel limit
        return JsonResponse({"available": False, "detail": "The image file cannot be read; no proposal."})
    response = JsonResponse(proposal.to_json())
    response["Cache-Control"] = "private, no-store"
    return response


# ---- the audit trail ------------------------------------------------------------------------------

@require_GET
@role_required("reviewer")
def verdicts_csv(request, pk):
    """Every verdict of the product in a period (``?start=&end=``, days included), as CSV."""
    product = get_object_or_404(Product, pk=pk)
    period = read(TrailPeriodForm, request.GET)
    response = StreamingHttpResponse(trail.verdicts_csv(product, period["start"], period["end"]),
                                     content_type="text/csv; charset=utf-8")
    span = "-".join(str(d) for d in (period["start"], period["end"]) if d) or "all"
    response["Content-Disposition"] = attachment(f"verdicts-{product.name}-{span}.csv")
    return response


@require_GET
@role_required("reviewer")
def product_history(request, pk):
    product = get_object_or_404(Product.objects.select_related("dataset"), pk=pk)
    cursor = read(HistoryQuery, request.GET)["after"]
    events, next_cursor = trail.history_page(product, cursor)
    return render(request, "inference/history.html", {
        "product": product, "events": events, "next": next_cursor.encode() if next_cursor else "",
        "first_page": cursor is None, "period_form": TrailPeriodForm(),
    })
