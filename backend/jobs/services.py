"""Jobs: accept uploads into object storage, queue them, and track progress."""
from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from typing import BinaryIO, Iterable

from django.db import IntegrityError, transaction
from django.utils import timezone

from backend.core import storage
from backend.core.errors import Conflict, ServiceError

from .ingest import Blob, iter_upload
from .models import Image, Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    name: str
    fileobj: BinaryIO
    size: int | None = None

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> "Upload":
        return cls(name, io.BytesIO(data), len(data))


@dataclass(frozen=True)
class StoredBlob:
    name: str
    sha256: str
    size: int
    key: str


def original_key(owner_id: int, blob: Blob, when=None) -> str:
    when = when or timezone.now()
    return f"{owner_id}/{when:%Y/%m/%d}/{blob.sha256}{blob.extension}"


def store_uploads(owner_id: int, uploads: Iterable[Upload]) -> list[StoredBlob]:
    """Write every file (zip members expanded) to object storage.

    Keys are content-addressed, so storing the same bytes twice is harmless;
    nothing reaches the database until every upload was read successfully.
    """
    storage.ensure_bucket()
    stored: list[StoredBlob] = []
    for upload in uploads:
        for blob in iter_upload(upload.name, upload.fileobj, upload.size):
            key = original_key(owner_id, blob)
            storage.put_bytes(key, blob.data)
            stored.append(StoredBlob(blob.name, blob.sha256, len(blob.data), key))
    if not stored:
        raise ServiceError("no_files", "the request contained no files", field="files")
    return stored


def fingerprint(stored: list[StoredBlob], options: dict) -> str:
    digest = hashlib.sha256()
    for blob in stored:
        digest.update(f"{blob.name}\0{blob.sha256}\n".encode())
    digest.update(repr(sorted(options.items())).encode())
    return digest.hexdigest()


def _existing_for_key(owner, idempotency_key: str, request_fingerprint: str) -> Job | None:
    job = Job.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
    if job is not None and job.request_fingerprint != request_fingerprint:
        raise Conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request body",
            field="Idempotency-Key",
        )
    return job


def submit_job(*, owner, uploads: Iterable[Upload], idempotency_key: str | None = None, options: dict | None = None) -> tuple[Job, bool]:
    """Create a job for the uploads; returns (job, created).

    With an idempotency key, the same key and the same content return the
    first job instead of creating another.
    """
    options = dict(options or {})
    stored = store_uploads(owner.pk, uploads)
    request_fingerprint = fingerprint(stored, options)
    if idempotency_key:
        existing = _existing_for_key(owner, idempotency_key, request_fingerprint)
        if existing is not None:
            return existing, False
    try:
        with transaction.atomic():
            job = Job.objects.create(
                owner=owner,
                idempotency_key=idempotency_key or None,
                request_fingerprint=request_fingerprint,
                options=options,
                total_images=len(stored),
            )
            images = Image.objects.bulk_create(
                Image(owner=owner, job=job, object_key=b.key, sha256=b.sha256, size_bytes=b.size, original_name=b.name)
                for b in stored
            )
            image_ids = [image.pk for image in images]
            transaction.on_commit(lambda: enqueue_images(image_ids))
    except IntegrityError:
        # A concurrent request with the same key won the race.
        existing = _existing_for_key(owner, idempotency_key, request_fingerprint) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    return job, True


def enqueue_images(image_ids: Iterable[int]) -> None:
    from workers.celery_app import app

    for image_id in image_ids:
        app.send_task("faceindex.process_image", args=[image_id])


def requeue_orphans(*, worker_name: str) -> int:
    """Re-queue images a worker of this name held when it died.

    Called when a worker starts: a node name runs once at a time, so anything
    still PROCESSING under this name was abandoned by a killed predecessor.
    The broker's own redelivery (acks_late, visibility timeout) is the backstop
    for workers that never come back under the same name.
    """
    ids = list(
        Image.objects.filter(status=Image.Status.PROCESSING, worker=worker_name).values_list("id", flat=True)
    )
    Image.objects.filter(id__in=ids, status=Image.Status.PROCESSING).update(status=Image.Status.PENDING, worker="")
    if ids:
        log.warning("re-queueing %d images abandoned by %s", len(ids), worker_name)
        enqueue_images(ids)
    return len(ids)


def claim_image(image_id: int, *, worker_name: str) -> Image | None:
    """Mark an image PROCESSING by this worker; None if it needs no work."""
    with transaction.atomic():
        image = Image.objects.select_for_update().select_related("job").filter(pk=image_id).first()
        if image is None or image.status in (Image.Status.DONE, Image.Status.FAILED):
            return None
        if image.job.status == Job.Status.CANCELLED:
            return None
        now = timezone.now()
        image.status = Image.Status.PROCESSING
        image.worker = worker_name
        image.attempts += 1
        image.started_at = now
        image.save(update_fields=["status", "worker", "attempts", "started_at"])
        if image.job.status == Job.Status.PENDING:
            Job.objects.filter(pk=image.job_id, status=Job.Status.PENDING).update(status=Job.Status.RUNNING, started_at=now)
        return image


def finish_image(image: Image, *, failed: bool, faces_found: int = 0) -> None:
    """Count a finished image once, and complete the job with its last image.

    Runs inside the caller's transaction together with the face rows, so the
    counters and the faces can never disagree.
    """
    job = Job.objects.select_for_update().get(pk=image.job_id)
    if failed:
        job.failed_images += 1
    else:
        job.processed_images += 1
        job.faces_found += faces_found
    job.save(update_fields=["failed_images", "processed_images", "faces_found"])
    if job.done_images >= job.total_images and job.status in (Job.Status.PENDING, Job.Status.RUNNING):
        job.status = Job.Status.COMPLETED
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "finished_at"])


def fail_image(image_id: int, *, code: str, message: str) -> None:
    with transaction.atomic():
        image = Image.objects.select_for_update().get(pk=image_id)
        if image.status in (Image.Status.DONE, Image.Status.FAILED):
            return
        image.status = Image.Status.FAILED
        image.error_code = code
        image.error_message = message[:2000]
        image.processed_at = timezone.now()
        image.worker = ""
        image.save(update_fields=["status", "error_code", "error_message", "processed_at", "worker"])
        finish_image(image, failed=True)


def release_image(image_id: int) -> None:
    """Put a PROCESSING image back to PENDING before a retry re-claims it."""
    Image.objects.filter(pk=image_id, status=Image.Status.PROCESSING).update(status=Image.Status.PENDING, worker="")
