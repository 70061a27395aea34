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
]
