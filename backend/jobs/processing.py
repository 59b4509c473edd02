"""Index one stored image: decode, detect, align, embed, match, write faces."""
from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from backend.core import storage
from backend.core.pipeline import encode_jpeg, get_pipeline
from backend.gallery import matching
from backend.gallery.models import Face

from . import services
from .models import Image

log = logging.getLogger(__name__)


def crop_key(image: Image, ordinal: int) -> str:
    # Deterministic: a re-run of the same image overwrites, never duplicates.
    return f"{image.owner_id}/crops/{image.pk}/{ordinal}.jpg"


def _parse_taken_at(value: str | None):
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else timezone.make_aware(parsed, timezone.get_default_timezone())


def process_image(image_id: int, *, worker_name: str) -> None:
    from ml.errors import ImageDecodeError
    from ml.decode import decode_image
    from django.conf import settings

    image = services.claim_image(image_id, worker_name=worker_name)
    if image is None:
        return
    try:
        data = storage.get_bytes(image.object_key)
        decoded = decode_image(data, max_pixels=settings.FACEINDEX_MAX_PIXELS)
    except ImageDecodeError as exc:
        services.fail_image(image.pk, code=exc.code, message=str(exc))
        return
    pipeline = get_pipeline()
    faces = pipeline.process(decoded.pixels)
    for ordinal, face in enumerate(faces):
        storage.put_bytes(crop_key(image, ordinal), encode_jpeg(face.crop), "image/jpeg")
    threshold = pipeline.threshold
    with transaction.atomic():
        locked = Image.objects.select_for_update().get(pk=image.pk)
        if locked.status != Image.Status.PROCESSING or locked.worker != worker_name:
            return  # another worker finished or re-claimed it meanwhile
        matching.configure_vector_search()
        Face.objects.filter(image=locked).delete()
        rows = []
        for ordinal, face in enumerate(faces):
            match = matching.match_embedding(image.owner_id, face.embedding, threshold=threshold)
            x, y, w, h = face.box
            rows.append(
                Face(
                    owner_id=image.owner_id,
                    image=locked,
                    ordinal=ordinal,
                    box_x=x, box_y=y, box_w=w, box_h=h,
                    landmarks=[[float(a), float(b)] for a, b in face.landmarks],
                    det_score=float(face.score),
                    quality=float(face.quality),
                    embedding=face.embedding,
                    identity_id=match.identity_id,
                    similarity=match.similarity,
                    crop_key=crop_key(image, ordinal),
                )
            )
        Face.objects.bulk_create(rows)
        locked.status = Image.Status.DONE
        locked.width, locked.height = decoded.width, decoded.height
        locked.taken_at = _parse_taken_at(decoded.taken_at)
        if decoded.gps:
            locked.gps_lat, locked.gps_lon = decoded.gps
        locked.processed_at = timezone.now()
        locked.worker = ""
        locked.error_code = locked.error_message = ""
        locked.save()
        services.finish_image(locked, failed=False, faces_found=len(rows))
