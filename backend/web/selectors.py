"""Reads behind the web pages, each in a fixed number of queries however many rows a page shows."""
from __future__ import annotations

from django.db.models import Count, F, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce, RowNumber
from django.db.models.expressions import Window

from backend.core.storage import presigned_url
from backend.gallery.models import Face, Identity, Template
from backend.jobs.models import Image, Job

# Thumbnails are the stored crops behind presigned URLs that expire soon after
# the page is rendered: a copied link stops working within minutes.
THUMBNAIL_URL_SECONDS = 300
# Crops shown per unknown cluster (its best-quality faces).
CLUSTER_SAMPLES = 6


def thumbnail_url(key: str | None) -> str | None:
    return presigned_url(key, seconds=THUMBNAIL_URL_SECONDS)


def people(*, owner, search: str = "") -> QuerySet:
    """The owner's identities by name, each with photo and face counts and a cover crop key.

    The cover is the identity's best-quality face, or its best enrollment
    crop while it has no faces yet.
    """
    cover_face = Face.objects.filter(identity=OuterRef("pk")).order_by("-quality", "id").values("crop_key")[:1]
    cover_template = (Template.objects.filter(identity=OuterRef("pk"), masked=False)
                      .order_by("-quality", "id").values("crop_key")[:1])
    identities = Identity.objects.filter(owner=owner)
    if search:
        identities = identities.filter(name__icontains=search)
    return identities.annotate(
        photo_count=Count("faces__image", distinct=True),
        face_count=Count("faces", distinct=True),
        cover_key=Coalesce(Subquery(cover_face), Subquery(cover_template)),
    ).order_by("name", "id")


def appearances(*, owner, identity: Identity) -> QuerySet:
    """Where a person appears, dated photos first (oldest first), then by upload."""
    return (Face.objects.filter(owner=owner, identity=identity).select_related("image")
            .order_by(F("image__taken_at").asc(nulls_last=True), "image_id", "ordinal"))


def photo_faces(image: Image) -> list[Face]:
    return list(Face.objects.filter(image=image).select_related("identity").order_by("ordinal"))


def job_images(job: Job) -> QuerySet:
    return Image.objects.filter(job=job).annotate(face_count=Count("faces")).order_by("id")


def job_failures(job: Job, limit: int = 100) -> list[Image]:
    return list(Image.objects.filter(job=job, status=Image.Status.FAILED).order_by("id")[:limit])


def cluster_samples(cluster_ids: list[int], per_cluster: int = CLUSTER_SAMPLES) -> dict[int, list[Face]]:
    """The best-quality faces of each cluster, all clusters in one query."""
    rank = Window(RowNumber(), partition_by=[F("cluster_id")], order_by=[F("quality").desc(), F("id").asc()])
    faces = (Face.objects.filter(cluster_id__in=cluster_ids).annotate(rank=rank).filter(rank__lte=per_cluster)
             .order_by("cluster_id", "rank"))
    samples: dict[int, list[Face]] = {cluster_id: [] for cluster_id in cluster_ids}
    for face in faces:
        samples[face.cluster_id].append(face)
    return samples
