from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html, format_html_join

from annotator.models import (
    Claim,
    Dataset,
    Image,
    Label,
    LabelHistory,
    Product,
    ReviewDecision,
    Skip,
    User,
)
from annotator.services.importing import ImportFailed, import_zip

# At most this many problems are listed after a failed upload (the rest are counted).
UPLOAD_ERRORS_SHOWN = 200


@admin.register(User)
class DefectBenchUserAdmin(UserAdmin):
    list_display = ("username", "email", "role", "is_active", "is_staff")
    list_filter = ("role", "is_active", "is_staff")
    fieldsets = UserAdmin.fieldsets + (("DefectBench", {"fields": ("role",)}),)
    add_fieldsets = UserAdmin.add_fieldsets + (("DefectBench", {"fields": ("role",)}),)


class ProductInline(admin.TabularInline):
    model = Product
    extra = 0


class DatasetUploadForm(forms.Form):
    file = forms.FileField(
        label="Dataset (zip)",
        help_text="A zip of product folders (or of one product's folders) in MVTec AD, BTAD or "
        "plain good/anomalous/masks layout.",
        widget=forms.ClearableFileInput(attrs={"accept": ".zip,application/zip"}),
    )
    layout = forms.ChoiceField(
        choices=[("auto", "Detect automatically")] + list(Dataset.Layout.choices), initial="auto"
    )
    name = forms.CharField(
        required=False, max_length=200, help_text="Default: the zip file's name without .zip."
    )


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "layout", "root", "label_overlap", "created_at")
    inlines = [ProductInline]
    change_list_template = "admin/annotator/dataset/change_list.html"

    def get_urls(self):
        upload = path(
            "upload/",
            self.admin_site.admin_view(self.upload_view),
            name="annotator_dataset_upload",
        )
        return [upload, *super().get_urls()]

    def upload_view(self, request):
        """Upload a zip, import it (all or nothing) and report the summary or every problem."""
        if not request.user.is_admin_role:
            raise PermissionDenied("Only admins import datasets.")
        errors = []
        status = 200
        if request.method == "POST":
            form = DatasetUploadForm(request.POST, request.FILES)
            if form.is_valid():
                try:
                    report = import_zip(
                        form.cleaned_data["file"],
                        layout=form.cleaned_data["layout"],
                        name=form.cleaned_data["name"] or None,
                        created_by=request.user,
                    )
                except ImportFailed as failure:
                    errors = failure.errors
                    status = 400
                    shown = errors[:UPLOAD_ERRORS_SHOWN]
                    more = len(errors) - len(shown)
                    messages.error(
                        request,
                        format_html(
                            "Nothing was imported ({} problem{}):<br>{}{}",
                            len(errors),
                            "s" if len(errors) != 1 else "",
                            format_html_join("", "{}<br>", ((error,) for error in shown)),
                            f"… and {more} more" if more else "",
                        ),
                    )
                else:
                    messages.success(
                        request,
                        format_html(
                            "Imported.<br>{}",
                            format_html_join("", "{}<br>", ((line,) for line in report.summary_lines())),
                        ),
                    )
                    return redirect("admin:annotator_dataset_changelist")
            else:
                status = 400
        else:
            form = DatasetUploadForm()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Upload dataset (zip)",
            "form": form,
            "errors": errors,
        }
        return TemplateResponse(
            request, "admin/annotator/dataset/upload.html", context, status=status
        )


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("name", "dataset", "kind")
    list_filter = ("dataset", "kind")


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("path", "product", "split", "is_anomalous", "defect_type", "width", "height")
    list_filter = ("product", "split", "is_anomalous", "defect_type")
    search_fields = ("path",)
    readonly_fields = ("checksum", "width", "height", "created_at")


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    list_display = ("image", "annotator", "background", "category", "updated_at")
    list_filter = ("category", "background", "annotator")
    raw_id_fields = ("image",)


@admin.register(LabelHistory)
class LabelHistoryAdmin(admin.ModelAdmin):
    """Read-only: the history is append-only."""

    list_display = ("image", "annotator", "changed_by", "action", "changed_at", "source")
    list_filter = ("action", "source")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Claim)
class ClaimAdmin(admin.ModelAdmin):
    """Who is working on what; deleting a claim releases the image at once."""

    list_display = ("image", "annotator", "claimed_at")
    list_filter = ("annotator",)
    raw_id_fields = ("image",)


@admin.register(Skip)
class SkipAdmin(admin.ModelAdmin):
    list_display = ("image", "annotator", "skipped_at")
    list_filter = ("annotator",)
    raw_id_fields = ("image",)


@admin.register(ReviewDecision)
class ReviewDecisionAdmin(admin.ModelAdmin):
    """Read-only here: decisions are made on the review page so they reach the label history."""

    list_display = ("image", "reviewer", "background", "category", "decided_at")
    list_filter = ("category", "background", "reviewer")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
