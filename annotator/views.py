"""Browser pages and file endpoints of the labelling domain (thin: logic lives in services)."""
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import FileResponse, Http404, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from annotator.models import Dataset, Image, Product
from annotator.services.display import display_file


@require_GET
def home(request):
    datasets = Dataset.objects.prefetch_related("products").annotate(
        image_count=Count("products__images")
    )
    products = Product.objects.select_related("dataset").annotate(
        train_good=Count("images", filter=Q(images__split="train")),
        test_good=Count("images", filter=Q(images__split="test", images__is_anomalous=False)),
        anomalous=Count("images", filter=Q(images__is_anomalous=True)),
    )
    return render(request, "annotator/home.html", {"datasets": datasets, "products": products})


@require_GET
def product_detail(request, pk: int):
    product = get_object_or_404(Product.objects.select_related("dataset"), pk=pk)
    images = product.images.all()
    split = request.GET.get("split")
    if split in Image.Split.values:
        images = images.filter(split=split)
    defect_type = request.GET.get("defect_type")
    if defect_type:
        images = images.filter(defect_type=defect_type)
    page = Paginator(images, 60).get_page(request.GET.get("page"))
    defect_types = (
        product.images.values("split", "defect_type")
        .annotate(count=Count("id"))
        .order_by("split", "defect_type")
    )
    return render(
        request,
        "annotator/product_detail.html",
        {"product": product, "page": page, "defect_types": defect_types,
         "split": split, "defect_type": defect_type},
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
    except FileNotFoundError:
        raise Http404("No such file.")
    if not path.is_file():
        raise Http404("The file is missing from the dataset folder.")
    response = FileResponse(path.open("rb"))
    response["Cache-Control"] = "private, max-age=3600"
    return response
