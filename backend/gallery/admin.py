"""Django admin for the gallery: staff only; a superuser sees every owner, other staff their own data.

Every change goes through the same services as the REST API (merge, undo,
delete with purge, naming clusters), so the admin cannot bypass a rule.
"""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join

from backend.core.errors import ServiceError
from backend.core.storage import presigned_url

from . import clustering, merging, naming, services
from .models import Face, Identity, Merge, Template, UnknownCluster


def thumbnail(key: str | None, height: int = 64) -> str:
    url = presigned_url(key)
    return format_html('<img src="{}" height="{}" alt="face" loading="lazy">', url, height) if url else "-"


def thumbnails(keys, height: int = 48) -> str:
    return format_html_join(" ", '<img src="{}" height="{}" alt="face" loading="lazy">',
                            ((presigned_url(key), height) for key in keys if key)) or "-"


def crop_keys(faces) -> list[str]:
    return [face.crop_key for face in faces]


class StaffScopedAdmin(admin.ModelAdmin):
    """Staff may use it (no per-model permissions needed); non-superusers see only their own rows."""

    def _staff(self, request) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_module_permission(self, request):
        return self._staff(request)

    def has_view_permission(self, request, obj=None):
        return self._staff(request)

    def has_change_permission(self, request, obj=None):
        return self._staff(request)

    def has_delete_permission(self, request, obj=None):
        return self._staff(request)

    def has_add_permission(self, request):
        return False

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return queryset if request.user.is_superuser else queryset.filter(owner=request.user)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deletes go through the services
        return actions

    def _run(self, request, action, success: str) -> bool:
        try:
            action()
        except ServiceError as exc:
            self.message_user(request, f"{exc.code}: {exc.message}", messages.ERROR)
            return False
        self.message_user(request, success, messages.SUCCESS)
        return True


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class TemplateInline(ReadOnlyInline):
    model = Template
    fields = ["crop", "masked", "quality", "source_key", "created_at"]
    readonly_fields = fields

    @admin.display(description="crop")
    def crop(self, obj):
        return thumbnail(obj.crop_key)


