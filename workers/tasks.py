"""Thin Celery tasks: each calls one backend service."""
import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

log = logging.getLogger(__name__)


@shared_task(name="faceindex.process_image", bind=True, max_retries=3, acks_late=True)
def process_image(self, image_id: int) -> None:
    from backend.jobs import processing, services

    try:
        processing.process_image(image_id, worker_name=self.request.hostname)
    except SoftTimeLimitExceeded:
        services.fail_image(image_id, code="timeout", message="processing exceeded the task time limit")
    except Exception as exc:  # infrastructure hiccup (storage, database): retry, then give up with a reason
        if self.request.retries >= self.max_retries:
            log.exception("image %s failed after %d retries", image_id, self.request.retries)
            services.fail_image(image_id, code="internal_error", message=f"{type(exc).__name__}: {exc}")
            return
        services.release_image(image_id)
        raise self.retry(exc=exc, countdown=2 ** self.request.retries)


@shared_task(name="faceindex.rematch_faces", acks_late=True)
def rematch_faces(owner_id: int, *, face_ids=None, template_ids=None, identity_ids=None) -> int:
    from backend.gallery import services

    return services.rematch(owner_id=owner_id, face_ids=face_ids, template_ids=template_ids, identity_ids=identity_ids)
