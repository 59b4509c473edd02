"""Thin Celery tasks of the gallery (re-matching, unknown-face clusters, background enrollment).

Sent by name from services.py (current_app.send_task), so only the worker
imports this module.
"""
from celery import shared_task
from django.conf import settings
from django.db import close_old_connections

from backend.core.tasks import OutageSafeTask
from backend.gallery import clustering, services


@shared_task(name="faceindex.cluster_faces", acks_late=True)
def cluster_faces(owner_id: int, face_ids: list[int] | None = None) -> int:
    """Cluster the given unknown faces and any others clustering has not seen yet, in one run."""
    return clustering.cluster_pending(owner_id, also=face_ids or [])


@shared_task(name="faceindex.rematch_faces", base=OutageSafeTask, acks_late=True)
def rematch_faces(owner_id: int, *, face_ids=None, template_ids=None, identity_ids=None) -> int:
    return services.rematch(owner_id=owner_id, face_ids=face_ids, template_ids=template_ids, identity_ids=identity_ids)


@shared_task(name="faceindex.run_enrollment", base=OutageSafeTask, acks_late=True)
def run_enrollment(enrollment_id: int) -> int:
    return services.run_enrollment(enrollment_id).enrolled


@shared_task(name="faceindex.send_enrollment_outbox", ignore_result=True)
def send_enrollment_outbox() -> None:
    """Enrollments accepted while the broker was down (beat sends it with the jobs' outbox)."""
    close_old_connections()
    try:
        services.send_enrollment_outbox(min_age_s=settings.FACEINDEX_OUTBOX_MIN_AGE_S)
    finally:
        close_old_connections()
