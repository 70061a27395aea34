"""``/api/``: the API's entry points, and the page where a person manages their API token."""
from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views import defaults
from django.views.decorators.http import require_http_methods
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from annotator.forms import InvalidInput
from api import tokens

ENTRY_POINTS = {
    "datasets": "api-dataset-list",
    "products": "api-product-list",
    "images": "api-image-list",
    "labels": "api-label-list",
    "history": "api-history-list",
    "queue_next": "api-queue-next",
    "review": "api-review",
    "agreement": "api-agreement",
    "defect_book": "api-defect-book",
    "export": "api-export",
    "benchmark_runs": "api-benchmark-runs",
    "subset_counts": "api-benchmark-counts",
    "schema": "api-schema",
    "docs": "api-docs",
}


class ApiRootView(APIView):
    """The API's entry points (login or token needed, like every endpoint)."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, summary="The API's entry points: name -> URL")
    def get(self, request):
        return Response({name: request.build_absolute_uri(reverse(url)) for name, url in ENTRY_POINTS.items()})


def page_not_found(request, exception):
    """Django's 404 for a URL nothing answers (``handler404``): under /api/ JSON like every API
    error (``{"detail": ...}``, as documented), elsewhere the usual page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def bad_request(request, exception):
    """Django's 400 (``handler400``). Bad values a page's form found (``InvalidInput``): each field
    and its problem, as a page (or JSON under /api/); anything else Django's own 400, which tells
    nothing about the request."""
    if not isinstance(exception, InvalidInput):
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": "Bad request."}, status=400)
        return defaults.bad_request(request, exception)
    if request.path.startswith("/api/"):
        errors = {}
        for field, message in exception.problems:
            errors.setdefault(field, []).append(message)
        return JsonResponse(errors, status=400)
    return render(request, "bad_input.html", {"problems": exception.problems}, status=400)


@require_http_methods(["GET", "POST"])
def token_page(request):
    """Create (or replace), copy and revoke one's own API token."""
    if request.method == "POST":
        if request.POST.get("action") == "revoke":
            if tokens.revoke(request.user):
                messages.success(request, "Token revoked: requests with it now get 401.")
        else:
            tokens.create(request.user)
            messages.success(request, "New token created; any earlier token stopped working.")
        return redirect("api-token-page")
    token = tokens.current(request.user)
    return render(request, "api/token.html", {
        "token": token, "api_root": request.build_absolute_uri(reverse("api-root")),
        "expires_at": token and tokens.expires_at(token), "expired": token is not None and tokens.is_expired(token),
    })
