"""Benchmark pages (under /benchmarks/): runs console, launch form, results, files, downloads."""
from django.urls import path, re_path

from inference import views

urlpatterns = [
    path("", views.run_list, name="benchmark-runs"),
    path("new/", views.launch, name="benchmark-launch"),
    path("compare/", views.compare, name="benchmark-compare"),
    path("products/<int:pk>/", views.product_benchmarks, name="benchmark-product"),
    path("<int:pk>/", views.run_detail, name="benchmark-detail"),
    re_path(r"^(?P<pk>\d+)/report\.(?P<fmt>json|csv)$", views.download, name="benchmark-download"),
    path("<int:pk>/files/<path:relpath>", views.artifact_file, name="benchmark-file"),
]
