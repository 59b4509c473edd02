"""Sending work to the workers: image batches and import-listing tasks.

Messages go by task name through Celery's current app (backend/config/celery.py
creates it when Django loads), so no module here imports a tasks module: the
tasks import the services, never the other way round.
"""
from __future__ import annotations

import uuid
from typing import Iterable, Iterator

from celery import current_app
from django.conf import settings
from django.utils import timezone

from .models import Image, Job

# Rows per bulk insert / per enqueue round when a job holds very many images.
IMPORT_CHUNK = 1000

PROCESS_BATCH_TASK = "faceindex.process_batch"
LIST_SOURCE_TASK = "faceindex.list_source"


def batches(ids: list[int], size: int | None = None) -> Iterator[list[int]]:
    size = max(1, size or settings.FACEINDEX_BATCH_SIZE)
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def enqueue_images(image_ids: Iterable[int]) -> None:
    """Send the images to the workers in batches of FACEINDEX_BATCH_SIZE."""
    ids = list(image_ids)
    if not ids:
        return
    Image.objects.filter(id__in=ids).update(queued_at=timezone.now())  # before the sends: the sweep reads it
    for batch in batches(ids):
        current_app.send_task(PROCESS_BATCH_TASK, args=[batch])


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
    current_app.send_task(LIST_SOURCE_TASK, args=[job_id, token])
