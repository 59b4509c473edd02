"""Read-only report queries: who appears where, how often, with what similarity."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator

from django.db.models import Count, Max, Min, QuerySet
from django.db.models.functions import TruncMonth

from backend.core.storage import presigned_url
from backend.gallery.models import Face, Identity
from backend.jobs.models import Job
from backend.jobs.selectors import job_faces, job_summary

__all__ = ["appearance_row", "appearances", "identity_report", "identity_statistics", "iter_appearance_rows",
           "job_faces", "job_summary"]


TOP_CO_OCCURRING = 10


def _appearance(face: Face, *, with_urls: bool) -> dict:
    row = {
        "face_id": face.pk,
        "image_id": face.image_id,
        "image": face.image.original_name,
        "box": [round(v, 1) for v in face.box],
        "similarity": round(face.similarity, 4) if face.similarity is not None else None,
        "taken_at": face.image.taken_at.isoformat() if face.image.taken_at else None,
        "mask": face.mask_state or None,
    }
    if with_urls:
        row["crop_url"] = presigned_url(face.crop_key)
    return row


def identity_report(*, owner, job: Job | None = None, identity: Identity | None = None, with_urls: bool = False) -> dict:
    """Per-identity appearances, optionally restricted to one job or one identity."""
    faces = (job_faces(job) if job is not None else Face.objects.filter(owner=owner)).select_related("image", "identity")
    known = faces.filter(identity__isnull=False)
    if identity is not None:
        known = known.filter(identity=identity)
    by_identity: dict[int, list[Face]] = defaultdict(list)
    for face in known.order_by("identity__name", "image_id", "ordinal"):
        by_identity[face.identity_id].append(face)
    identities = Identity.objects.filter(owner=owner, pk__in=by_identity.keys()).order_by("name", "id")
    rows = []
    for ident in identities:
        appearances = by_identity[ident.pk]
        sims = [f.similarity for f in appearances if f.similarity is not None]
        rows.append(
            {
                "identity_id": ident.pk,
                "name": ident.name,
                "appearances": len(appearances),
                "images": len({f.image_id for f in appearances}),
                "mean_similarity": round(sum(sims) / len(sims), 4) if sims else None,
                "faces": [_appearance(f, with_urls=with_urls) for f in appearances],
            }
        )
    return {
        "job_id": job.pk if job else None,
        "identities": rows,
        "unknown_faces": faces.filter(identity__isnull=True).count() if identity is None else None,
        "total_faces": faces.count() if identity is None else None,
    }


# -- per-identity statistics -------------------------------------------------------

def identity_statistics(*, owner, identity: Identity) -> dict:
    """Counts, first/last seen (EXIF DateTimeOriginal), appearances per month,
    and the identities seen most often in the same images."""
    faces = Face.objects.filter(owner=owner, identity=identity)
    totals = faces.aggregate(appearances=Count("id"), images=Count("image", distinct=True),
                             first_seen=Min("image__taken_at"), last_seen=Max("image__taken_at"),
                             best=Max("similarity"), worst=Min("similarity"))
    per_month = (faces.filter(image__taken_at__isnull=False).annotate(month=TruncMonth("image__taken_at"))
                 .values("month").annotate(count=Count("id")).order_by("month"))
    co_occurring = (
        Face.objects.filter(owner=owner, identity__isnull=False, image_id__in=faces.values("image_id"))
        .exclude(identity=identity).values("identity_id", "identity__name")
        .annotate(images=Count("image", distinct=True)).order_by("-images", "identity__name")[:TOP_CO_OCCURRING]
    )
    return {
        "identity_id": identity.pk,
        "name": identity.name,
        "appearances": totals["appearances"],
        "images": totals["images"],
        "undated_appearances": faces.filter(image__taken_at__isnull=True).count(),
        "first_seen": totals["first_seen"].isoformat() if totals["first_seen"] else None,
        "last_seen": totals["last_seen"].isoformat() if totals["last_seen"] else None,
        "best_similarity": totals["best"],
        "worst_similarity": totals["worst"],
        "per_month": [{"month": r["month"].strftime("%Y-%m"), "appearances": r["count"]} for r in per_month],
        "co_occurring": [{"identity_id": r["identity_id"], "name": r["identity__name"], "images": r["images"]}
                         for r in co_occurring],
    }


# -- appearance rows for exports ---------------------------------------------------------

APPEARANCE_FIELDS = ["face_id", "identity_id", "identity", "image_id", "image", "job_id", "box_x", "box_y", "box_w",
                     "box_h", "similarity", "det_score", "mask", "age", "sex", "taken_at", "gps_lat", "gps_lon", "crop_url"]


def appearances(*, owner, identity: Identity | None = None, job: Job | None = None, known_only: bool = False) -> QuerySet:
    """Faces as report rows, in a stable order for paging."""
    faces = job_faces(job).filter(owner=owner) if job is not None else Face.objects.filter(owner=owner)
    if identity is not None:
        faces = faces.filter(identity=identity)
    elif known_only:
        faces = faces.filter(identity__isnull=False)
    return faces.select_related("image", "identity").order_by("id")


def appearance_row(face: Face, *, with_urls: bool = True) -> dict:
    image = face.image
    return {
        "face_id": face.pk,
        "identity_id": face.identity_id,
        "identity": face.identity.name if face.identity_id else None,
        "image_id": image.pk,
        "image": image.original_name,
        "job_id": image.job_id,
        "box_x": round(face.box_x, 1), "box_y": round(face.box_y, 1),
        "box_w": round(face.box_w, 1), "box_h": round(face.box_h, 1),
        "similarity": round(face.similarity, 4) if face.similarity is not None else None,
        "det_score": round(face.det_score, 4),
        "mask": face.mask_state or None,
        "age": face.age,
        "sex": face.sex or None,
        "taken_at": image.taken_at.isoformat() if image.taken_at else None,
        "gps_lat": image.gps_lat, "gps_lon": image.gps_lon,
        "crop_url": presigned_url(face.crop_key) if with_urls else None,
    }


def iter_appearance_rows(queryset: QuerySet, *, with_urls: bool = True, chunk_size: int = 2000) -> Iterator[dict]:
    """Rows streamed from a server-side cursor: memory stays flat however many faces match."""
    for face in queryset.iterator(chunk_size=chunk_size):
        yield appearance_row(face, with_urls=with_urls)
