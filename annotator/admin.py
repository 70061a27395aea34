import csv
import io

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html, format_html_join

from annotator.models import (
    NEEDS_MASK,
    Claim,
    Dataset,
    Image,
    ImportJob,
    Label,
    LabelHistory,
    MaskRevision,
    Product,
    ReviewDecision,
    Skip,
    User,
    on_related,
)
from annotator.services import upload_jobs
from annotator.services.background import NothingToCancel
from annotator.services.importing import ImportFailed

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
        help_text="A zip of product folders (or of one product's folders) in MVTec AD, BTAD, "
        "plain good/anomalous/masks layout, with masks beside their images, or with a manifest.csv.",
        widget=forms.ClearableFileInput(attrs={"accept": ".zip,application/zip"}),
    )
    layout = forms.ChoiceField(
        choices=[("auto", "Detect automatically")] + list(Dataset.Layout.choices), initial="auto"
    )
    name = forms.CharField(
        required=False, max_length=200, help_text="Default: the zip file's name without .zip."
    )
    skip_invalid = forms.BooleanField(
        required=False, label="Skip invalid files",
        help_text="Import every valid file; the others are listed in the dataset's problem report. "
        "Unticked: any problem imports nothing.",
    )


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "layout", "root", "label_overlap", "problems", "created_at")
    inlines = [ProductInline]
    change_list_template = "admin/annotator/dataset/change_list.html"
    readonly_fields = ("import_options", "problem_table")
    exclude = ("problem_report",)

    @admin.display(description="problems")
    def problems(self, obj):
        return max(len(obj.problem_report.splitlines()) - 1, 0)

    @admin.display(description="Problem report (files left out by the last import)")
    def problem_table(self, obj):
        rows = list(csv.reader(io.StringIO(obj.problem_report)))[1:]
        if not rows:
            return "None"
        return format_html(
            '<table class="problem-report"><tr><th>path</th><th>problem</th></tr>{}</table>',
            format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", rows),
        )

    def get_urls(self):
        urls = [
            path("upload/", self.admin_site.admin_view(self.upload_view), name="annotator_dataset_upload"),
            path("upload/<int:job_id>/", self.admin_site.admin_view(self.job_view),
                 name="annotator_dataset_upload_job"),
            path("upload/<int:job_id>/status/", self.admin_site.admin_view(self.job_status_view),
                 name="annotator_dataset_upload_status"),
            path("upload/<int:job_id>/cancel/", self.admin_site.admin_view(self.job_cancel_view),
                 name="annotator_dataset_upload_cancel"),
        ]
        return [*urls, *super().get_urls()]

    def _job(self, request, job_id):
        if not request.user.is_admin_role:
            raise PermissionDenied("Only admins import datasets.")
        return get_object_or_404(ImportJob, pk=job_id)

    def job_view(self, request, job_id):
        """The upload's progress bar (polls the status view), cancel button, then its outcome."""
        job = self._job(request, job_id)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Importing {job.file_name}",
            "job": job,
            "state": upload_jobs.job_state(job),
        }
        return TemplateResponse(request, "admin/annotator/dataset/upload_job.html", context)

    def job_status_view(self, request, job_id):
        return JsonResponse(upload_jobs.job_state(self._job(request, job_id)))

    def job_cancel_view(self, request, job_id):
        job = self._job(request, job_id)
        if request.method != "POST":
            return JsonResponse({"error": "POST to cancel"}, status=405)
        try:
            job = upload_jobs.cancel_import(job)
        except NothingToCancel as error:
            messages.info(request, str(error))
        else:
            messages.success(request, "Import cancelled; nothing was imported." if job.finished
                             else "The import stops at its next file; nothing will be imported.")
        return redirect("admin:annotator_dataset_upload_job", job_id=job.pk)

    def upload_view(self, request):
        """Store an uploaded zip and queue its import as a job (see the job page for progress)."""
        if not request.user.is_admin_role:
            raise PermissionDenied("Only admins import datasets.")
        errors = []
        status = 200
        if request.method == "POST":
            form = DatasetUploadForm(request.POST, request.FILES)
            if form.is_valid():
                try:
                    job = upload_jobs.start_upload(
                        form.cleaned_data["file"],
                        layout=form.cleaned_data["layout"],
                        name=form.cleaned_data["name"] or None,
                        skip_invalid=form.cleaned_data["skip_invalid"],
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
                    return redirect("admin:annotator_dataset_upload_job", job_id=job.pk)
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


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ("file_name", "status", "stage", "done", "total", "dataset", "created_by", "created_at")
    list_filter = ("status",)
    readonly_fields = [field.name for field in ImportJob._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("name", "dataset", "kind", "anomalous", "needs_mask")
    list_filter = ("dataset", "kind")

    def get_queryset(self, request):
        # one aggregate query for the whole page, not a count per row
        return super().get_queryset(request).annotate(
            anomalous_count=Count("images", filter=Q(images__is_anomalous=True)),
            needs_mask_count=Count("images", filter=on_related("images__", NEEDS_MASK)))

    @admin.display(description="anomalous", ordering="anomalous_count")
    def anomalous(self, obj):
        return obj.anomalous_count

    @admin.display(description="without mask (needs a mask)", ordering="needs_mask_count")
    def needs_mask(self, obj):
        return obj.needs_mask_count


class HasMaskFilter(admin.SimpleListFilter):
    title = "mask"
    parameter_name = "mask"

    def lookups(self, request, model_admin):
        return [("needs", "anomalous without mask (needs a mask)"), ("has", "has a mask")]

    def queryset(self, request, queryset):
        if self.value() == "needs":
            return queryset.filter(NEEDS_MASK)
        if self.value() == "has":
            return queryset.exclude(mask_path="")
        return queryset


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("path", "product", "split", "is_anomalous", "defect_type", "width", "height")
    list_filter = ("product", "split", "is_anomalous", HasMaskFilter, "defect_type")
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


@admin.register(MaskRevision)
class MaskRevisionAdmin(admin.ModelAdmin):
    """Read-only: mask revisions are append-only (made by the mask editor)."""

    list_display = ("image", "number", "origin", "created_by", "created_at")
    list_filter = ("origin",)
    raw_id_fields = ("image", "previous")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
