"""Gallery business logic: identities, enrollment, re-matching."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.db import transaction
from pgvector.django import CosineDistance

from backend.core import storage
from backend.core.errors import NotFound, ServiceError
from backend.core.pipeline import encode_jpeg, get_pipeline
from backend.jobs.services import Upload

from . import matching
from .models import Face, Identity, Template


@dataclass
class EnrollResult:
    name: str
    template_id: int | None = None
    error: dict | None = None
    faces_found: int = 0


@dataclass
class EnrollSummary:
    identity: Identity
    results: list[EnrollResult] = field(default_factory=list)

    @property
    def enrolled(self) -> int:
        return sum(1 for r in self.results if r.template_id)


def get_identity(*, owner, identity_id: int) -> Identity:
    identity = Identity.objects.filter(owner=owner, pk=identity_id).first()
    if identity is None:
        raise NotFound("not_found", f"identity {identity_id} not found")
    return identity


def create_identity(*, owner, name: str) -> Identity:
    name = (name or "").strip()
    if not name:
        raise ServiceError("invalid", "name must not be empty", field="name")
    identity = Identity(owner=owner, name=name)
    identity.full_clean()
    identity.save()
    return identity


def _template_crop_key(identity: Identity) -> str:
    return f"{identity.owner_id}/templates/{identity.pk}/{uuid.uuid4().hex}.jpg"


def enroll_from_uploads(*, identity: Identity, uploads: list[Upload]) -> EnrollSummary:
    """Add one template per upload; each must show exactly one usable face."""
    from django.conf import settings
    from ml.decode import decode_image
    from ml.errors import ImageDecodeError

    from backend.jobs.ingest import iter_upload

    pipeline = get_pipeline()
    summary = EnrollSummary(identity)
    new_template_ids: list[int] = []
    for upload in uploads:
        for blob in iter_upload(upload.name, upload.fileobj, upload.size):
            result = EnrollResult(blob.name)
            summary.results.append(result)
            source_key = f"sha256:{blob.sha256}"
            existing = Template.objects.filter(identity=identity, source_key=source_key).first()
            if existing is not None:  # re-enrolling the same photo adds nothing
                result.template_id, result.faces_found = existing.pk, 1
                continue
            try:
                decoded = decode_image(blob.data, max_pixels=settings.FACEINDEX_MAX_PIXELS)
            except ImageDecodeError as exc:
                result.error = {"code": exc.code, "message": str(exc)}
                continue
            faces = pipeline.process(decoded.pixels)
            result.faces_found = len(faces)
            if len(faces) != 1:
                code = "no_face" if not faces else "multiple_faces"
                message = "no face found" if not faces else f"{len(faces)} faces found; enrollment needs exactly one"
                result.error = {"code": code, "message": message}
                continue
            face = faces[0]
            key = _template_crop_key(identity)
            storage.put_bytes(key, encode_jpeg(face.crop), "image/jpeg")
            template = Template.objects.create(
                owner_id=identity.owner_id, identity=identity, embedding=face.embedding, crop_key=key,
                source_key=source_key, quality=face.quality,
            )
            result.template_id = template.pk
            new_template_ids.append(template.pk)
    if new_template_ids:
        schedule_rematch(identity.owner_id, template_ids=new_template_ids)
    return summary


def schedule_rematch(owner_id: int, **targets) -> None:
    """Re-match indexed faces in the background once the gallery changed."""
    from workers.celery_app import app

    transaction.on_commit(lambda: app.send_task("faceindex.rematch_faces", args=[owner_id], kwargs=targets))


def _faces_near_templates(owner_id: int, template_ids: list[int], threshold: float) -> set[int]:
    face_ids: set[int] = set()
    for embedding in Template.objects.filter(owner_id=owner_id, pk__in=template_ids).values_list("embedding", flat=True):
        rows = (
            Face.objects.filter(owner_id=owner_id)
            .annotate(distance=CosineDistance("embedding", embedding))
            .filter(distance__lte=1.0 - threshold)
            .order_by("distance")
            .values_list("id", flat=True)[:10000]
        )
        face_ids.update(rows)
    return face_ids


def rematch(*, owner_id: int, face_ids=None, template_ids=None, identity_ids=None) -> int:
    """Re-run matching for faces a gallery change may affect; returns how many changed.

    - new templates: faces within threshold of them (HNSW neighbours);
    - identity ids (deleted, merged, templates removed): faces assigned to them;
    - explicit face ids.
    """
    threshold = matching.match_threshold()
    changed = 0
    with transaction.atomic():
        matching.configure_vector_search()
        targets: set[int] = set(face_ids or [])
        if template_ids:
            targets |= _faces_near_templates(owner_id, list(template_ids), threshold)
        if identity_ids:
            targets |= set(Face.objects.filter(owner_id=owner_id, identity_id__in=identity_ids).values_list("id", flat=True))
        for face in Face.objects.filter(owner_id=owner_id, pk__in=targets).only("id", "embedding", "identity_id", "similarity"):
            match = matching.match_embedding(owner_id, face.embedding, threshold=threshold, excluded=excluded_identities(face))
            if (match.identity_id, match.similarity) != (face.identity_id, face.similarity):
                Face.objects.filter(pk=face.pk).update(identity_id=match.identity_id, similarity=match.similarity)
                changed += 1
    return changed


def excluded_identities(face: Face) -> set[int]:
    """Identities a user said this face is not: matching never proposes them again."""
    return set(face.rejections.values_list("identity_id", flat=True))
