from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from api.root_views import ApiRootView

urlpatterns = [
    path("", ApiRootView.as_view(), name="api-root"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger's init script from ?script instead of inline: the CSP allows
    # scripts from 'self' only.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="api/swagger_ui.html"),
         name="api-docs"),
    # Labelling endpoints (datasets, products, images, labels, queue, review, export).
    path("", include("api.labelling_urls")),
    # Benchmark runs.
    path("", include("api.benchmark_urls")),
]
