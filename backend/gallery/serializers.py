from rest_framework import serializers

from backend.core.storage import presigned_url

from .models import Face, Identity


class IdentitySerializer(serializers.ModelSerializer):
    templates = serializers.SerializerMethodField()
    faces = serializers.SerializerMethodField()

    class Meta:
        model = Identity
        fields = ["id", "name", "templates", "faces", "created_at", "updated_at"]

    def get_templates(self, obj) -> int:
        return getattr(obj, "template_count", None) if hasattr(obj, "template_count") else obj.templates.count()

    def get_faces(self, obj) -> int:
        return getattr(obj, "face_count", None) if hasattr(obj, "face_count") else obj.faces.count()


class IdentityInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255)


class FaceSerializer(serializers.ModelSerializer):
    box = serializers.SerializerMethodField()
    identity = serializers.SerializerMethodField()
    crop_url = serializers.SerializerMethodField()
    image_name = serializers.CharField(source="image.original_name", read_only=True)
    job_id = serializers.IntegerField(source="image.job_id", read_only=True)

    class Meta:
        model = Face
        fields = [
            "id", "image_id", "image_name", "job_id", "ordinal", "box", "landmarks", "det_score",
            "quality", "identity", "similarity", "crop_url",
        ]

    def get_box(self, obj) -> list[float]:
        return obj.box

    def get_identity(self, obj) -> dict | None:
        if obj.identity_id is None:
            return None
        return {"id": obj.identity_id, "name": obj.identity.name}

    def get_crop_url(self, obj) -> str | None:
        return presigned_url(obj.crop_key)
