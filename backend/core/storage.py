"""Object storage through the minio SDK (SeaweedFS here, MinIO/S3 in production)."""
from __future__ import annotations

import io
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error


def _minio(**options) -> Minio:
    return Minio(settings.S3_ENDPOINT, access_key=settings.S3_ACCESS_KEY, secret_key=settings.S3_SECRET_KEY,
                 secure=settings.S3_SECURE, region=settings.S3_REGION, **options)


@lru_cache(maxsize=1)
def client() -> Minio:
    return _minio()


@lru_cache(maxsize=1)
def _probe_client() -> Minio:
    """A client without the SDK's retries and with short timeouts: for asking "is it up?"."""
    import urllib3

    return _minio(
        http_client=urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=5), retries=urllib3.Retry(total=0)),
    )


def reachable() -> bool:
    """True when the bucket answers an authenticated request."""
    try:
        _probe_client().bucket_exists(settings.S3_BUCKET)
        return True
    except Exception:  # refused, reset, 5xx while the server starts: all mean "not yet"
        return False


def ensure_bucket(bucket: str | None = None) -> None:
    bucket = bucket or settings.S3_BUCKET
    if not client().bucket_exists(bucket):
        try:
            client().make_bucket(bucket)
        except S3Error as exc:  # a concurrent process created it first
            if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise


def put_bytes(key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    client().put_object(settings.S3_BUCKET, key, io.BytesIO(data), len(data), content_type=content_type)


def put_file(key: str, fileobj, length: int, content_type: str = "application/octet-stream") -> None:
    client().put_object(settings.S3_BUCKET, key, fileobj, length, content_type=content_type)


def get_bytes(key: str, bucket: str | None = None) -> bytes:
    response = client().get_object(bucket or settings.S3_BUCKET, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def delete_keys(keys: list[str]) -> None:
    keys = [k for k in keys if k]
    if not keys:
        return
    errors = list(client().remove_objects(settings.S3_BUCKET, (DeleteObject(k) for k in keys)))
    if errors:
        raise RuntimeError(f"could not delete {len(errors)} objects: {errors[0]}")


def list_keys(prefix: str = "", bucket: str | None = None) -> list[str]:
    return [o.object_name for o in client().list_objects(bucket or settings.S3_BUCKET, prefix=prefix, recursive=True)]


def presigned_url(key: str | None, *, seconds: int | None = None) -> str | None:
    """A GET URL for one object, valid `seconds` (default S3_PRESIGN_SECONDS); signed locally, no request."""
    if not key:
        return None
    return client().presigned_get_object(
        settings.S3_BUCKET, key, expires=timedelta(seconds=seconds or settings.S3_PRESIGN_SECONDS)
    )
