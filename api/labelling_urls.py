"""Labelling endpoints: datasets, products, images, labels, queue, review, agreement, export, import."""
from django.urls import path
from rest_framework.routers import SimpleRouter

from api import views

router = SimpleRouter()
router.register("datasets", views.DatasetViewSet, basename="api-dataset")
router.register("products", views.ProductViewSet, basename="api-product")
router.register("images", views.ImageViewSet, basename="api-image")
router.register("labels", views.LabelViewSet, basename="api-label")
router.register("history", views.HistoryViewSet, basename="api-history")

urlpatterns = [
    path("queue/next/", views.NextImageView.as_view(), name="api-queue-next"),
    path("queue/skip/", views.SkipView.as_view(), name="api-queue-skip"),
    path("review/", views.ReviewListView.as_view(), name="api-review"),
    path("review/<int:image_id>/", views.ReviewDecisionView.as_view(), name="api-review-decide"),
    path("defect-book/", views.DefectBookView.as_view(), name="api-defect-book"),
    path("defect-book/<int:pk>/", views.DefectBookEntryView.as_view(), name="api-defect-book-entry"),
    path("agreement/", views.AgreementView.as_view(), name="api-agreement"),
    path("export/", views.ExportView.as_view(), name="api-export"),
    path("labels-import/", views.LabelImportView.as_view(), name="api-label-import"),
    path("auth/token/", views.TokenView.as_view(), name="api-auth-token"),
    *router.urls,
]
