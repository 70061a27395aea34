"""Benchmark endpoints: runs (list, launch, detail, cancel, retry), live subset counts, recommendations."""
from django.urls import path

from api import benchmark_views as views

urlpatterns = [
    path("benchmarks/runs/", views.RunListView.as_view(), name="api-benchmark-runs"),
    path("benchmarks/runs/<int:pk>/", views.RunDetailView.as_view(), name="api-benchmark-run"),
    path("benchmarks/runs/<int:pk>/cancel/", views.CancelView.as_view(), name="api-benchmark-cancel"),
    path("benchmarks/runs/<int:pk>/retry/", views.RetryView.as_view(), name="api-benchmark-retry"),
    path("benchmarks/subset-counts/", views.SubsetCountsView.as_view(), name="api-benchmark-counts"),
    path("benchmarks/products/<int:pk>/recommendation/", views.RecommendationView.as_view(),
         name="api-benchmark-recommendation"),
    path("products/<int:pk>/deployments/", views.DeploymentsView.as_view(), name="api-deployments"),
    path("products/<int:pk>/deployments/<int:deployment>/rollback/", views.RollbackView.as_view(),
         name="api-deployment-rollback"),
    path("products/<int:pk>/inspect/", views.InspectView.as_view(), name="api-inspect"),
    path("products/<int:pk>/inspections/", views.BatchInspectView.as_view(), name="api-inspect-batch"),
    path("inspections/<int:pk>/", views.InspectionJobView.as_view(), name="api-inspection"),
    path("inspections/<int:pk>/cancel/", views.InspectionCancelView.as_view(), name="api-inspection-cancel"),
    path("verdicts/<int:pk>/feedback/", views.VerdictFeedbackView.as_view(), name="api-verdict-feedback"),
    path("verdicts/<int:pk>/add-to-dataset/", views.VerdictAddView.as_view(), name="api-verdict-add"),
    path("products/<int:pk>/verdicts/", views.ProductVerdictsView.as_view(), name="api-product-verdicts"),
]
