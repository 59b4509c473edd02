from rest_framework import serializers

from backend.core.storage import presigned_url

from .clustering import sample_faces
from .matching import face_outcome
from .models import Template, Face, Identity


class IdentitySerializer(serializers.ModelSerializer):
    templates = serializers.SerializerMethodField()
    faces = serializers.SerializerMethodField()

    class Meta:
        model = Identity
        fields = ["id", "name", "templates", "faces", "created_at", "updated_at"]

    def get_templates(self, obj) -> int:
        return getattr(obj, "template_count", None) if hasattr(obj, "template_count") else obj.templates.filter(masked=False).count()

    def get_faces(self, obj) -> int:
        return getattr(obj, "face_count", None) if hasattr(obj, "face_count") else obj.faces.count()


class IdentityInputSerializer(serializers.Serializer):
    name = serializers.CharField(min_length=1, max_length=255)


class FaceSerializer(serializers.ModelSerializer):
    box = serializers.SerializerMethodField()
    identity = serializers.SerializerMethodField()
    crop_url = serializers.SerializerMethodField()
    image_name = serializers.CharField(source="image.original_name", read_only=True)
    job_id = serializers.IntegerField(source="image.job_id", read_only=True)
    mask = serializers.SerializerMethodField()
    attributes = serializers.SerializerMethodField()
    outcome = serializers.SerializerMethodField()

    class Meta:
        model = Face
        fields = [
            "id", "image_id", "image_name", "job_id", "ordinal", "box", "landmarks", "det_score",
            "quality", "identity", "similarity", "outcome", "crop_url", "mask", "attributes",
        ]

    def get_outcome(self, obj) -> str:
        """named, unknown, or low_quality: unknown because the face is too small or blurred to name."""
        return face_outcome(obj.identity_id, obj.quality)

    def get_mask(self, obj) -> dict | None:
        if not obj.mask_state:
            return None
        return {"state": obj.mask_state, "score": obj.mask_score}

    def get_attributes(self, obj) -> dict | None:
        """Age and sex, present only for faces of jobs that asked for them."""
        if obj.age is None and not obj.sex:
            return None
        return {"age": obj.age, "sex": obj.sex, "sex_score": obj.sex_score}

    def get_box(self, obj) -> list[float]:
        return obj.box

    def get_identity(self, obj) -> dict | None:
        if obj.identity_id is None:
            return None
        return {"id": obj.identity_id, "name": obj.identity.name}

    def get_crop_url(self, obj) -> str | None:
        return presigned_url(obj.crop_key)


class TemplateSerializer(serializers.ModelSerializer):
    """One template: an enrolled photo (source sha256:...) or a confirmed face (source_face_id)."""

    crop_url = serializers.SerializerMethodField()

    class Meta:
        model = Template
        fields = ["id", "identity_id", "quality", "source_key", "source_face_id", "crop_url", "created_at"]

    def get_crop_url(self, obj) -> str | None:
        return presigned_url(obj.crop_key) if obj.crop_key else None


class FaceIdsSerializer(serializers.Serializer):
    face_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), allow_empty=False)


class OptionalIdentitySerializer(serializers.Serializer):
    identity_id = serializers.IntegerField(min_value=1, allow_null=True, required=False)


class AssignInputSerializer(OptionalIdentitySerializer):
    template = serializers.BooleanField(default=False, help_text="also make the face one of the identity's templates")


class MergeInputSerializer(serializers.Serializer):
    source_id = serializers.IntegerField(min_value=1)


class MergeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    target = serializers.SerializerMethodField()
    source = serializers.SerializerMethodField()
    templates_moved = serializers.SerializerMethodField()
    faces_changed = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_target(self, obj) -> dict:
        return {"id": obj.target_id, "name": obj.target.name}

    def get_source(self, obj) -> dict:
        return {"id": obj.source_id, "name": obj.source_name}

    def get_templates_moved(self, obj) -> int:
        # Enrolled faces, not counting their masked-probe companions.
        return Template.objects.filter(pk__in=obj.template_ids, masked=False).count()

    def get_faces_changed(self, obj) -> int:
        return len(obj.face_states)


class TagFaceInputSerializer(serializers.Serializer):
    box = serializers.ListField(child=serializers.FloatField(), min_length=4, max_length=4)
    identity_id = serializers.IntegerField(min_value=1, required=False, allow_null=True)


class NameClusterInputSerializer(serializers.Serializer):
    name = serializers.CharField(min_length=1, max_length=255, required=False)
    identity_id = serializers.IntegerField(min_value=1, required=False)


class ClusterSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    size = serializers.IntegerField()
    samples = serializers.SerializerMethodField()
    updated_at = serializers.DateTimeField()

    def get_samples(self, obj) -> list[dict]:
        return [{"face_id": f.pk, "image_id": f.image_id, "crop_url": presigned_url(f.crop_key)} for f in sample_faces(obj)]


class EnrollmentSerializer(serializers.Serializer):
    """A background enrollment and its progress."""

    id = serializers.IntegerField()
    identity_id = serializers.IntegerField()
    status = serializers.CharField()
    total_files = serializers.SerializerMethodField()
    processed_files = serializers.SerializerMethodField()
    enrolled = serializers.IntegerField()
    results = serializers.ListField(child=serializers.DictField())
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_total_files(self, enrollment) -> int:
        return len(enrollment.files)

    def get_processed_files(self, enrollment) -> int:
        return len(enrollment.results)
