from django.urls import path

from annotator import mask_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("products/<int:pk>/", views.product_detail, name="product-detail"),
    path("products/<int:pk>/labels/", views.labelling_list_page, name="labelling-list"),
    path("datasets/<int:pk>/label/", views.label_start, name="label-start"),
    path("images/<int:pk>/label/", views.workspace, name="workspace"),
    path("images/<int:pk>/mask/", mask_views.mask_editor, name="mask-editor"),
    path("images/<int:pk>/mask/save/", mask_views.mask_save, name="mask-save"),
    path("images/<int:pk>/mask/revisions/<int:revision>.png", mask_views.mask_revision_file, name="mask-revision-file"),
    path("products/<int:pk>/masks/", mask_views.mask_list, name="mask-list"),
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
