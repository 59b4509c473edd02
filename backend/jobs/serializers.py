from django.utils import timezone
from rest_framework import serializers

from .models import Image, Job, WebhookDelivery, WebhookEndpoint


def job_rate(job: Job) -> tuple[float | None, float | None]:
    """(images per second since the job started, seconds left at that rate)."""
    if not job.started_at or not job.done_images:
        return None, None
    elapsed = ((job.finished_at or timezone.now()) - job.started_at).total_seconds()
    if elapsed <= 0:
        return None, None
    rate = job.done_images / elapsed
    left = max(job.total_images - job.done_images, 0)
    if job.listing:  # the total is not known yet
        return round(rate, 3), None
    eta = 0.0 if job.status != Job.Status.RUNNING else left / rate
    return round(rate, 3), round(eta, 1)


class JobSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    images_per_second = serializers.SerializerMethodField()
    eta_seconds = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id", "status", "source", "source_uri", "total_images", "processed_images", "failed_images",
            "linked_images", "faces_found", "progress", "images_per_second", "eta_seconds", "listing",
            "listing_error", "options",
            "webhook_url", "idempotency_key", "created_at", "started_at", "finished_at",
        ]

    def get_progress(self, obj) -> float:
        return round(obj.done_images / obj.total_images, 4) if obj.total_images else 1.0

    def get_images_per_second(self, obj) -> float | None:
        return job_rate(obj)[0]

    def get_eta_seconds(self, obj) -> float | None:
        return job_rate(obj)[1]


class WebhookEndpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = ["url", "secret", "updated_at"]
        read_only_fields = ["secret", "updated_at"]


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = ["id", "job_id", "event", "url", "status", "attempts", "payload", "created_at", "delivered_at"]


class ImageSerializer(serializers.ModelSerializer):
    error = serializers.SerializerMethodField()
    faces = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = [
            "id", "job_id", "original_name", "sha256", "size_bytes", "status", "error", "width", "height",
            "taken_at", "gps_lat", "gps_lon", "faces", "attempts", "linked_from_id", "timings", "processed_at",
        ]

    def get_error(self, obj) -> dict | None:
        if obj.status != Image.Status.FAILED:
            return None
        return {"code": obj.error_code, "message": obj.error_message}

    def get_faces(self, obj) -> int:
        return getattr(obj, "face_count", None) if hasattr(obj, "face_count") else obj.faces.count()
