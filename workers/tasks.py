"""Thin Celery tasks: each calls one backend service."""
import logging
import threading

from celery import Task, shared_task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from celery.signals import worker_ready, worker_shutdown

log = logging.getLogger(__name__)


class OutageSafeTask(Task):
    """A task that meets a database/storage/broker outage keeps its message.

    Instead of failing (which acks, i.e. drops, the message) it waits until
    the services answer again (capped backoff with jitter, bounded by
    FACEINDEX_OUTAGE_WAIT_S so it stays inside the time limit), then puts its
    message back at the head of the queue. While it waits this worker takes
    nothing new, so an outage no longer burns through the whole queue.
    """

    def __call__(self, *args, **kwargs):
        from backend.core import outages

        try:
            return super().__call__(*args, **kwargs)
        except (Retry, Reject, Ignore):
            raise
        except Exception as exc:
            if self.request.is_eager or not outages.is_outage(exc):
                raise
            log.warning("%s[%s] met an outage (%s: %s); waiting, then re-queueing its message",
                        self.name, self.request.id, type(exc).__name__, exc)
            still_down = outages.wait_until_reachable()
            if still_down:
                log.warning("%s still unreachable; message goes back to the queue", " and ".join(still_down))
            raise Reject(exc, requeue=True) from exc


@shared_task(name="faceindex.process_batch", base=OutageSafeTask, bind=True, max_retries=3, acks_late=True)
def process_batch(self, image_ids: list[int]) -> None:
    _process(self, image_ids)


@shared_task(name="faceindex.process_image", base=OutageSafeTask, bind=True, max_retries=3, acks_late=True)
def process_image(self, image_id: int) -> None:
    """Kept for messages queued before batching; same as a batch of one."""
    _process(self, [image_id])


def _process(self, image_ids: list[int]) -> None:
    from backend.core import outages
    from backend.jobs import processing, services

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
        raise self.retry(exc=exc, countdown=2 ** self.request.retries)


@shared_task(name="faceindex.list_source", base=OutageSafeTask, acks_late=True)
def list_source(job_id: int, token: str) -> None:
    """List an import source on for a while, then hand over to a fresh message."""
    from backend.jobs import listing

    if listing.continue_listing(job_id, token):
        listing.send_listing_task(job_id)


@shared_task(name="faceindex.rematch_faces", base=OutageSafeTask, acks_late=True)
def rematch_faces(owner_id: int, *, face_ids=None, template_ids=None, identity_ids=None) -> int:
    from backend.gallery import services

    return services.rematch(owner_id=owner_id, face_ids=face_ids, template_ids=template_ids, identity_ids=identity_ids)


@shared_task(name="faceindex.run_enrollment", base=OutageSafeTask, acks_late=True)
def run_enrollment(enrollment_id: int) -> int:
    from backend.gallery import services

    return services.run_enrollment(enrollment_id).enrolled


@shared_task(name="faceindex.deliver_webhook", base=OutageSafeTask, bind=True, acks_late=True, max_retries=None)
def deliver_webhook(self, delivery_id: int) -> None:
    from backend.jobs import webhooks

    retry_in = webhooks.attempt(delivery_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)


@shared_task(name="faceindex.sweep_lost_images", base=OutageSafeTask, acks_late=True)
def sweep_lost_images() -> int:
    from backend.jobs import services

    return services.sweep_lost_images()


# -- the sweeps: the outbox every few seconds, lost messages every interval ---------

_sweeper_stop = threading.Event()
SWEEP_LOCK = "faceindex:sweep-lock"
OUTBOX_LOCK = "faceindex:outbox-lock"


def _take_turn(client, lock: str, seconds: float) -> bool:
    """True for the first worker to ask within ``seconds``: one run per period across all workers."""
    return bool(client.set(lock, "1", nx=True, px=max(100, int(seconds * 1000) - 100)))


def _sweep_once(app) -> None:
    from django.conf import settings
    from django.db import close_old_connections

    from backend.gallery import services as gallery_services
    from backend.jobs import services, webhooks

    with app.connection_for_write() as connection:
        client = connection.default_channel.client
        outbox_turn = _take_turn(client, OUTBOX_LOCK, settings.FACEINDEX_OUTBOX_INTERVAL_S)
        sweep_turn = (settings.FACEINDEX_SWEEP_INTERVAL_S > 0
                      and _take_turn(client, SWEEP_LOCK, settings.FACEINDEX_SWEEP_INTERVAL_S))
    if not (outbox_turn or sweep_turn):
        return
    close_old_connections()
    try:
        if outbox_turn:
            services.send_outbox()
            gallery_services.send_enrollment_outbox(min_age_s=settings.FACEINDEX_OUTBOX_MIN_AGE_S)
            services.resume_stalled_listings(min_age_s=services.LISTING_QUIET_AT_RESTART_S * 2)
        if sweep_turn:
            services.sweep_lost_images()
            services.resume_stalled_listings(min_age_s=settings.FACEINDEX_SWEEP_MIN_AGE_S)
            webhooks.sweep_missed(min_age_s=settings.FACEINDEX_SWEEP_MIN_AGE_S)
    finally:
        close_old_connections()


def _sweep_forever(app, interval: float) -> None:
    while True:
        try:
            _sweep_once(app)
        except Exception as exc:  # the broker or the database is down: try again next round
            from backend.core import outages

            log.warning("sweep failed: %s: %s", type(exc).__name__, exc, exc_info=not outages.is_outage(exc))
        if _sweeper_stop.wait(interval):
            return


@worker_ready.connect
def start_sweeper(sender=None, **_):
    from django.conf import settings

    interval = settings.FACEINDEX_OUTBOX_INTERVAL_S
    if interval <= 0:
        return
    threading.Thread(target=_sweep_forever, args=(sender.app, interval),
                     name="faceindex-sweeper", daemon=True).start()


@worker_shutdown.connect
def stop_sweeper(**_):
    _sweeper_stop.set()
