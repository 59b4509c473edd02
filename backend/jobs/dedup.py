"""Dedup by content hash: an owner's already-indexed bytes are linked, not reprocessed.

The canonical image is the first one of this owner with that sha256 that was
indexed (status DONE, not itself a link). A link is an Image row of the new
job with status DONE and ``linked_from`` pointing at the canonical image; its
faces stay with the canonical image (never copied, so identity reports count a
photo once and later re-matching or merging needs no fan-out). Job-scoped
reports follow the links (jobs.selectors.job_faces).
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db import connection
from django.db.models import Count
from django.utils import timezone

from .models import Image


@dataclass(frozen=True)
class Indexed:
    image: Image
    faces: int


def indexed_images(owner_id: int, sha256s: set[str], *, exclude_id: int | None = None) -> dict[str, Indexed]:
    """sha256 -> the owner's canonical indexed image of that content."""
    sha256s = {s for s in sha256s if s}
    if not sha256s:
        return {}
    rows = (Image.objects.filter(owner_id=owner_id, sha256__in=sha256s, status=Image.Status.DONE, linked_from__isnull=True)
            .exclude(pk=exclude_id).annotate(face_count=Count("faces")).order_by("id"))
    found: dict[str, Indexed] = {}
    for row in rows:
        found.setdefault(row.sha256, Indexed(row, row.face_count))
    return found


def indexed_image(owner_id: int, sha256: str, *, exclude_id: int) -> Indexed | None:
    """The canonical indexed image of this content, if any (one cheap query when there is none)."""
    exists = (Image.objects.filter(owner_id=owner_id, sha256=sha256, status=Image.Status.DONE, linked_from__isnull=True)
              .exclude(pk=exclude_id).exists())
    return indexed_images(owner_id, {sha256}, exclude_id=exclude_id).get(sha256) if exists else None


def lock_contents(owner_id: int, sha256s: list[str]) -> None:
    """Serialise, until the current transaction ends, indexing of one owner's contents."""
    if not sha256s:
        return
    with connection.cursor() as cursor:
        cursor.execute(*lock_contents_statement({(owner_id, sha256) for sha256 in sha256s}))


def lock_contents_statement(contents: set[tuple[int, str]]) -> tuple[str, list]:
    """lock_contents for (owner id, sha256) pairs of any owners, as one statement to run with others.

    Taken in sorted key order, so two batches that share contents cannot deadlock.
    """
    keys = sorted({f"faceindex:content:{owner_id}:{sha256}" for owner_id, sha256 in contents})
    return ("SELECT count(pg_advisory_xact_lock(hashtextextended(key, 0))) "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS k(key, n)", [keys])


def indexed_contents_statement(contents: set[tuple[int, str]], *, exclude_ids: list[int]) -> tuple[str, list]:
    """Which (owner id, sha256) pairs have a canonical indexed image (as indexed_images), as one statement.

    Rows: (owner id, sha256). A hit is rare (a re-imported photo); the caller
    then loads the canonical images with ``indexed_images``.
    """
    owners, sha256s = zip(*sorted(contents)) if contents else ((), ())
    sql = f"""
        SELECT DISTINCT i.owner_id, i.sha256
        FROM {Image._meta.db_table} i
        JOIN unnest(%s::bigint[], %s::text[]) AS c(owner_id, sha256) ON i.owner_id = c.owner_id AND i.sha256 = c.sha256
        WHERE i.status = %s AND i.linked_from_id IS NULL AND NOT i.id = ANY(%s::bigint[])
    """
    return sql, [list(owners), list(sha256s), Image.Status.DONE, list(exclude_ids)]


def mark_linked(image: Image, canonical: Indexed) -> None:
    """Fill an (unsaved or locked) Image as a link to ``canonical``; the caller saves it."""
    source = canonical.image
    image.status = Image.Status.DONE
    image.linked_from_id = source.pk
    image.width, image.height = source.width, source.height
    image.taken_at, image.gps_lat, image.gps_lon = source.taken_at, source.gps_lat, source.gps_lon
    image.processed_at = timezone.now()
    image.worker = ""
    image.error_code = image.error_message = ""


def faces_new_to_job(job_id: int, canonical: Indexed) -> int:
    """Faces a new link adds to the job's count: none if the job already holds them
    (the canonical image is in this job, or another link of this job points at it),
    so job.faces_found always equals the distinct faces of jobs.selectors.job_faces."""
    if canonical.image.job_id == job_id or Image.objects.filter(job_id=job_id, linked_from=canonical.image).exists():
        return 0
    return canonical.faces
