"""1:1 verification and 1:N search of uploaded photos against an owner's gallery.

Scores are cosine similarities of SFace embeddings. 1:1 verification uses the
recognizer's pair threshold (manifest default_threshold, FAR 1e-3); 1:N search
decides with matching.decide under the owner's open-set rule (match_rule), the
same decision indexing makes. 1:N search reads the HNSW indexes with hnsw.ef_search =
FACEINDEX_HNSW_EF_SEARCH (100; benchmarks/bench_search.py measures recall
against an exact scan) and iterative scans, so the owner filter still returns k rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import transaction
from pgvector.django import CosineDistance

from backend.core.errors import ServiceError
from backend.core.pipeline import get_pipeline
from backend.core.storage import presigned_url
from backend.core.uploads import Upload
from ml.decode import decode_image
from ml.errors import ImageDecodeError

from . import matching, services
from .attributes import describe_faces, is_masked
from .models import Face, Identity

MAX_K = 100


@dataclass
class ProbeFace:
    box: list[float]
    det_score: float
    quality: float
    embedding: np.ndarray
    mask_state: str = ""

    @property
    def masked(self) -> bool:
        return is_masked(self.mask_state)


def faces_in_upload(upload: Upload, *, field: str) -> list[ProbeFace]:
    """Faces of one uploaded photo, largest first; a clear error when it is not a photo with a face."""
    data = upload.fileobj.read()
    if len(data) > settings.FACEINDEX_MAX_UPLOAD_BYTES:
        raise ServiceError("too_large", f"{upload.name} is larger than {settings.FACEINDEX_MAX_UPLOAD_BYTES} bytes", field=field, status_code=413)
    try:
        decoded = decode_image(data, max_pixels=settings.FACEINDEX_MAX_PIXELS)
    except ImageDecodeError as exc:
        raise ServiceError(exc.code, f"{upload.name}: {exc}", field=field, status_code=422)
    faces = get_pipeline().process(decoded.pixels)
    if not faces:
        raise ServiceError("no_face", f"no face found in {upload.name}", field=field, status_code=422)
    faces.sort(key=lambda f: -(f.box[2] * f.box[3]))
    # A masked probe is also compared with the masked-probe templates (docs/masks-and-attributes.md).
    attributes = describe_faces(decoded.pixels, faces, with_age_sex=False)
    return [ProbeFace([round(float(v), 1) for v in f.box], float(f.score), float(f.quality), f.embedding, a.mask_state)
            for f, a in zip(faces, attributes)]


def verify(*, owner, probe: Upload, other: Upload | None = None, identity_id: int | None = None) -> dict:
    """Same person? The largest face of `probe` against the largest face of `other`, or against an identity."""
    if (other is None) == (identity_id is None):
        raise ServiceError("invalid", "give a second image (file_b) or an identity_id")
    threshold = float(get_pipeline().threshold)
    face = faces_in_upload(probe, field="file_a")[0]
    result = {"threshold": threshold, "face_a": {"box": face.box}}
    if other is not None:
        face_b = faces_in_upload(other, field="file_b")[0]
        similarity = float(np.dot(face.embedding, face_b.embedding))
        result["face_b"] = {"box": face_b.box}
    else:
        identity = services.get_identity(owner=owner, identity_id=identity_id)
        similarity = services.best_similarity(identity.pk, face.embedding, probe_masked=face.masked)
        if similarity is None:
            raise ServiceError("no_templates", f"identity {identity.pk} has no enrolled templates", field="identity_id", status_code=422)
        result["identity"] = {"id": identity.pk, "name": identity.name}
    result.update(same=similarity >= threshold, similarity=round(similarity, 4))
    return result


def _nearest_faces(owner_id: int, embedding, k: int) -> list[Face]:
    rows = list(
        Face.objects.filter(owner_id=owner_id)
        .annotate(distance=CosineDistance("embedding", embedding))
        .order_by("distance")
        .select_related("identity", "image")[:k]
    )
    # relaxed_order iterative scans may return rows slightly out of order.
    return sorted(rows, key=lambda f: f.distance)


def search(*, owner, probe: Upload, k: int = 5, all_faces: bool = False) -> dict:
    """Top-k identities (per-identity best template) and top-k faces for the probe's largest face, or all faces."""
    if not 1 <= k <= MAX_K:
        raise ServiceError("invalid", f"k must be between 1 and {MAX_K}", field="k")
    rule = matching.match_rule(owner.pk)
    faces = faces_in_upload(probe, field="file")
    if not all_faces:
        faces = faces[:1]
    results = []
    with transaction.atomic():
        matching.configure_vector_search()
        for face in faces:
            # Enough templates for k distinct identities in practice.
            scores = matching.identity_scores(owner.pk, face.embedding, k=max(settings.FACEINDEX_MATCH_CANDIDATES, 4 * k),
                                              probe_masked=face.masked)
            decision = matching.decide(scores, rule=rule, probe_masked=face.masked)
            threshold = rule.threshold_for(face.masked)
            top = sorted(scores.items(), key=lambda item: -item[1])[:k]
            names = dict(Identity.objects.filter(pk__in=[i for i, _ in top]).values_list("id", "name"))
            results.append({
                "box": face.box,
                "det_score": round(face.det_score, 4),
                "mask": face.mask_state,
                "match": {"id": decision.identity_id, "name": names.get(decision.identity_id)} if decision.identity_id else None,
                "threshold": round(threshold, 4),
                "identities": [{"id": i, "name": names[i], "similarity": round(s, 4), "above_threshold": s >= threshold}
                               for i, s in top],
                "faces": [{
                    "face_id": f.pk, "image_id": f.image_id, "image": f.image.original_name,
                    "identity": {"id": f.identity_id, "name": f.identity.name} if f.identity_id else None,
                    "similarity": round(1.0 - float(f.distance), 4), "crop_url": presigned_url(f.crop_key),
                } for f in _nearest_faces(owner.pk, face.embedding, k)],
            })
    return {"threshold": rule.threshold, "target_fpir": rule.target_fpir, "ef_search": settings.FACEINDEX_HNSW_EF_SEARCH, "k": k, "results": results}
