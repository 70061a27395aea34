from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from api.root_views import ApiRootView

urlpatterns = [
    path("", ApiRootView.as_view(), name="api-root"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # Labelling endpoints (datasets, products, images, labels, queue, review, export).
    path("", include("api.labelling_urls")),
    # Benchmark runs.
    path("", include("api.benchmark_urls")),
]
