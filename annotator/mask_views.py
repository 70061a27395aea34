"""The mask editor's page, its save endpoint, revision files and the per-product list of images
that need a mask (thin: the rules live in ``annotator.services.masks``)."""
from django.core.paginator import Paginator
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from annotator import forms
from annotator.models import Image, MaskRevision, Product
from annotator.paths import UnsafeFile, is_drawn_mask
from annotator.redirects import local_url
from annotator.services import defect_folder, masks

# Keys and what they do, shown on the page (one list for the help line and the buttons' titles).
TOOLS = [
    ("brush", "B", "Brush"),
    ("eraser", "E", "Eraser"),
    ("polygon", "P", "Polygon"),
    ("fill", "F", "Fill"),
]


def _image(pk: int) -> Image:
    """An anomalous image (the only ones with a defect mask); 404 otherwise."""
    return get_object_or_404(Image.objects.select_related("product__dataset"), pk=pk, is_anomalous=True)


def revision_json(revision: MaskRevision) -> dict:
    return {
        "id": revision.pk,
        "number": revision.number,
        "origin": revision.origin,
        "originLabel": revision.get_origin_display(),
        "startedFrom": revision.started_from,
        "by": revision.created_by.username,
        "at": timezone.localtime(revision.created_at).strftime("%Y-%m-%d %H:%M:%S"),
        "defectPixels": revision.defect_pixels,
        "url": reverse("mask-revision-file", args=[revision.image_id, revision.pk]),
    }


def _history(image: Image) -> list[dict]:
    return [revision_json(r) for r in masks.history(image)[:100]]


@require_GET
def mask_editor(request, pk: int):
    """Draw or correct an anomalous image's mask; the page's JS saves a PNG to ``mask_save``."""
    image = _image(pk)
    current = masks.current_revision(image)
    refusal = masks.may_draw(request.user, image)
    config = {
        "imageId": image.pk,
        "width": image.width,
        "height": image.height,
        "imageUrl": reverse("image-file", args=[image.pk, "image"]),
        # The current revision's own file (it never changes), else the dataset's mask.
        "maskUrl": (reverse("mask-revision-file", args=[image.pk, current.pk]) if current
                    else reverse("image-file", args=[image.pk, "mask"]) if image.mask_path else None),
        "hasMask": bool(image.mask_path),
        "maskIsDatasets": bool(image.mask_path) and not is_drawn_mask(image.mask_path),
        "currentRevision": current.pk if current else None,
        "saveUrl": reverse("mask-save", args=[image.pk]),
        "proposalUrl": reverse("inference-mask-proposal", args=[image.pk]),
        "workspaceUrl": reverse("workspace", args=[image.pk]) if image.split == Image.Split.TEST else None,
        "history": _history(image),
        "mayDraw": not refusal,
        "refusal": refusal,
    }
    return render(request, "annotator/mask_editor.html", {
        "image": image, "config": config, "current": current, "tools": TOOLS,
        "shown_path": defect_folder.shown_path(image, request.user),
        "back": local_url(request, request.GET.get("from"), reverse("mask-list", args=[image.product_id])),
    })


def _refused(message: str, status: int) -> JsonResponse:
    return JsonResponse({"detail": message}, status=status)


@require_POST
def mask_save(request, pk: int):
    """The request body is the PNG; the query string says what the editor started from."""
    image = _image(pk)
    try:
        query = forms.read(forms.MaskSaveQuery, request.GET)
    except forms.InvalidInput as error:
        return _refused(str(error), 400)
    limit = masks.max_upload_bytes()
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:  # refused before a byte of it is read
        return _refused(f"The mask file is {declared:,} bytes, more than the limit of {limit:,} "
                        "(DEFECTBENCH_MAX_MASK_UPLOAD_BYTES).", 400)
    png = request.read(limit + 1)
    start = masks.Start(query["start"], query["revision"], query["note"])
    try:
        revision = masks.save_drawn_mask(image=image, user=request.user, png=png, start=start,
                                         changed=query["changed"])
    except masks.MaskForbidden as error:
        return _refused(str(error), 403)
    except masks.MaskRefused as error:
        return _refused(str(error), 400)
    except (FileNotFoundError, UnsafeFile):
        return _refused("The image file is missing from the dataset folder; its mask cannot be saved.", 400)
    image.refresh_from_db()
    return JsonResponse({
        "revision": revision_json(revision),
        "history": _history(image),
        "maskUrl": reverse("mask-revision-file", args=[image.pk, revision.pk]),
    }, status=201)


@require_GET
def mask_revision_file(request, pk: int, revision: int):
    """A revision's mask, upright, as a 0/255 PNG (the editor opens it as a starting point)."""
    image = _image(pk)
    found = get_object_or_404(MaskRevision.objects.select_related("image__product__dataset"), pk=revision, image=image)
    try:
        data = masks.revision_png(found)
    except (FileNotFoundError, UnsafeFile, OSError, ValueError):
        return HttpResponse("The mask file is missing.", status=404, content_type="text/plain; charset=utf-8")
    response = HttpResponse(data, content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"  # a revision never changes
    return response


@require_GET
def mask_list(request, pk: int):
    """The product's anomalous images that have no mask yet; each opens the editor."""
    product = get_object_or_404(Product.objects.select_related("dataset"), pk=pk)
    page = Paginator(masks.images_needing_mask(product), 50).get_page(request.GET.get("page"))
    rows = [{"image": image, "name": defect_folder.shown_path(image, request.user)} for image in page]
    return render(request, "annotator/mask_list.html", {
        "product": product, "page": page, "rows": rows, "here": request.get_full_path(),
    })
