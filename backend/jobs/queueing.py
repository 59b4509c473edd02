"""Sending work to the workers: image batches and import-listing tasks.

Messages go by task name through Celery's current app (backend/config/celery.py
creates it when Django loads), so no module here imports a tasks module: the
tasks import the services, never the other way round.
"""
from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Iterable, Iterator

from celery import current_app
from django.conf import settings
from django.utils import timezone

from backend.core import outages

from . import routing
from .models import Image, Job

log = logging.getLogger(__name__)

# Rows per bulk insert / per enqueue round when a job holds very many images.
IMPORT_CHUNK = 1000

PROCESS_BATCH_TASK = "faceindex.process_batch"
LIST_SOURCE_TASK = "faceindex.list_source"


def batches(ids: list[int], size: int | None = None) -> Iterator[list[int]]:
    size = max(1, size or settings.FACEINDEX_BATCH_SIZE)
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def enqueue_images(image_ids: Iterable[int]) -> int:
    """Send the images to the workers; returns how many were sent.

    Batches go to the GPU queue while a GPU worker lives, else to the CPU
    queue, each in its own batch size (routing).

    With the broker unreachable the images stay saved with ``queued_at`` unset:
    that is the outbox, which the outbox task (sent by celery beat) sends once
    the broker answers again (send_outbox). The caller's request still succeeds.
    """
    ids = list(image_ids)
    if not ids:
        return 0
    Image.objects.filter(id__in=ids).update(queued_at=timezone.now())  # before the sends: the sweep reads it
    sent = 0
    try:
        with current_app.connection_for_read() as connection:
            queue, size = routing.route_for_images(connection.default_channel.client)
        for batch in batches(ids, size):
            current_app.send_task(PROCESS_BATCH_TASK, args=[batch], **({"queue": queue} if queue else {}))
            sent += len(batch)
    except Exception as exc:
        if not outages.is_outage(exc):
            raise
        unsent = ids[sent:]
        Image.objects.filter(id__in=unsent, status=Image.Status.PENDING).update(queued_at=None)
        log.warning("broker unreachable (%s): %d images wait in the outbox", exc, len(unsent))
    return sent


def send_outbox(*, min_age_s: float | None = None) -> int:
    """Send PENDING images of live jobs that were never queued (their send failed).

    Cheap enough to run every few seconds: one indexed query on the database,
    nothing read from the broker. ``min_age_s`` leaves a just-committed job to
    its own on-commit send (a second send would only cost a skip).
    """
    min_age_s = settings.FACEINDEX_OUTBOX_MIN_AGE_S if min_age_s is None else min_age_s
    cutoff = timezone.now() - timedelta(seconds=min_age_s)
    ids = list(
        Image.objects.filter(status=Image.Status.PENDING, queued_at__isnull=True, created_at__lt=cutoff,
                             job__status__in=(Job.Status.PENDING, Job.Status.RUNNING))
        .order_by("id").values_list("id", flat=True)[:IMPORT_CHUNK * 10]
    )
    if not ids:
        return 0
    log.warning("outbox: sending %d images whose first send failed", len(ids))
    sent = 0
    for start in range(0, len(ids), IMPORT_CHUNK):
        sent += enqueue_images(ids[start:start + IMPORT_CHUNK])
    return sent


def enqueue_job(job_id: int) -> int:
    """Queue every PENDING image of a job, in chunks (a job may hold millions)."""
    ids = list(Image.objects.filter(job_id=job_id, status=Image.Status.PENDING).order_by("id").values_list("id", flat=True))
    for start in range(0, len(ids), IMPORT_CHUNK):
        enqueue_images(ids[start:start + IMPORT_CHUNK])
    return len(ids)


def send_listing_task(job_id: int) -> None:
    """Send the job's listing task with a new token, superseding any earlier one."""
    token = uuid.uuid4().hex
    Job.objects.filter(pk=job_id).update(listing_task=token)
    try:
        current_app.send_task(LIST_SOURCE_TASK, args=[job_id, token])
    except Exception as exc:
        if not outages.is_outage(exc):
            raise
        # No message names the job now: the outbox task re-sends it
        # (resume_stalled_listings) once the broker answers.
        log.warning("broker unreachable: listing of job %s waits for the outbox (%s)", job_id, exc)
