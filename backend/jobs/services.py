"""Jobs: accept uploads into object storage, queue them, and track progress."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from backend.core import storage
from backend.core.errors import Conflict, ServiceError
from backend.core.uploads import Upload

from . import broker, completion, dedup, listing, queueing, sources
from .completion import complete_if_done, finish_image
from .ingest import iter_upload
from .models import Image, Job
from .originals import original_key
from .queueing import IMPORT_CHUNK, enqueue_images, enqueue_job  # noqa: F401 (services.* callers)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredBlob:
    name: str
    sha256: str
    size: int
    key: str


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


def _existing_for_key_or_none(owner, idempotency_key: str | None, request_fingerprint: str) -> Job | None:
    return _existing_for_key(owner, idempotency_key, request_fingerprint) if idempotency_key else None


def _create_job_once(owner, idempotency_key: str | None, request_fingerprint: str, create) -> tuple[Job, bool]:
    """Run ``create()`` in a transaction unless this key already made a job."""
    existing = _existing_for_key_or_none(owner, idempotency_key, request_fingerprint)
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            job = create()
    except IntegrityError:
        # A concurrent request with the same key won the race.
        existing = _existing_for_key_or_none(owner, idempotency_key, request_fingerprint)
        if existing is None:
            raise
        return existing, False
    return job, True


def submit_job(*, owner, uploads: Iterable[Upload], idempotency_key: str | None = None, options: dict | None = None,
               webhook_url: str = "") -> tuple[Job, bool]:
    """Create a job for the uploads; returns (job, created).

    With an idempotency key, the same key and the same content return the
    first job instead of creating another. Content this owner already had
    indexed is linked to the earlier image instead of being processed again.
    """
    options = dict(options or {})
    stored = store_uploads(owner.pk, uploads)
    request_fingerprint = fingerprint(stored, options)

    def create() -> Job:
        job = Job.objects.create(owner=owner, idempotency_key=idempotency_key or None,
                                 request_fingerprint=request_fingerprint, options=options,
                                 webhook_url=webhook_url or "", total_images=len(stored))
        # A job asking for age/sex links in the worker instead, which first fills
        # them in where the earlier indexing skipped them.
        indexed = {} if options.get("attributes") else dedup.indexed_images(owner.pk, {b.sha256 for b in stored})
        rows = [Image(owner=owner, job=job, object_key=b.key, sha256=b.sha256, size_bytes=b.size, original_name=b.name)
                for b in stored]
        new_faces = 0
        for row in rows:
            if row.sha256 in indexed:
                canonical = indexed[row.sha256]
                new_faces += 0 if any(r.linked_from_id == canonical.image.pk for r in rows) else canonical.faces
                dedup.mark_linked(row, canonical)
        Image.objects.bulk_create(rows)
        linked = [row for row in rows if row.linked_from_id]
        if linked:
            record_linked(job, linked, new_faces)
        job_id = job.pk
        transaction.on_commit(lambda: enqueue_job(job_id))
        return job

    return _create_job_once(owner, idempotency_key, request_fingerprint, create)


def submit_import(*, owner, source: str, idempotency_key: str | None = None, options: dict | None = None,
                  webhook_url: str = "") -> tuple[Job, bool]:
    """Create a job over an S3 prefix or an allow-listed server folder.

    The files become Image rows that point at them; nothing is read until a
    worker processes an image. The first chunk is listed here, the rest in
    the background (jobs/listing.py), so a huge source answers at once.
    """
    options = dict(options or {})
    parsed = sources.parse_source(source)
    request_fingerprint = hashlib.sha256(f"{parsed.uri}\n{sorted(options.items())!r}".encode()).hexdigest()

    def create() -> Job:
        job = Job.objects.create(owner=owner, idempotency_key=idempotency_key or None,
                                 request_fingerprint=request_fingerprint, options=options, source=parsed.kind,
                                 source_uri=parsed.uri, source_root=str(parsed.root or ""),
                                 webhook_url=webhook_url or "", listing=True)
        lister = listing.Lister(parsed, job)
        chunk, more = lister.take()
        if not chunk:
            raise ServiceError("no_files", f"no image files under {parsed.uri}", field="source")
        ids = lister.write(job, chunk, more)
        job_id = job.pk
        transaction.on_commit(lambda: enqueue_images(ids))
        if job.listing:
            transaction.on_commit(lambda: queueing.send_listing_task(job_id))
        else:
            complete_if_done(job)  # every listed file was refused
        return job

    return _create_job_once(owner, idempotency_key, request_fingerprint, create)


def record_linked(job: Job, images: list[Image], new_faces: int) -> None:
    """Count linked images as processed; their faces are the canonical images' (counted once per job)."""
    job.processed_images += len(images)
    job.linked_images += len(images)
    job.faces_found += new_faces
    job.save(update_fields=["processed_images", "linked_images", "faces_found"])
    complete_if_done(job)


