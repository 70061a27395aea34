"""Benchmark pages (under /benchmarks/): runs console, launch form, results, files, downloads."""
from django.urls import path, re_path

from inference import deploy_views, views

urlpatterns = [
    path("", views.run_list, name="benchmark-runs"),
    path("new/", views.launch, name="benchmark-launch"),
    path("compare/", views.compare, name="benchmark-compare"),
    path("products/<int:pk>/", views.product_benchmarks, name="benchmark-product"),
    path("<int:pk>/", views.run_detail, name="benchmark-detail"),
    re_path(r"^(?P<pk>\d+)/report\.(?P<fmt>json|csv)$", views.download, name="benchmark-download"),
    path("<int:pk>/files/<path:relpath>", views.artifact_file, name="benchmark-file"),
    path("products/<int:pk>/deploy/", deploy_views.deploy_model, name="benchmark-deploy"),
    path("products/<int:pk>/rollback/<int:deployment>/", deploy_views.rollback, name="deployment-rollback"),
    path("products/<int:pk>/inspect/", deploy_views.inspect_page, name="inspect-page"),
    path("products/<int:pk>/inspect/batch/", deploy_views.start_batch, name="inspect-batch"),
    path("images/<int:pk>/mask-proposal/", deploy_views.mask_proposal, name="inference-mask-proposal"),
    path("products/<int:pk>/verdicts.csv", deploy_views.verdicts_csv, name="product-verdicts-csv"),
    path("products/<int:pk>/history/", deploy_views.product_history, name="product-history"),
    path("inspections/<int:pk>/", deploy_views.job_detail, name="inspection-detail"),
    path("inspections/<int:pk>/cancel/", deploy_views.job_cancel, name="inspection-cancel"),
    path("inspections/<int:pk>/results.csv", deploy_views.job_csv, name="inspection-csv"),
    path("inspections/<int:pk>/files/<path:relpath>", deploy_views.job_file, name="inspection-file"),
]
