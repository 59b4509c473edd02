from django.conf import settings
from django.db import models


class Job(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        COMPLETED = "completed"
        CANCELLED = "cancelled"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    # sha256 over the submitted content: the same key with a different body is a conflict.
    request_fingerprint = models.CharField(max_length=64, blank=True)
    options = models.JSONField(default=dict, blank=True)
    # Where the images came from: "upload" (multipart/zip), "s3" (s3://bucket/prefix)
    # or "folder" (a server-side path under FACEINDEX_IMPORT_ROOTS).
    source = models.CharField(max_length=16, default="upload")
    source_uri = models.CharField(max_length=2048, blank=True)
    # Folder imports: the allow-listed root the folder was checked against at
    # submission; the background listing keeps every file inside it.
    source_root = models.CharField(max_length=2048, blank=True)
    # An import source too large to list inside the request is listed in the
    # background (jobs/listing.py). ``listing`` stays True until the whole
    # source has Image rows; the job cannot complete before. The cursor
    # (files listed so far, the last S3 key) commits with each chunk's rows.
    listing = models.BooleanField(default=False)
    listed_files = models.PositiveIntegerField(default=0)
    listing_after = models.CharField(max_length=2048, blank=True)
    listed_at = models.DateTimeField(null=True, blank=True)
    # The token of the one listing task meant to run: a task carrying another
    # (superseded by a re-send after a crash) stops at once.
    listing_task = models.CharField(max_length=32, blank=True)
    # Why the listing stopped early (e.g. more files than FACEINDEX_IMPORT_MAX_FILES).
    listing_error = models.CharField(max_length=512, blank=True)
    # Completion webhook for this job; empty falls back to the owner's WebhookEndpoint.
    webhook_url = models.URLField(max_length=2048, blank=True)
    total_images = models.PositiveIntegerField(default=0)
    processed_images = models.PositiveIntegerField(default=0)
    failed_images = models.PositiveIntegerField(default=0)
    faces_found = models.PositiveIntegerField(default=0)
    # Images whose content was already indexed for this owner (counted in processed_images).
    linked_images = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="unique_job_idempotency_key_per_owner",
            )
        ]

    def __str__(self) -> str:
        return f"Job {self.pk} ({self.status})"

    @property
    def done_images(self) -> int:
        return self.processed_images + self.failed_images


class Image(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSING = "processing"
        DONE = "done"
        FAILED = "failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="images")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="images")
    object_key = models.CharField(max_length=1024)
    # Empty: our own bucket. Else an imported S3 source bucket (the object is
    # referenced, not copied). For folder imports the absolute file path.
    source_bucket = models.CharField(max_length=255, blank=True)
    source_path = models.CharField(max_length=4096, blank=True)
    # Known at upload time; for S3/folder imports filled in by the worker when it reads the bytes.
    sha256 = models.CharField(max_length=64, db_index=True, blank=True)
    size_bytes = models.BigIntegerField()
    original_name = models.CharField(max_length=1024, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    taken_at = models.DateTimeField(null=True, blank=True)
    gps_lat = models.FloatField(null=True, blank=True)
    gps_lon = models.FloatField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Dedup: the same content was already indexed for this owner; its faces
    # belong to that image and are not copied.
    linked_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="links")
    # Per-stage seconds (decode, detect_embed, match, write; the batch's shared
    # detect/embed time is split evenly over its images).
    timings = models.JSONField(default=dict, blank=True)
    # When the last message for this image was sent: the sweep re-sends old ones lost by the broker.
    queued_at = models.DateTimeField(null=True, blank=True)
    # Celery node that holds the image while PROCESSING: a restarted node
    # re-queues what it held when it died (see jobs.services.requeue_orphans).
    worker = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["job", "status"]),
            models.Index(fields=["owner", "sha256"]),
            # The outbox (services.send_outbox): pending images never sent to the broker.
            models.Index(fields=["created_at"], name="jobs_image_outbox",
                         condition=models.Q(status="pending", queued_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return self.original_name or self.object_key


class WebhookEndpoint(models.Model):
    """The owner's default completion webhook and the secret that signs every delivery."""

    owner = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook")
    url = models.URLField(max_length=2048, blank=True)
    secret = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)


class WebhookDelivery(models.Model):
    """One webhook event and every attempt to deliver it (the delivery log)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_deliveries")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="webhook_deliveries")
    event = models.CharField(max_length=64)
    url = models.URLField(max_length=2048)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.JSONField(default=list, blank=True)  # [{at, status_code, error, seconds}]
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["job", "event"], name="unique_webhook_event_per_job")]
