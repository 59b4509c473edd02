"""Where an image's bytes live: object keys of originals and face crops, and reading an original back.

One place for the key layouts, shared by the upload path, the worker and the
gallery's manual tagging.
"""
from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from minio.error import S3Error

from backend.core import storage

from . import sources
from .ingest import Blob
from .models import Image


class SourceUnreadable(Exception):
    """The image's bytes are gone or refused (missing S3 object, file outside the roots)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def original_key(owner_id: int, blob: Blob, when=None) -> str:
    when = when or timezone.now()
    return f"{owner_id}/{when:%Y/%m/%d}/{blob.sha256}{blob.extension}"


def crop_key(image: Image, ordinal: int) -> str:
    # Deterministic: a re-run of the same image overwrites, never duplicates.
    return f"{image.owner_id}/crops/{image.pk}/{ordinal}.jpg"


def read_original(image: Image) -> bytes:
    """The image's bytes from wherever its source keeps them, at most the upload limit (+1 byte)."""
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
