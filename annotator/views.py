"""Browser pages and file endpoints of the labelling domain (thin: logic lives in services)."""
from functools import wraps

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator

from django.http import (
    FileResponse, Http404, HttpResponseBadRequest, HttpResponseNotFound, HttpResponseNotModified, StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods

from annotator import forms
from annotator.models import LABELLABLE, NEEDS_MASK, Dataset, DefectBookEntry, Image, Label, Product, User
from annotator.services import (
    agreement,
    board,
    defect_book,
    defect_folder,
    dataset_lifecycle,
    dataset_settings,
    label_csv,
    labelling_list,
    nothing_left,
    queue,
    review,
    statistics,
)
from annotator.downloads import attachment
from annotator.paths import UnsafeFile
from annotator.redirects import local_url
from annotator.services.display import UnreadableImage, display_file
from annotator.services.labels import visible_history


@require_GET
def home(request):
    """The status board: labelling progress, what is open, disagreements and benchmark sections."""
    show_archived = request.GET.get("archived") == "1"
    return render(request, "annotator/home.html", {
        "rows": board.board(request.user, archived=show_archived), "show_archived": show_archived,
        "n_archived": Dataset.objects.filter(archived=True).count(),
    })


@require_GET
def product_detail(request, pk: int):
    product = get_object_or_404(Product.objects.select_related("dataset"), pk=pk)
    images = product.images.select_related("product__dataset")
    query = forms.read(forms.ProductImagesQuery, request.GET)
    split, defect_type = query["split"], query["defect_type"]
    if split:
        images = images.filter(split=split)
    if defect_type:
        images = defect_folder.filter_by_defect_type(images, defect_type, request.user)
    page = Paginator(images, 60).get_page(request.GET.get("page"))
    defect_types = defect_folder.facets(product, request.user)
    return render(
        request,
        "annotator/product_detail.html",
        {"product": product, "page": page, "defect_types": defect_types,
         "split": split, "defect_type": defect_type,
         "needs_mask": product.images.filter(NEEDS_MASK).count()},
    )


@require_GET
def image_file(request, pk: int, kind: str):
    """Serve an image or its mask; ``?size=N`` for a cached display copy. Login required."""
    image = get_object_or_404(Image.objects.select_related("product__dataset"), pk=pk)
    size = request.GET.get("size")
    try:
        path = display_file(image, kind=kind, size=int(size) if size else None)
    except ValueError as error:
        return HttpResponseBadRequest(str(error))
    except (FileNotFoundError, UnsafeFile):
        # A file outside the data roots is answered like a missing one: nothing about it leaks.
        raise Http404("The file is missing from the dataset folder.")
    except UnreadableImage as error:
        # Its message names the file's path, which holds the defect folder a dataset may hide.
        message = "The file is not a readable image." if defect_folder.hidden_for(
            request.user, image.product.dataset) else str(error)
        return HttpResponseNotFound(message, content_type="text/plain; charset=utf-8")
    if not path.is_file():
        raise Http404("The file is missing from the dataset folder.")
    if kind == "mask":
        # A mask changes under the same address (redrawn in the mask editor): the browser asks
        # again each time and gets "not modified" while its copy is current. The display copy's
        # name is a hash of the source file and its time stamp, so it names this version exactly.
        tag = f'"{path.stem}"'
        response = (HttpResponseNotModified() if tag in request.META.get("HTTP_IF_NONE_MATCH", "")
                    else FileResponse(path.open("rb")))
        response["ETag"] = tag
        response["Cache-Control"] = "private, no-cache"
        return response
    response = FileResponse(path.open("rb"))
    response["Cache-Control"] = "private, max-age=3600"
    return response


# --- labelling workflow pages ---------------------------------------------------------------
CATEGORY_HELP = [
    ("structural", "1", "Structural", "The shape is broken: holes, bends, cracks, missing or broken parts."),
    ("surface", "2", "Surface", "The shape is intact, the surface is not: scratches, dents, rust, discolouration."),
    ("contamination", "3", "Contamination", "Something is on it that does not belong: glue, dust, dirt, threads."),
    ("combined", "4", "Combined", "Several of these at once, usually several separate mask components."),
]

# The two background values, one key each (idempotent: pressing B twice still means "with").
BACKGROUND_HELP = [
    ("yes", "b", "With background", "The product sits on a backdrop that is visible around it."),
    ("no", "n", "Without background", "A close-up: the product or texture fills the whole frame."),
]


def role_required(role: str):
    """``reviewer``: reviewers and admins; ``admin``: admins. Others get 403 (login is checked by middleware)."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            user = request.user
            allowed = user.is_admin_role if role == "admin" else user.is_reviewer_role
            if not allowed:
                who = "admins" if role == "admin" else "reviewers and admins"
                raise PermissionDenied(f"This page is for {who}; you are signed in as {user.username} "
                                       f"({user.get_role_display().lower()}). An admin can change your role.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


@require_http_methods(["GET", "POST"])
def label_start(request, pk: int):
    """GET: the start page of a dataset's (or ``?product=``) queue; it changes nothing.
    POST: claim the next image and open the workspace on it."""
    dataset = get_object_or_404(Dataset, pk=pk)
    product = None
    if (product_id := forms.read(forms.ProductQuery, request.GET)["product"]) is not None:
        product = get_object_or_404(Product, pk=product_id, dataset=dataset)
    if request.method == "GET":
        if not queue.has_work(request.user, dataset=dataset, product=product):
            return _queue_done(request, dataset, product)
        return render(request, "annotator/queue_start.html", {"dataset": dataset, "product": product})
    image = queue.next_image(request.user, dataset=dataset, product=product)
    if image is None:
        return _queue_done(request, dataset, product)
    url = reverse("workspace", args=[image.pk])
    return redirect(f"{url}?scope=product" if product else url)


def _queue_done(request, dataset, product):
    """"Nothing left to label", and why (every image has its overlap's labels, others hold them)."""
    state = nothing_left.nothing_left(request.user, dataset=dataset, product=product)
    return render(request, "annotator/queue_done.html", {
        "dataset": dataset, "product": product, "state": state, "reasons": nothing_left.reasons(state),
    })


@require_GET
def labelling_list_page(request, pk: int):
    """Every anomalous image of a product with my label; filters; a click opens the workspace."""
    product = get_object_or_404(Product.objects.select_related("dataset"), pk=pk)
    which = labelling_list.clean_filter(request.GET.get("filter"), request.user)
    category = request.GET.get("category") if request.GET.get("category") in Label.Category.values else None
    rows = labelling_list.labelling_rows(product, request.user, which, category)
    return render(request, "annotator/labelling_list.html", {
        "product": product, "rows": rows, "filter": which, "category": category,
        "show_defect_folder": not defect_folder.hidden_for(request.user, product.dataset),
        "filters": labelling_list.filters_for(request.user).items(), "categories": Label.Category.choices,
        "here": request.get_full_path(), "see_all": request.user.is_reviewer_role,
    })


@require_GET
def workspace(request, pk: int):
    """The labelling workspace for one anomalous test image (the page's JS talks to the API)."""
    image = get_object_or_404(
        Image.objects.select_related("product__dataset").filter(LABELLABLE), pk=pk
    )
    scope_product = request.GET.get("scope") == "product"
    config = {
        "imageId": image.pk,
        "datasetId": image.product.dataset_id,
        "productId": image.product_id if scope_product else None,
        "api": {
            "workspace": reverse("api-image-workspace", args=[0]),
            "next": reverse("api-queue-next"),
            "skip": reverse("api-queue-skip"),
            "labels": reverse("api-label-list"),
        },
        "workspaceUrl": reverse("workspace", args=[0]),
        "listUrl": reverse("labelling-list", args=[0]),
        "maskEditorUrl": reverse("mask-editor", args=[0]),
        "doneUrl": reverse("label-start", args=[image.product.dataset_id]),
        "categories": [{"value": v, "key": k, "name": n, "help": h} for v, k, n, h in CATEGORY_HELP],
        "backgrounds": [{"value": v == "yes", "key": k, "name": n} for v, k, n, _ in BACKGROUND_HELP],
        "showDefectFolder": not defect_folder.hidden_for(request.user, image.product.dataset),
        "returnTo": local_url(request, request.GET.get("from")),
        # Opened by hovering a category or pressing ?, fetched then (never on the next-image path).
        "defectBook": {
            "api": reverse("api-defect-book"),
            "page": reverse("defect-book", args=[image.product.dataset_id]),
            "canEdit": request.user.is_reviewer_role,
            "kinds": [{"value": v, "name": n} for v, n in DefectBookEntry.Kind.choices],
            "noteMaxLength": defect_book.NOTE_MAX_LENGTH,
        },
    }
    return render(request, "annotator/workspace.html", {"image": image, "config": config,
                                                        "shown_path": defect_folder.shown_path(image, request.user),
                                                        "categories": CATEGORY_HELP,
                                                        "backgrounds": BACKGROUND_HELP})


@require_http_methods(["GET", "POST"])
@role_required("reviewer")
def review_page(request):
    """Images whose annotators disagree: every label and who gave it; the reviewer sets the final label."""
    dataset = None
    if (dataset_id := forms.read(forms.DatasetQuery, request.GET)["dataset"]) is not None:
        dataset = get_object_or_404(Dataset, pk=dataset_id)
    if request.method == "POST":
        form = forms.ReviewDecisionForm(request.POST)
        if not form.is_valid() and not set(form.errors) <= form.CHOICES:
            raise forms.InvalidInput(form)
        image = get_object_or_404(Image, pk=form.cleaned_data["image"])
        if form.errors:
            messages.error(request, "Choose a background and a category.")
        else:
            decision = form.cleaned_data
            try:
                review.decide(image=image, reviewer=request.user, background=decision["background"] == "yes",
                              category=decision["category"], note=decision["note"])
            except review.NotReviewable as error:
                messages.error(request, str(error))
            else:
                messages.success(request, f"Final label of {image.path} saved.")
        return redirect(request.get_full_path())
    show_decided = request.GET.get("decided") == "1"
    page = Paginator(review.disagreements(dataset=dataset, include_decided=show_decided), 25).get_page(
        request.GET.get("page")
    )
    items = review.items_for(page)
    if items:  # the first one is reviewed with keys, beside a defect-free reference
        items[0].reference = review.reference_for(items[0].image)
    return render(request, "annotator/review.html", {
        "items": items, "page": page, "dataset": dataset, "datasets": Dataset.objects.all(),
        "show_decided": show_decided, "categories": Label.Category.choices,
        "book_kinds": DefectBookEntry.Kind.choices, "note_max_length": defect_book.NOTE_MAX_LENGTH,
        "here": request.get_full_path(),
    })


@require_GET
def defect_book_page(request, pk: int):
    """A dataset's defect book: per category (with its definition) and kind, the pinned images
    and their notes. Everyone reads it; reviewers and admins unpin here."""
    dataset = get_object_or_404(Dataset, pk=pk)
    grouped = defect_book.book(dataset)
    hidden = defect_folder.hidden_for(request.user, dataset)
    for entries in grouped.values():
        for entry in entries:
            entry.shown_path = defect_folder.neutral_name(entry.image) if hidden else entry.image.path
    sections = [
        {"category": value, "key": key, "name": name, "help": help_text,
         "count": sum(len(grouped.get((value, kind), [])) for kind in DefectBookEntry.Kind.values),
         "kinds": [{"kind": kind, "label": label, "entries": grouped.get((value, kind), [])}
                   for kind, label in DefectBookEntry.Kind.choices]}
        for value, key, name, help_text in CATEGORY_HELP
    ]
    return render(request, "annotator/defect_book.html", {
        "dataset": dataset, "sections": sections, "total": sum(len(e) for e in grouped.values()),
        "can_edit": request.user.is_reviewer_role, "here": request.get_full_path(),
    })


def _back_to(request, dataset: Dataset) -> str:
    """Where a pin or unpin returns: the page it was made on (``next``, on this site), else the book."""
    return local_url(request, request.POST.get("next"), default=reverse("defect-book", args=[dataset.pk]))


@require_http_methods(["POST"])
@role_required("reviewer")
def defect_book_pin(request, pk: int):
    """Pin an image of the dataset to a category as an example, counter-example or borderline case."""
    dataset = get_object_or_404(Dataset, pk=pk)
    form = forms.DefectBookPinForm(request.POST)
    if not form.is_valid():
        raise forms.InvalidInput(form)
    data = form.cleaned_data
    image = Image.objects.select_related("product__dataset").filter(pk=data["image"]).first()
    try:
        if image is None:
            raise defect_book.BookRefused(f"There is no image {data['image']}.")
        entry, created = defect_book.pin(dataset=dataset, image=image, category=data["category"],
                                         kind=data["kind"], note=data["note"], reviewer=request.user)
    except defect_book.BookRefused as error:
        form.add_error("image", str(error))
        raise forms.InvalidInput(form)
    messages.success(request, f"{image.path} {'pinned' if created else 'pinned again'} as "
                              f"{entry.get_kind_display().lower()} of {entry.get_category_display()}.")
    return redirect(_back_to(request, dataset))


@require_http_methods(["POST"])
@role_required("reviewer")
def defect_book_unpin(request, pk: int):
    dataset = get_object_or_404(Dataset, pk=pk)
    form = forms.DefectBookUnpinForm(request.POST)
    if not form.is_valid():
        raise forms.InvalidInput(form)
    try:
        entry = defect_book.unpin(dataset=dataset, entry_id=form.cleaned_data["entry"], reviewer=request.user)
    except defect_book.BookRefused as error:
        form.add_error("entry", str(error))
        raise forms.InvalidInput(form)
    messages.success(request, f"{entry.image.path} taken out of {entry.get_category_display()}.")
    return redirect(_back_to(request, dataset))


@require_GET
def history_page(request):
    """Every label change (annotators: the history of their own labels), newest first."""
    image = None
    if (image_id := forms.read(forms.ImageQuery, request.GET)["image"]) is not None:
        image = get_object_or_404(Image, pk=image_id)
    entries = visible_history(request.user, image)
    page = Paginator(entries, 100).get_page(request.GET.get("page"))
    return render(request, "annotator/history.html", {"page": page, "image": image})


def _bars(counts: dict, order: list, labels: dict) -> list[dict]:
    total = max(counts.values(), default=0) or 1
    return [{"key": key, "label": labels.get(key, key), "count": counts.get(key, 0),
             "width": round(100 * counts.get(key, 0) / total, 1)} for key in order]


@require_GET
@role_required("reviewer")
def dashboard(request, pk: int):
    """Progress per product, label distribution (category, background), annotators' progress, agreement."""
    dataset = get_object_or_404(Dataset, pk=pk)
    snapshot = statistics.current(dataset)
    # Progress from the queue's own figures (seconds old at most, dropped on every change), not the
    # statistics snapshot: that one is renewed when labels change, so after an overlap change it
    # still said "63 / 63 fully labelled".
    products = [{"product": product, "progress": queue.product_progress(product)}
                for product in dataset.products.all()]
    category_counts, background_counts = snapshot["category_counts"], snapshot["background_counts"]
    final_categories = snapshot["final_categories"]
    total_images = sum(p["progress"].total for p in products)
    stats = snapshot["agreement"]
    category_names = dict(Label.Category.choices)
    pair_rows = []
    for index, pair in enumerate(stats["fields"]["overall"]["pairs"]):
        by_field = {field: stats["fields"][field]["pairs"][index] for field in agreement.FIELDS}
        pair_rows.append({
            "annotators": " · ".join(pair["annotators"]),
            "n": pair["n"],
            "observed": pair["observed_agreement"],
            "kappa": {field: by_field[field]["cohen_kappa"] for field in agreement.FIELDS},
            "category_matrix": list(zip(
                by_field["category"]["confusion_matrix"]["values"],
                by_field["category"]["confusion_matrix"]["matrix"],
            )),
            "category_values": by_field["category"]["confusion_matrix"]["values"],
        })
    return render(request, "annotator/dashboard.html", {
        "dataset": dataset,
        "products": products,
        "total_images": total_images,
        "category_bars": _bars(category_counts, Label.Category.values, category_names),
        "final_bars": _bars(final_categories, Label.Category.values, category_names),
        "background_bars": _bars(background_counts, ["yes", "no"], {"yes": "With background", "no": "Without background"}),
        "annotators": stats["per_annotator"],
        "agreement": stats,
        "pair_rows": pair_rows,
        "open_disagreements": review.disagreements(dataset=dataset).count(),
        "computed_at": parse_datetime(snapshot["computed_at"]),
        # A snapshot from before suggestions existed has none: the next refresh adds them.
        "suggestions": snapshot.get("suggestions"),
    })


@require_http_methods(["POST"])
@role_required("admin")
def dataset_settings_page(request, pk: int):
    """Overlap (annotators per image), whether annotators see the defect folder, category suggestions."""
    dataset = get_object_or_404(Dataset, pk=pk)
    try:
        dataset_settings.update_settings(dataset, request.user, label_overlap=request.POST.get("label_overlap"),
                                         show_defect_folder=request.POST.get("show_defect_folder") == "on",
                                         suggest_categories=request.POST.get("suggest_categories") == "on")
    except dataset_settings.SettingsRefused as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Settings of {dataset.name} saved: {dataset.label_overlap} annotator(s) per image, "
                                  f"defect folder {'shown' if dataset.show_defect_folder else 'hidden'}, "
                                  f"category suggestions {'on' if dataset.suggest_categories else 'off'}.")
    return redirect("dashboard", pk=dataset.pk)


@require_http_methods(["POST"])
@role_required("admin")
def dataset_archive(request, pk: int):
    dataset = get_object_or_404(Dataset, pk=pk)
    dataset_lifecycle.set_archived(dataset, request.user, request.POST.get("archived") == "1")
    messages.success(request, f"{dataset.name} {'archived' if dataset.archived else 'restored'}.")
    return redirect("dashboard", pk=dataset.pk)


@require_http_methods(["GET", "POST"])
@role_required("admin")
def dataset_delete(request, pk: int):
    """A confirmation page listing what will be lost; deleting needs the dataset's name typed."""
    dataset = get_object_or_404(Dataset, pk=pk)
    if request.method == "POST":
        try:
            lost = dataset_lifecycle.delete_dataset(dataset, request.user, request.POST.get("confirm_name", ""))
        except dataset_lifecycle.DeleteRefused as error:
            messages.error(request, str(error))
        else:
            messages.success(request, f"Dataset {dataset.name} deleted: " + ", ".join(f"{n} {w}" for w, n in lost) + ".")
            return redirect("home")
    return render(request, "annotator/dataset_delete.html",
                  {"dataset": dataset, "lost": dataset_lifecycle.loss_summary(dataset)})


@require_GET
def export_page(request, pk: int):
    dataset = get_object_or_404(Dataset, pk=pk)
    return render(request, "annotator/export.html", {"dataset": dataset})


@require_GET
def export_csv(request, pk: int, variant: str):
    """Streamed label CSV (``images`` or ``annotations``); annotators get only their own labels."""
    dataset = get_object_or_404(Dataset, pk=pk)
    if variant not in label_csv.EXPORT_VARIANTS:
        raise Http404("Unknown export variant.")
    response = StreamingHttpResponse(label_csv.export_lines(dataset, variant, request.user),
                                     content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = attachment(label_csv.export_filename(dataset, variant))
    return response


@require_http_methods(["GET", "POST"])
@role_required("admin")
def import_labels_page(request, pk: int):
    """Upload a label CSV: a dry run first, then the real import (all rows or none)."""
    dataset = get_object_or_404(Dataset, pk=pk)
    report = None
    if request.method == "POST":
        upload = request.FILES.get("file")
        annotator = None
        name = forms.read(forms.LabelImportForm, request.POST)["annotator"]
        if name:
            annotator = User.objects.filter(username=name).first()
        if upload is None:
            messages.error(request, "Choose a CSV file.")
        elif name and annotator is None:
            messages.error(request, f"No user named {name!r}.")
        else:
            report = label_csv.import_labels(upload, dataset=dataset, importer=request.user,
                                             annotator=annotator, dry_run=request.POST.get("apply") != "1")
    return render(request, "annotator/import_labels.html", {"dataset": dataset, "report": report})
