from rest_framework import serializers

from .models import Image, Job


class JobSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id", "status", "total_images", "processed_images", "failed_images", "faces_found",
            "progress", "options", "idempotency_key", "created_at", "started_at", "finished_at",
        ]

    def get_progress(self, obj) -> float:
        return round(obj.done_images / obj.total_images, 4) if obj.total_images else 1.0


class ImageSerializer(serializers.ModelSerializer):
    error = serializers.SerializerMethodField()
    faces = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = [
            "id", "job_id", "original_name", "sha256", "size_bytes", "status", "error", "width", "height",
            "taken_at", "faces", "attempts", "processed_at",
        ]

    def get_error(self, obj) -> dict | None:
        if obj.status != Image.Status.FAILED:
            return None
        return {"code": obj.error_code, "message": obj.error_message}

    def get_faces(self, obj) -> int:
        return getattr(obj, "face_count", None) if hasattr(obj, "face_count") else obj.faces.count()
