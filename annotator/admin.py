from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from annotator.models import Dataset, Image, Label, LabelHistory, Product, User


@admin.register(User)
class DefectBenchUserAdmin(UserAdmin):
    list_display = ("username", "email", "role", "is_active", "is_staff")
    list_filter = ("role", "is_active", "is_staff")
    fieldsets = UserAdmin.fieldsets + (("DefectBench", {"fields": ("role",)}),)
    add_fieldsets = UserAdmin.add_fieldsets + (("DefectBench", {"fields": ("role",)}),)


class ProductInline(admin.TabularInline):
    model = Product
    extra = 0


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "layout", "root", "label_overlap", "created_at")
    inlines = [ProductInline]


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
