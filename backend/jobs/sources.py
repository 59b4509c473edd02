"""Import sources read in place: an S3 prefix or a server-side folder.

Nothing is read into memory at ingest: sources are listed lazily and each
file becomes an Image row that points at it. The worker reads the bytes when
it processes the image (and only then computes the content hash).

S3 objects are referenced, not copied into our bucket: an archive can be far
larger than we want to duplicate, and the worker needs the bytes only once.
If the source object changes or disappears before processing, that image
fails with a reason; crops of found faces are always stored in our bucket.
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from django.conf import settings

from backend.core.errors import ServiceError

from .ingest import IMAGE_EXTENSIONS, _is_junk_member


@dataclass(frozen=True)
class SourceFile:
    name: str  # shown to the user: path relative to the imported prefix/folder
    size: int
    bucket: str = ""  # S3 sources
    key: str = ""
    path: str = ""  # folder sources: absolute, resolved path
    refused: str = ""  # "code: reason" for a listed file that must not be read (becomes a failed image)


@dataclass(frozen=True)
class Source:
    kind: str  # "s3" | "folder"
    uri: str
    bucket: str = ""
    prefix: str = ""
    folder: Path | None = None
    root: Path | None = None  # the allow-listed root that contains folder


def _wanted(name: str) -> bool:
    return posixpath.splitext(name.lower())[1] in IMAGE_EXTENSIONS and not _is_junk_member(name)


# -- S3 ----------------------------------------------------------------------

@lru_cache(maxsize=1)
def import_client():
    from minio import Minio

    return Minio(settings.FACEINDEX_IMPORT_S3_ENDPOINT, access_key=settings.FACEINDEX_IMPORT_S3_ACCESS_KEY,
                 secret_key=settings.FACEINDEX_IMPORT_S3_SECRET_KEY, secure=settings.FACEINDEX_IMPORT_S3_SECURE,
                 region=settings.FACEINDEX_IMPORT_S3_REGION)


def _s3_source(uri: str) -> Source:
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ServiceError("invalid_source", "s3 source must look like s3://bucket/prefix", field="source")
    allowed = settings.FACEINDEX_IMPORT_S3_BUCKETS
    if bucket == settings.S3_BUCKET or not ("*" in allowed or bucket in allowed):
        raise ServiceError("source_not_allowed", f"bucket {bucket!r} is not allowed for imports", field="source",
                           status_code=403)
    if prefix and not prefix.endswith("/"):
        prefix += "/"  # "photos" must not also match "photos-private/"
    try:
        exists = import_client().bucket_exists(bucket)
    except Exception as exc:  # credentials, endpoint
        raise ServiceError("source_unreachable", f"cannot reach bucket {bucket!r}: {exc}", field="source",
                           status_code=502)
    if not exists:
        raise ServiceError("source_not_found", f"bucket {bucket!r} does not exist", field="source", status_code=404)
    return Source("s3", f"s3://{bucket}/{prefix}", bucket=bucket, prefix=prefix)


def _iter_s3(source: Source, after: str = "") -> Iterator[SourceFile]:
    # list_objects pages through the listing (1,000 keys per request), in key
    # order, so a listing resumes after the last key it wrote.
    for obj in import_client().list_objects(source.bucket, prefix=source.prefix, recursive=True,
                                            start_after=after or None):
        if obj.is_dir or not _wanted(obj.object_name):
            continue
        yield SourceFile(obj.object_name[len(source.prefix):], obj.size or 0, bucket=source.bucket, key=obj.object_name)


def read_s3(bucket: str, key: str, limit: int) -> bytes:
    response = import_client().get_object(bucket, key)
    try:
        return response.read(limit + 1)
    finally:
        response.close()
        response.release_conn()


# -- server-side folders ---------------------------------------------------------

def allowed_roots() -> list[Path]:
    return [Path(os.path.realpath(root)) for root in settings.FACEINDEX_IMPORT_ROOTS]


def root_containing(path: str | Path) -> Path | None:
    """The allow-listed root that contains ``path`` once every symlink and `..` is resolved."""
    resolved = Path(os.path.realpath(path))
    for root in allowed_roots():
        if resolved == root or root in resolved.parents:
            return root
    return None


def _folder_source(uri: str) -> Source:
    raw = uri[len("file://"):] if uri.startswith("file://") else uri
    if not os.path.isabs(raw):
        raise ServiceError("invalid_source", "a folder source must be an absolute path", field="source")
    root = root_containing(raw)
    if root is None:
        raise ServiceError("source_not_allowed", f"{raw} is not under an allowed import root", field="source",
                           status_code=403)
    folder = Path(os.path.realpath(raw))
    if not folder.is_dir():
        raise ServiceError("source_not_found", f"{raw} is not a folder", field="source", status_code=404)
    return Source("folder", str(folder), folder=folder, root=root)


def _iter_folder(source: Source) -> Iterator[SourceFile]:
    # Sorted at every level: the same tree lists in the same order, so a
    # listing resumes by skipping the files it already wrote.
    for dirpath, dirnames, filenames in os.walk(source.folder, followlinks=False):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            relative = str(path.relative_to(source.folder))
            if not _wanted(relative):
                continue
            resolved = Path(os.path.realpath(path))
            if not (source.root in resolved.parents):
                # Listed (so the job reports it) but never read.
                yield SourceFile(relative, 0, refused="source_path_escapes: links outside the allowed import root")
                continue
            if not resolved.is_file():
                continue
            yield SourceFile(relative, resolved.stat().st_size, path=str(resolved))


def read_folder_file(path: str, limit: int) -> bytes:
    """Read a listed file. The path was resolved and checked against the roots at
    listing time; refusing any path that no longer resolves to itself (a
    component swapped for a symlink since) keeps it inside its root, so
    workers need the roots mounted at the same paths but no allow-list of their own."""
    if os.path.realpath(path) != path:
        raise PermissionError(f"{path} now goes through a symbolic link")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        return handle.read(limit + 1)


# -- entry points ----------------------------------------------------------------

def parse_source(uri: str) -> Source:
    if not isinstance(uri, str):
        raise ServiceError("invalid_source", "source must be a string: s3://bucket/prefix or an absolute server path",
                           field="source")
    uri = uri.strip()
    if uri.startswith("s3://"):
        return _s3_source(uri)
    if uri.startswith("file://") or uri.startswith("/"):
        return _folder_source(uri)
    raise ServiceError("invalid_source", "source must be s3://bucket/prefix or an absolute server path", field="source")


def source_for_job(job) -> Source:
    """The source a job was submitted with, as checked then (the background listing's view)."""
    if job.source == "s3":
        bucket, _, prefix = job.source_uri[len("s3://"):].partition("/")
        return Source("s3", job.source_uri, bucket=bucket, prefix=prefix)
    return Source("folder", job.source_uri, folder=Path(job.source_uri), root=Path(job.source_root))


def iter_source(source: Source, *, after: str = "", skip: int = 0) -> Iterator[SourceFile]:
    """Files of the source in a stable order: S3 keys after ``after``; folders less the first ``skip`` files."""
    if source.kind == "s3":
        yield from _iter_s3(source, after)
        return
    for index, found in enumerate(_iter_folder(source)):
        if index >= skip:
            yield found
