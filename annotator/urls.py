from django.urls import path

from annotator import views

urlpatterns = [
    path("", views.home, name="home"),
    path("products/<int:pk>/", views.product_detail, name="product-detail"),
    path("products/<int:pk>/labels/", views.labelling_list_page, name="labelling-list"),
    path("datasets/<int:pk>/label/", views.label_start, name="label-start"),
    path("images/<int:pk>/label/", views.workspace, name="workspace"),
    path("review/", views.review_page, name="review"),
    path("history/", views.history_page, name="history"),
    path("datasets/<int:pk>/dashboard/", views.dashboard, name="dashboard"),
    path("datasets/<int:pk>/export/", views.export_page, name="export"),
    path("datasets/<int:pk>/archive/", views.dataset_archive, name="dataset-archive"),
    path("datasets/<int:pk>/delete/", views.dataset_delete, name="dataset-delete"),
    path("datasets/<int:pk>/settings/", views.dataset_settings_page, name="dataset-settings"),
    path("datasets/<int:pk>/defect-book/", views.defect_book_page, name="defect-book"),
    path("datasets/<int:pk>/defect-book/pin/", views.defect_book_pin, name="defect-book-pin"),
    path("datasets/<int:pk>/defect-book/unpin/", views.defect_book_unpin, name="defect-book-unpin"),
    path("datasets/<int:pk>/export/<str:variant>.csv", views.export_csv, name="export-csv"),
    path("datasets/<int:pk>/import-labels/", views.import_labels_page, name="import-labels"),
]
