"""Counting finished images and completing jobs (and announcing it by webhook)."""
from __future__ import annotations

from django.db import connection, transaction
from django.utils import timezone

from . import webhooks
from .models import Image, Job


def finish_image(image: Image, *, failed: bool, faces_found: int = 0, linked: bool = False) -> None:
    """Count a finished image once, and complete the job with its last image.

    Runs inside the caller's transaction together with the face rows, so the
    counters and the faces can never disagree.
    """
    count_finished(image.job_id, processed=0 if failed else 1, failed=int(failed),
                   faces_found=0 if failed else faces_found, linked=int(linked and not failed))


def count_finished(job_id: int, *, processed: int = 0, failed: int = 0, faces_found: int = 0, linked: int = 0) -> None:
    """Add finished images to a job's counters (one row lock for a whole batch), inside the caller's transaction."""
    with connection.cursor() as cursor:
        cursor.execute(*count_finished_statement(job_id, processed=processed, failed=failed,
                                                 faces_found=faces_found, linked=linked))
        complete_counted(cursor.fetchall())


def count_finished_statement(job_id: int, *, processed: int = 0, failed: int = 0, faces_found: int = 0,
                             linked: int = 0) -> tuple[str, list]:
    """count_finished as one statement, to run with others in the caller's transaction; pass its rows to complete_counted.

    The UPDATE takes the job's row lock; it returns the job's id when the job
    may now be complete (complete_if_done decides, with the row locked).
    """
    sql = f"""
        UPDATE {Job._meta.db_table}
        SET processed_images = processed_images + %s, failed_images = failed_images + %s,
            faces_found = faces_found + %s, linked_images = linked_images + %s
        WHERE id = %s
        RETURNING id, NOT listing AND processed_images + failed_images >= total_images AND status = ANY(%s)
    """
    return sql, [processed, failed, faces_found, linked, job_id, [Job.Status.PENDING, Job.Status.RUNNING]]


def complete_counted(rows) -> None:
    """After count_finished_statement (same transaction): complete the jobs it found done."""
    for job_id, maybe_done in rows:
        if maybe_done:
            complete_if_done(Job.objects.select_for_update().get(pk=job_id))


def complete_if_done(job: Job) -> None:
    """With the job row locked: complete it once every image is done and its source fully listed."""
    if job.listing:
        return
    if job.done_images >= job.total_images and job.status in (Job.Status.PENDING, Job.Status.RUNNING):
        job.status = Job.Status.COMPLETED
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "finished_at"])
        notify(job)


def notify(job: Job) -> None:
    """Schedule the job's webhook for its current (final) status once the transaction commits."""
    job_id, event = job.pk, f"job.{job.status}"
    transaction.on_commit(lambda: webhooks.schedule(job_id, event))
