"""Listing an import source (S3 prefix, server folder) into a job's Image rows.

The request lists the first chunk itself, so a small import answers with its
whole total and a source with no images is refused at once. A larger source
is listed on in the background (task ``faceindex.list_source``), chunk by
chunk: each chunk's rows and the job's cursor (files listed, last S3 key)
commit together, and the chunk's images are queued as soon as it commits, so
workers index while the listing goes on. Nothing holds the job row while a
chunk is read from the source; the cursor is checked when the chunk is
written, so a second lister (a redelivered or re-sent task) notices it fell
behind and starts again from the cursor: no file is listed twice.

A listing task gives up its slot after ``LIST_TASK_SECONDS`` and sends itself
again, so no task comes near the time limit however big the source. A lister
that died is re-sent (with a new token, so a late redelivery of the old
message stops at once) by a restarting worker or the sweep: at once when no
message names the job, after ``listed_at`` grew old when only an unacked one
does (see ``stalled_listings``).
"""
from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from itertools import islice
from typing import Iterator

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backend.core import outages

from . import sources
from .models import Image, Job

log = logging.getLogger(__name__)

LIST_TASK_SECONDS = 60.0
LIVE = (Job.Status.PENDING, Job.Status.RUNNING)


class Lister:
    """Reads a source from a job's cursor, one chunk at a time (no database work)."""

    def __init__(self, source: sources.Source, job: Job):
        self.source = source
        self.cursor = (job.listed_files, job.listing_after)
        skip = job.listed_files if source.kind == "folder" else 0
        self._files: Iterator[sources.SourceFile] = sources.iter_source(source, after=job.listing_after, skip=skip)
        self._next = next(self._files, None)

    def take(self, size: int | None = None) -> tuple[list[sources.SourceFile], bool]:
        """The next chunk (FACEINDEX_IMPORT_LIST_CHUNK files), and whether more files follow it."""
        size = size or settings.FACEINDEX_IMPORT_LIST_CHUNK
        chunk = [self._next] if self._next is not None else []
        chunk += islice(self._files, max(0, size - len(chunk)))
        self._next = next(self._files, None)
        return chunk, self._next is not None

    def write(self, job: Job, chunk: list[sources.SourceFile], more: bool) -> list[int]:
        """Add the chunk to ``job`` (locked, or created in this transaction); returns the ids to queue.

        Moves the cursor past the chunk and, with the last chunk or at the
        file limit, ends the listing; the caller saves nothing else.
        """
        room = settings.FACEINDEX_IMPORT_MAX_FILES - job.listed_files
        if len(chunk) > room or (more and len(chunk) == room):
            chunk, more = chunk[:max(room, 0)], False
            job.listing_error = (f"source_too_large: more than {settings.FACEINDEX_IMPORT_MAX_FILES} files; "
                                 f"the first {settings.FACEINDEX_IMPORT_MAX_FILES} are indexed")
        rows = [_image_row(job, found) for found in chunk]
        Image.objects.bulk_create(rows)
        refused = sum(1 for row in rows if row.status == Image.Status.FAILED)
        job.total_images += len(rows)
        job.failed_images += refused
        job.listed_files += len(chunk)
        if chunk and self.source.kind == "s3":
            job.listing_after = chunk[-1].key
        job.listing = more
        job.listed_at = timezone.now()
        job.save(update_fields=["total_images", "failed_images", "listed_files", "listing_after", "listing",
                                "listed_at", "listing_error"])
        self.cursor = (job.listed_files, job.listing_after)
        return [row.pk for row in rows if row.status == Image.Status.PENDING]


def _image_row(job: Job, found: sources.SourceFile) -> Image:
    row = Image(owner_id=job.owner_id, job=job, object_key=found.key, source_bucket=found.bucket,
                source_path=found.path, size_bytes=found.size, original_name=found.name)
    if found.refused:
        code, _, reason = found.refused.partition(": ")
        row.status, row.error_code, row.error_message = Image.Status.FAILED, code, f"{found.name}: {reason}"
    return row


def continue_listing(job_id: int, token: str, *, seconds: float = LIST_TASK_SECONDS) -> bool:
    """List on for about ``seconds``; True when the job still has files to list (send the task again)."""
    from . import services

    job = Job.objects.get(pk=job_id)
    if not job.listing or job.status not in LIVE or job.listing_task != token:
        return False
    source = sources.source_for_job(job)
    lister = Lister(source, job)
    deadline = time.monotonic() + seconds
    while True:
        chunk, more = lister.take()
        with transaction.atomic():
            job = Job.objects.select_for_update().get(pk=job_id)
            if not job.listing or job.status not in LIVE or job.listing_task != token:
                return False
            if (job.listed_files, job.listing_after) != lister.cursor:
                log.info("job %s: another lister moved the cursor; going on from it", job_id)
                lister = Lister(source, job)
                continue
            ids = lister.write(job, chunk, more)
            transaction.on_commit(lambda ids=ids: services.enqueue_images(ids))
            if not job.listing:
                services.complete_if_done(job)
                return False
        if time.monotonic() > deadline:
            return True


def stalled_listings(min_age_s: float) -> list[int]:
    """Listing jobs whose task is lost, or taken by a worker but quiet for ``min_age_s``.

    A task waiting in the queue may sit behind many batches: that is not a
    stall. A task a worker took writes a chunk every second or so, so one
    that is unacked but quiet died with its worker; one named by no message
    at all was lost (popped into a dying worker's socket, or never sent
    because the sender crashed).
    """
    from .broker import broker_listing_jobs

    listing = dict(Job.objects.filter(listing=True, status__in=LIVE).values_list("id", "listed_at"))
    if not listing:
        return []
    waiting, unacked = broker_listing_jobs()
    cutoff = timezone.now() - timedelta(seconds=min_age_s)
    return sorted(job_id for job_id, listed_at in listing.items() if job_id not in waiting and (
        job_id not in unacked or listed_at is None or listed_at < cutoff))


def send_listing_task(job_id: int) -> None:
    """Send the job's listing task with a new token, superseding any earlier one."""
    from workers.celery_app import app

    token = uuid.uuid4().hex
    Job.objects.filter(pk=job_id).update(listing_task=token)
    try:
        app.send_task("faceindex.list_source", args=[job_id, token])
    except Exception as exc:
        if not outages.is_outage(exc):
            raise
        # No message names the job now: the workers' outbox sweep re-sends it
        # (resume_stalled_listings) once the broker answers.
        log.warning("broker unreachable: listing of job %s waits for the sweep (%s)", job_id, exc)
