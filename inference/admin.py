from django.contrib import admin

from inference.models import BenchmarkRun, DatasetAddition, InspectionFeedback, InspectionVerdict, ProductRun


class ProductRunInline(admin.TabularInline):
    model = ProductRun
    extra = 0
    fields = ("product", "status", "stage", "progress", "attempts", "worker", "heartbeat_at", "error")
    readonly_fields = fields
    can_delete = False


@admin.register(BenchmarkRun)
class BenchmarkRunAdmin(admin.ModelAdmin):
    list_display = ("id", "dataset", "model", "status", "progress", "created_by", "created_at", "finished_at")
    list_filter = ("status", "model", "dataset")
    readonly_fields = ("metrics", "celery_task_id", "heartbeat_at", "started_at", "finished_at", "artifacts_path")
    inlines = [ProductRunInline]


class ReadOnlyTrailAdmin(admin.ModelAdmin):
    """The audit trail is append-only: the admin lists and shows its rows, and changes none."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(InspectionVerdict)
class InspectionVerdictAdmin(ReadOnlyTrailAdmin):
    list_display = ("id", "name", "product", "deployment", "defective", "score", "image_threshold", "technique",
                    "package_sha256", "inspected_by_name", "inspected_at")
    list_filter = ("defective", "technique")


@admin.register(InspectionFeedback)
class InspectionFeedbackAdmin(ReadOnlyTrailAdmin):
    list_display = ("id", "verdict", "kind", "marked_by_name", "marked_at", "note")
    list_filter = ("kind",)


@admin.register(DatasetAddition)
class DatasetAdditionAdmin(ReadOnlyTrailAdmin):
    list_display = ("id", "verdict", "image_path", "split", "is_anomalous", "with_mask", "added_by_name", "added_at")
