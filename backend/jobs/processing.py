"""Index stored images in batches: read, decode, detect, align, embed, match, write faces.

A batch shares one embedding call for all its faces; everything else is per
image, and every image is written in its own transaction, so one bad image
fails alone and a re-run of a finished image is a no-op (idempotent).
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import cv2
import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backend.core import storage
from backend.core.pipeline import encode_jpeg, get_pipeline
from backend.gallery import matching
from backend.gallery.models import Face

from . import dedup, services, sources
from .models import Image

log = logging.getLogger(__name__)

STAGES = ("decode", "detect", "embed", "attributes", "match", "write")


class SourceUnreadable(Exception):
    """The image's bytes are gone or refused (missing S3 object, file outside the roots)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Work:
    image: Image
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    decoded: object | None = None
    faces: list = field(default_factory=list)
    attributes: list = field(default_factory=list)  # gallery.attributes.FaceAttributes per face

    @contextmanager
    def timed(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started


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


def read_original(image: Image) -> bytes:
    """The image's bytes from wherever its source keeps them, at most the upload limit (+1 byte)."""
    from minio.error import S3Error

    limit = settings.FACEINDEX_MAX_UPLOAD_BYTES
    if image.source_path:
        try:
            return sources.read_folder_file(image.source_path, limit)
        except OSError as exc:  # missing, unreadable, or now a symlink
            raise SourceUnreadable("source_missing", f"cannot read {image.original_name}: {exc}")
    if image.source_bucket:
        try:
            return sources.read_s3(image.source_bucket, image.object_key, limit)
        except S3Error as exc:
            if exc.code in {"NoSuchKey", "NoSuchBucket", "AccessDenied"}:
                raise SourceUnreadable("source_missing", f"cannot read s3://{image.source_bucket}/{image.object_key}: {exc.code}")
            raise
    return storage.get_bytes(image.object_key)


def process_images(image_ids: list[int], *, worker_name: str) -> None:
    from ml.errors import ImageDecodeError
    from ml.decode import decode_image

    claimed = services.claim_images(list(image_ids), worker_name=worker_name)
    if not claimed:
        return
    to_embed: list[Work] = []
    first_of_content: dict[str, Work] = {}
    duplicates: list[tuple[Work, Work]] = []
    for image in claimed:
        work = Work(image)
        try:
            with work.timed("decode"):
                data = read_original(image)
                if len(data) > settings.FACEINDEX_MAX_UPLOAD_BYTES:
                    raise SourceUnreadable("file_too_large", f"larger than {settings.FACEINDEX_MAX_UPLOAD_BYTES} bytes")
                if not image.sha256:
                    image.sha256 = hashlib.sha256(data).hexdigest()
                    image.size_bytes = len(data)
                    Image.objects.filter(pk=image.pk).update(sha256=image.sha256, size_bytes=image.size_bytes)
                if _link_if_indexed(work, worker_name, data=data):
                    continue
                if image.sha256 in first_of_content:  # same bytes twice in one batch: index once
                    duplicates.append((work, first_of_content[image.sha256]))
                    continue
                first_of_content[image.sha256] = work
                work.decoded = decode_image(data, max_pixels=settings.FACEINDEX_MAX_PIXELS)
        except SourceUnreadable as exc:
            services.fail_image(image.pk, code=exc.code, message=str(exc))
            continue
        except ImageDecodeError as exc:
            services.fail_image(image.pk, code=exc.code, message=str(exc))
            continue
        to_embed.append(work)
    to_embed = _detect_and_embed(to_embed)
    _describe(to_embed)
    for work in to_embed:
        _write_faces(work, worker_name=worker_name)
    for work, _first in duplicates:
        if not _link_if_indexed(work, worker_name):
            # The first copy failed: this one fails for the same reason.
            first = Image.objects.get(pk=_first.image.pk)
            services.fail_image(work.image.pk, code=first.error_code or "internal_error",
                                message=first.error_message or "the same content failed in this batch")


def _detect_and_embed(batch: list[Work]) -> list[Work]:
    """Detect per image, then align and embed every face of the batch in one call.

    Mirrors FacePipeline.process_batch, split into its stages so each is timed.
    An image the detector cannot handle fails alone; the rest of the batch goes
    on. Returns the works still in the batch.
    """
    if not batch:
        return []
    pipeline = get_pipeline()
    detections, kept = [], []
    for work in batch:
        try:
            with work.timed("detect"):
                detections.append(pipeline.detect(work.decoded.pixels))
        except (ValueError, cv2.error) as exc:  # unusual geometry or pixel data for the detector
            log.warning("detector failed on image %s: %s", work.image.pk, exc)
            services.fail_image(work.image.pk, code="detector_error", message=f"face detector failed: {exc}")
            continue
        kept.append(work)
    batch = kept
    started = time.perf_counter()
    crops = [pipeline.align(w.decoded.pixels, f.landmarks) for w, faces in zip(batch, detections) for f in faces]
    embeddings = pipeline.embed_crops(crops) if crops else np.zeros((0, pipeline.embedding_dim), np.float32)
    embed_seconds = time.perf_counter() - started
    row = 0
    for work, faces in zip(batch, detections):
        # The shared embedding call is charged to images by their share of the faces.
        work.seconds["embed"] += embed_seconds * len(faces) / max(len(crops), 1)
        for face in faces:
            work.faces.append(pipeline.embedded_face(face, crops[row], embeddings[row]))
            row += 1
    return batch


def _describe(batch: list[Work]) -> None:
    """Mask state for every face; age and sex only for jobs that opted in."""
    from backend.gallery.attributes import describe_faces

    for work in batch:
        with work.timed("attributes"):
            work.attributes = describe_faces(work.decoded.pixels, work.faces, with_age_sex=wants_age_sex(work.image))


def wants_age_sex(image: Image) -> bool:
    return bool((image.job.options or {}).get("attributes"))


def _link_if_indexed(work: Work, worker_name: str, data: bytes | None = None) -> bool:
    """Link the image to this owner's earlier indexing of the same content, if any.

    A job that asks for age/sex first fills them in on the earlier faces when
    that indexing skipped them (``data``: this image's bytes, the same content).
    """
    from ml.decode import decode_image

    image = work.image
    canonical = dedup.indexed_image(image.owner_id, image.sha256, exclude_id=image.pk)
    if canonical is None:
        return False
    with transaction.atomic():
        locked = Image.objects.select_for_update().get(pk=image.pk)
        if locked.status != Image.Status.PROCESSING or locked.worker != worker_name:
            return True
        _finish_as_link(work, locked, canonical, load_pixels=lambda: decode_image(
            data, max_pixels=settings.FACEINDEX_MAX_PIXELS).pixels if data is not None else None)
    return True


def _finish_as_link(work: Work, locked: Image, canonical: dedup.Indexed, load_pixels) -> None:
    """Inside the caller's transaction, with ``locked`` claimed by this worker."""
    from backend.gallery.attributes import fill_missing_age_sex

    if wants_age_sex(locked):
        with work.timed("attributes"):
            if (pixels := load_pixels()) is not None:
                fill_missing_age_sex(canonical.image, lambda: pixels)
    new_faces = dedup.faces_new_to_job(locked.job_id, canonical)
    dedup.mark_linked(locked, canonical)
    locked.timings = {k: round(v, 5) for k, v in work.seconds.items()}
    locked.save()
    services.finish_image(locked, failed=False, faces_found=new_faces, linked=True)


def _write_faces(work: Work, *, worker_name: str) -> None:
    image, decoded, faces = work.image, work.decoded, work.faces
    with work.timed("write"):
        for ordinal, face in enumerate(faces):
            storage.put_bytes(crop_key(image, ordinal), encode_jpeg(face.crop), "image/jpeg")
    write_started = time.perf_counter()
    with transaction.atomic():
        locked = Image.objects.select_for_update().get(pk=image.pk)
        if locked.status != Image.Status.PROCESSING or locked.worker != worker_name:
            return  # another worker finished or re-claimed it meanwhile
        # Two workers may index the same bytes at once (copies of a photo in
        # different batches): the content lock makes the second wait for the
        # first's commit and then link to it instead of writing the faces twice.
        dedup.lock_content(image.owner_id, image.sha256)
        canonical = dedup.indexed_image(image.owner_id, image.sha256, exclude_id=image.pk)
        if canonical is not None:
            _finish_as_link(work, locked, canonical, load_pixels=lambda: decoded.pixels)
            keys = [crop_key(image, ordinal) for ordinal in range(len(faces))]
            transaction.on_commit(lambda: storage.delete_keys(keys))
            return
        with work.timed("match"):
            matching.configure_vector_search()
            rule = matching.match_rule(image.owner_id)  # the owner's gallery as it stands now
            matches = [matching.match_embedding(image.owner_id, face.embedding, rule=rule, probe_masked=attrs.masked)
                       for face, attrs in zip(faces, work.attributes)]
        Face.objects.filter(image=locked).delete()
        rows = []
        for ordinal, (face, match, attrs) in enumerate(zip(faces, matches, work.attributes)):
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
                    **attrs.as_fields(),
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
        # Write time without matching: the DB part here plus the crop uploads above.
        work.seconds["write"] += time.perf_counter() - write_started - work.seconds["match"]
        locked.timings = {k: round(v, 5) for k, v in work.seconds.items()}
        locked.save()
        services.finish_image(locked, failed=False, faces_found=len(rows))
        # Hooks that need this image's new faces (e.g. gallery clustering via
        # transaction.on_commit) belong here, once per written image.
        from backend.gallery.services import on_faces_indexed

        unknown_ids = [row.pk for row in rows if row.identity_id is None]
        transaction.on_commit(lambda: on_faces_indexed(image.owner_id, unknown_ids))
