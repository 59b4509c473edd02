"""Thin Celery tasks of the jobs app: each calls one service.

Services send these by name (jobs/queueing.py, through Celery's current
app), so this module imports the services and nothing imports it but the
worker (autodiscovery in backend/config/celery.py). Periodic ones (the sweep,
the outbox) are sent by celery beat (CELERY_BEAT_SCHEDULE in settings).
"""
import logging
import random

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import close_old_connections

from backend.core import outages
from backend.core.logs import log_context
from backend.core.tasks import OutageSafeTask
from backend.core.pipeline import get_pipeline
from backend.jobs import combining, listing, processing, queueing, services, webhooks
from backend.jobs.models import Image

log = logging.getLogger(__name__)

# Retries of a failure that is not an outage (outages: OutageSafeTask waits
# them out): exponential, capped, with jitter so workers do not retry in lockstep.
RETRY_OPTIONS = dict(retry_backoff=2, retry_backoff_max=60, retry_jitter=True)


def backoff(task) -> float:
    """Seconds before the next retry of ``task``, from its retry_backoff, retry_backoff_max and retry_jitter.

    The tasks retry by hand (they must release their images first), so the
    options Celery applies to autoretry_for are applied here. Jitter is
    "equal jitter": a random point in the upper half of the exponential
    delay, never Celery's full jitter, whose draw of 0 would retry at once.
    """
    delay = min(float(task.retry_backoff_max), float(task.retry_backoff) * 2 ** task.request.retries)
    return delay / 2 + random.uniform(0, delay / 2) if task.retry_jitter else delay


@shared_task(name="faceindex.process_batch", base=OutageSafeTask, bind=True, max_retries=3, acks_late=True,
             **RETRY_OPTIONS)
def process_batch(self, image_ids: list[int]) -> None:
    _process(self, image_ids, combine=True)


@shared_task(name="faceindex.process_image", base=OutageSafeTask, bind=True, max_retries=3, acks_late=True,
             **RETRY_OPTIONS)
def process_image(self, image_id: int) -> None:
    """Kept for messages queued before batching; same as a batch of one."""
    _process(self, [image_id])


def _process(self, image_ids: list[int], *, combine: bool = False) -> None:
    with combining.more_images(_combining_queue(self) if combine else None, len(image_ids)) as taken:
        if taken:
            image_ids = list(image_ids) + [i for item in taken for i in item.image_ids]
            log.info("combined %d messages into one device batch of %d images", len(taken) + 1, len(image_ids))
        job_ids = sorted(set(Image.objects.filter(pk__in=image_ids).values_list("job_id", flat=True)))
        with log_context(image_ids=image_ids, job_id=job_ids[0] if len(job_ids) == 1 else job_ids):
            log.info("processing %d images (attempt %d)", len(image_ids), self.request.retries + 1)
            _process_batch(self, image_ids, combined=bool(taken))


def _combining_queue(self) -> str | None:
    """The queue to take more messages from (combining), or None: only first attempts on a device pipeline combine."""
    if self.request.is_eager or self.request.retries or not getattr(get_pipeline(), "runs_batches_on_device", False):
        return None
    return (self.request.delivery_info or {}).get("routing_key")  # every queue here is named by its routing key


def _process_batch(self, image_ids: list[int], *, combined: bool = False) -> None:
    try:
        processing.process_images(image_ids, worker_name=self.request.hostname)
    except SoftTimeLimitExceeded:
        for image_id in image_ids:
            services.fail_image(image_id, code="timeout", message="processing exceeded the task time limit")
    except Exception as exc:
        if outages.is_outage(exc):
            raise  # not the images' fault: OutageSafeTask waits it out and keeps the message
        # A bug or bad data the per-image checks missed: retry, then give up with a reason.
        if self.request.retries >= self.max_retries:
            log.exception("images %s failed after %d retries", image_ids, self.request.retries)
            for image_id in image_ids:
                services.fail_image(image_id, code="internal_error", message=f"{type(exc).__name__}: {exc}")
            return
        services.release_images(image_ids)
        # All of them, combined messages' images too (combining acks those once this retry is sent).
        raise self.retry(**({"args": [image_ids]} if combined else {}), exc=exc, countdown=backoff(self))


@shared_task(name=queueing.LIST_SOURCE_TASK, base=OutageSafeTask, acks_late=True)
def list_source(job_id: int, token: str) -> None:
    """List an import source on for a while, then hand over to a fresh message."""
    with log_context(job_id=job_id):
        if listing.continue_listing(job_id, token):
            queueing.send_listing_task(job_id)


@shared_task(name="faceindex.deliver_webhook", base=OutageSafeTask, bind=True, acks_late=True, max_retries=None,
             retry_backoff=settings.FACEINDEX_WEBHOOK_BACKOFF_S, retry_backoff_max=settings.FACEINDEX_WEBHOOK_BACKOFF_MAX_S,
             retry_jitter=True)
def deliver_webhook(self, delivery_id: int) -> None:
    with log_context(delivery_id=delivery_id):
        if webhooks.attempt(delivery_id):
            raise self.retry(countdown=backoff(self))


@shared_task(name="faceindex.sweep_lost_images", base=OutageSafeTask, acks_late=True)
def sweep_lost_images() -> int:
    return services.sweep_lost_images()


@shared_task(name="faceindex.sweep", ignore_result=True)
def sweep() -> None:
    """Catch up on work a crash or a broker outage dropped (beat sends it every FACEINDEX_SWEEP_INTERVAL_S).

    Beat sends one message per interval, so one worker runs each sweep: no
    lock between workers is needed.
    """
    close_old_connections()
    try:
        services.sweep_lost_images()
        services.resume_stalled_listings(min_age_s=settings.FACEINDEX_SWEEP_MIN_AGE_S)
        webhooks.sweep_missed(min_age_s=settings.FACEINDEX_SWEEP_MIN_AGE_S)
    finally:
        close_old_connections()


@shared_task(name="faceindex.send_outbox", ignore_result=True)
def send_outbox() -> None:
    """Send what was accepted while the broker was down (beat sends it every FACEINDEX_OUTBOX_INTERVAL_S).

    Images never queued, and listings whose task was never sent. One indexed
    query when there is nothing to do, so it can run every few seconds.
    """
    close_old_connections()
    try:
        queueing.send_outbox()
        services.resume_stalled_listings(min_age_s=services.LISTING_QUIET_AT_RESTART_S * 2)
    finally:
        close_old_connections()