class FaceInline(ReadOnlyInline):
    model = Face
    fk_name = "identity"
    fields = ["crop", "image", "similarity", "mask_state", "identity_locked", "manual", "det_score", "quality"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("image")

    @admin.display(description="crop")
    def crop(self, obj):
        return thumbnail(obj.crop_key)


@admin.register(Identity)
class IdentityAdmin(StaffScopedAdmin):
    list_display = ["name", "preview", "template_count", "face_count", "owner", "updated_at"]
    search_fields = ["name"]
    fields = ["name", "owner", "created_at", "updated_at"]
    readonly_fields = ["owner", "created_at", "updated_at"]
    inlines = [TemplateInline, FaceInline]
    actions = ["merge_selected", "delete_with_purge"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("owner").annotate(
            template_count=Count("templates", filter=Q(templates__masked=False), distinct=True), face_count=Count("faces", distinct=True))

    @admin.display(description="templates", ordering="template_count")
    def template_count(self, obj):
        return obj.template_count

    @admin.display(description="faces", ordering="face_count")
    def face_count(self, obj):
        return obj.face_count

    @admin.display(description="faces")
    def preview(self, obj):
        keys = crop_keys(obj.templates.filter(masked=False).order_by("-quality", "id")[:3]) or crop_keys(obj.faces.order_by("-quality", "id")[:3])
        return thumbnails(keys)

    def save_model(self, request, obj, form, change):
        services.rename_identity(identity=obj, name=obj.name)

    def delete_model(self, request, obj):
        services.delete_identity(identity=obj)

    def delete_queryset(self, request, queryset):
        for identity in queryset:
            services.delete_identity(identity=identity)

    @admin.action(description="Delete selected identities, purging templates and crops")
    def delete_with_purge(self, request, queryset):
        count = queryset.count()
        self.delete_queryset(request, queryset)
        self.message_user(request, f"deleted {count} identities; their templates and crops are purged", messages.SUCCESS)

    @admin.action(description="Merge selected identities into one")
    def merge_selected(self, request, queryset):
        identities = list(queryset.order_by("id"))
        if len(identities) < 2 or len({i.owner_id for i in identities}) != 1:
            self.message_user(request, "select two or more identities of one owner", messages.ERROR)
            return None
        if request.POST.get("apply"):
            target = next((i for i in identities if str(i.pk) == request.POST.get("target")), None)
            if target is None:
                self.message_user(request, "choose the identity to keep", messages.ERROR)
                return None
            for source in identities:
                if source.pk != target.pk:
                    self._run(request, lambda: merging.merge_identities(owner=target.owner, target_id=target.pk, source_id=source.pk),
                              f"merged {source.name} into {target.name} (undo under Merges)")
            return None
        return TemplateResponse(request, "admin/gallery/merge_identities.html", {
            **self.admin_site.each_context(request), "title": "Merge identities", "identities": identities,
            "opts": self.model._meta, "action": "merge_selected",
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
        })


@admin.register(Merge)
class MergeAdmin(StaffScopedAdmin):
    list_display = ["source_name", "source_id", "target", "templates_moved", "faces_changed", "created_at", "owner"]
    search_fields = ["source_name", "target__name"]
    actions = ["undo_selected"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="templates moved")
    def templates_moved(self, obj):
        return len(obj.template_ids)

    @admin.display(description="faces changed")
    def faces_changed(self, obj):
        return len(obj.face_states)

    @admin.action(description="Undo selected merges (newest first)")
    def undo_selected(self, request, queryset):
        for merge in queryset.order_by("-created_at", "-id"):
            self._run(request, lambda: merging.undo_merge(owner=merge.owner, merge_id=merge.pk),
                      f"restored {merge.source_name}")


class NameClusterForm(forms.Form):
    name = forms.CharField(max_length=255, required=False, help_text="a new identity")
    identity = forms.ModelChoiceField(queryset=Identity.objects.none(), required=False, help_text="or an existing one")

    def clean(self):
        data = super().clean()
        if bool(data.get("name", "").strip()) == bool(data.get("identity")):
            raise forms.ValidationError("give a new name or choose an existing identity, not both")
        return data


@admin.register(UnknownCluster)
class UnknownClusterAdmin(StaffScopedAdmin):
    """Unknown faces grouped by clustering.py; name a cluster to make it an identity."""

    list_display = ["__str__", "size", "samples", "owner", "updated_at"]
    fields = ["owner", "size", "all_faces", "created_at", "updated_at"]
    readonly_fields = fields
    actions = ["name_cluster"]

    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("owner").annotate(face_count=Count("faces")).filter(face_count__gte=2)

    def changelist_view(self, request, extra_context=None):
        clustering.cluster_pending(request.user.pk, limit=500)
        return super().changelist_view(request, extra_context)

    @admin.display(description="faces", ordering="face_count")
    def size(self, obj):
        return obj.face_count

    @admin.display(description="sample crops")
    def samples(self, obj):
        return thumbnails(crop_keys(clustering.sample_faces(obj)))

    @admin.display(description="faces")
    def all_faces(self, obj):
        return thumbnails(crop_keys(obj.faces.order_by("-quality", "id")[:200]), height=64)

    @admin.action(description="Name selected cluster (new identity, or add to an existing one)")
    def name_cluster(self, request, queryset):
        clusters = list(queryset)
        if len(clusters) != 1:
            self.message_user(request, "select exactly one cluster to name", messages.ERROR)
            return None
        cluster = clusters[0]
        form = NameClusterForm(request.POST if request.POST.get("apply") else None)
        form.fields["identity"].queryset = Identity.objects.filter(owner_id=cluster.owner_id)
        if form.is_bound and form.is_valid():
            name = form.cleaned_data["name"].strip() or None
            identity = form.cleaned_data["identity"]
            ok = self._run(request, lambda: naming.name_cluster(
                owner=cluster.owner, cluster_id=cluster.pk, name=name, identity_id=identity.pk if identity else None),
                f"cluster {cluster.pk} named {name or identity.name}")
            if ok:
                return None
        return TemplateResponse(request, "admin/gallery/name_cluster.html", {
            **self.admin_site.each_context(request), "title": f"Name {cluster}", "cluster": cluster, "form": form,
            "faces": thumbnails(crop_keys(cluster.faces.order_by("-quality", "id")[:50]), height=64),
            "opts": self.model._meta, "action": "name_cluster",
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
        })
