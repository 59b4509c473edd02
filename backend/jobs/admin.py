"""Jobs in the Django admin: status, progress and per-image errors (read-only, staff only)."""
from __future__ import annotations

from django.contrib import admin

from backend.gallery.admin import ReadOnlyInline, StaffScopedAdmin

from .models import Image, Job


class ReadOnlyAdmin(StaffScopedAdmin):
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class FailedImageInline(ReadOnlyInline):
    model = Image
    verbose_name_plural = "failed images"
    fields = ["original_name", "error_code", "error_message", "attempts"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).filter(status=Image.Status.FAILED)


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ["id", "status", "total_images", "processed_images", "failed_images", "faces_found", "listing", "owner",
                    "created_at", "finished_at"]
    list_filter = ["status"]
    inlines = [FailedImageInline]


@admin.register(Image)
class ImageAdmin(ReadOnlyAdmin):
    list_display = ["id", "original_name", "job", "status", "error_code", "error_message", "attempts", "owner", "processed_at"]
    list_filter = ["status", "error_code"]
    search_fields = ["original_name", "error_message"]
    list_select_related = ["job", "owner"]
