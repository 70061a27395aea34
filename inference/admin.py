from django.contrib import admin

from inference.models import BenchmarkRun, ProductRun


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