def requeue_orphans(*, worker_name: str) -> int:
    """Re-queue the work a killed predecessor of this worker left behind.

    Called when a worker starts: a node name runs once at a time, so anything
    still PROCESSING under this name was abandoned by a killed predecessor.
    A predecessor killed just after taking a message but before claiming its
    images leaves PENDING images whose message is either unacked (Redis would
    hand it out again only after the visibility timeout, minutes) or gone
    altogether (BRPOP had popped it into the dead worker's socket before
    kombu recorded it as unacked). So every PENDING image of a live job that
    no waiting message names is re-sent now too. An image a live worker is
    about to claim may be sent twice that way: claiming skips finished images
    and writing checks the claim, so the copy costs a skip. The broker's own
    redelivery and the periodic sweep are the backstop for workers that never
    come back under the same name.
    """
    held = list(
        Image.objects.filter(status=Image.Status.PROCESSING, worker=worker_name).values_list("id", flat=True)
    )
    Image.objects.filter(id__in=held, status=Image.Status.PROCESSING).update(status=Image.Status.PENDING, worker="")
    pending = set(Image.objects.filter(status=Image.Status.PENDING, job__status__in=(Job.Status.PENDING, Job.Status.RUNNING))
                  .values_list("id", flat=True))
    stranded = pending - broker.waiting_image_ids() - set(held)
    ids = sorted(set(held) | stranded)
    if ids:
        log.warning("re-queueing %d images abandoned by %s (%d claimed, %d unclaimed with no waiting message)",
                    len(ids), worker_name, len(held), len(stranded))
        enqueue_images(ids)
    resume_stalled_listings(min_age_s=LISTING_QUIET_AT_RESTART_S)
    return len(ids)


# A live lister writes a chunk every second or so: quiet this long at a worker's
# restart, its lister most likely died with the predecessor. A wrong guess
# costs a restart of the listing: the re-sent task's new token makes the old
# lister stop at its next chunk, and the new one goes on from the cursor.
LISTING_QUIET_AT_RESTART_S = 30


def resume_stalled_listings(*, min_age_s: float) -> int:
    """Send the listing task again for jobs whose background listing stopped moving."""
    stalled = listing.stalled_listings(min_age_s)
    for job_id in stalled:
        log.warning("job %s: listing quiet for %.0f s, sending its task again", job_id, min_age_s)
        queueing.send_listing_task(job_id)
    return len(stalled)


def claim_images(image_ids: list[int], *, worker_name: str) -> list[Image]:
    """Mark a batch PROCESSING by this worker, all at once; returns those needing work.

    Claiming the whole batch up front means a killed worker's restart finds
    every image of its batch (requeue_orphans), not only the one it was on.
    """
    with transaction.atomic():
        images = list(
            Image.objects.select_for_update(of=("self",)).select_related("job")
            .filter(pk__in=image_ids).exclude(status__in=(Image.Status.DONE, Image.Status.FAILED))
            .exclude(job__status=Job.Status.CANCELLED).order_by("id")
        )
        if not images:
            return []
        now = timezone.now()
        for image in images:
            image.status = Image.Status.PROCESSING
            image.worker = worker_name
            image.attempts += 1
            image.started_at = now
        Image.objects.bulk_update(images, ["status", "worker", "attempts", "started_at"])
        Job.objects.filter(pk__in={i.job_id for i in images}, status=Job.Status.PENDING).update(
            status=Job.Status.RUNNING, started_at=now)
        return images



def cancel_job(job: Job) -> Job:
    """Stop scheduling: queued images are skipped by the workers; finished work stays."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.status in (Job.Status.PENDING, Job.Status.RUNNING):
            job.status = Job.Status.CANCELLED
            job.finished_at = timezone.now()
            job.listing = False  # a background listing stops at its next chunk
            job.save(update_fields=["status", "finished_at", "listing"])
            completion.notify(job)
    return job


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


def release_images(image_ids: list[int]) -> None:
    """Put PROCESSING images back to PENDING before a retry re-claims them."""
    Image.objects.filter(pk__in=image_ids, status=Image.Status.PROCESSING).update(status=Image.Status.PENDING, worker="")


def sweep_lost_images(*, min_age_s: float | None = None, stale_processing_s: float | None = None,
                      queued_ids: set[int] | None = None) -> int:
    """Re-send PENDING images of live jobs whose messages the broker lost.

    An image counts as lost when it was queued more than ``min_age_s`` ago
    and no message in the broker (queue or unacked) names it; a PROCESSING
    image older than ``stale_processing_s`` belongs to a worker that died and
    never came back under its name, and is reset first. Processing is
    idempotent, so a message that was only slow, not lost, costs a skip.
    """
    now = timezone.now()
    min_age_s = settings.FACEINDEX_SWEEP_MIN_AGE_S if min_age_s is None else min_age_s
    stale_processing_s = settings.FACEINDEX_SWEEP_STALE_PROCESSING_S if stale_processing_s is None else stale_processing_s
    live = Image.objects.filter(job__status__in=(Job.Status.PENDING, Job.Status.RUNNING))
    stale = live.filter(status=Image.Status.PROCESSING, started_at__lt=now - timedelta(seconds=stale_processing_s))
    reset = stale.update(status=Image.Status.PENDING, worker="", queued_at=None)
    candidates = list(
        live.filter(status=Image.Status.PENDING)
        .filter(models.Q(queued_at__isnull=True) | models.Q(queued_at__lt=now - timedelta(seconds=min_age_s)))
        .order_by("id").values_list("id", flat=True)
    )
    if not candidates:
        return 0
    if queued_ids is None:
        queued_ids = broker.queued_image_ids()
    lost = [i for i in candidates if i not in queued_ids]
    if lost:
        log.warning("sweep: re-queueing %d images with no message in the broker (%d stale PROCESSING reset)",
                    len(lost), reset)
        for start in range(0, len(lost), IMPORT_CHUNK):
            enqueue_images(lost[start:start + IMPORT_CHUNK])
    return len(lost)
