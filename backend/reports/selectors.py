"""Read-only report queries: who appears where, how often, with what similarity."""
from __future__ import annotations

from collections import defaultdict

from django.db.models import Count, Max, Min

from backend.core.storage import presigned_url
from backend.gallery.models import Face, Identity
from backend.jobs.models import Image, Job


def _appearance(face: Face, *, with_urls: bool) -> dict:
    row = {
        "face_id": face.pk,
        "image_id": face.image_id,
        "image": face.image.original_name,
        "box": [round(v, 1) for v in face.box],
        "similarity": round(face.similarity, 4) if face.similarity is not None else None,
        "taken_at": face.image.taken_at.isoformat() if face.image.taken_at else None,
    }
    if with_urls:
        row["crop_url"] = presigned_url(face.crop_key)
    return row


def identity_report(*, owner, job: Job | None = None, identity: Identity | None = None, with_urls: bool = False) -> dict:
    """Per-identity appearances, optionally restricted to one job or one identity."""
    faces = Face.objects.filter(owner=owner).select_related("image", "identity")
    if job is not None:
        faces = faces.filter(image__job=job)
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


def job_summary(*, job: Job) -> dict:
    images = Image.objects.filter(job=job)
    failures = list(images.filter(status=Image.Status.FAILED).values("id", "original_name", "error_code", "error_message"))
    faces = Face.objects.filter(image__job=job)
    found = (
        faces.filter(identity__isnull=False)
        .values("identity_id", "identity__name")
        .annotate(count=Count("id"), best=Max("similarity"), worst=Min("similarity"))
        .order_by("-count", "identity__name")
    )
    return {
        "job_id": job.pk,
        "status": job.status,
        "images": job.total_images,
        "processed": job.processed_images,
        "failed": job.failed_images,
        "faces": faces.count(),
        "known_faces": faces.filter(identity__isnull=False).count(),
        "unknown_faces": faces.filter(identity__isnull=True).count(),
        "identities": [
            {"identity_id": r["identity_id"], "name": r["identity__name"], "faces": r["count"], "best_similarity": r["best"]}
            for r in found
        ],
        "failures": failures,
    }
