"""Read-only queries about jobs: their faces (dedup links included) and the summary webhooks and reports show."""
from __future__ import annotations

from django.db.models import Count, Max, Min, Q, QuerySet

from backend.gallery.matching import low_quality_faces
from backend.gallery.models import Face

from .models import Image, Job


def job_faces(job: Job) -> QuerySet:
    """The faces of a job's images, including those of images linked by dedup."""
    linked = Image.objects.filter(job=job, linked_from__isnull=False).values("linked_from_id")
    return Face.objects.filter(Q(image__job=job) | Q(image_id__in=linked))


def job_summary(*, job: Job) -> dict:
    images = Image.objects.filter(job=job)
    failures = list(images.filter(status=Image.Status.FAILED).order_by("id")
                    .values("id", "original_name", "error_code", "error_message"))
    faces = job_faces(job)
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
        "linked": job.linked_images,
        "pending": max(job.total_images - job.done_images, 0),
        "faces": faces.count(),
        "known_faces": faces.filter(identity__isnull=False).count(),
        "unknown_faces": faces.filter(identity__isnull=True).count(),
        # Of the unknown faces: too small or blurred to name (FACEINDEX_MATCH_MIN_QUALITY).
        "low_quality_faces": faces.filter(low_quality_faces()).count(),
        "identities": [
            {"identity_id": r["identity_id"], "name": r["identity__name"], "faces": r["count"], "best_similarity": r["best"]}
            for r in found
        ],
        "failures": failures,
    }
