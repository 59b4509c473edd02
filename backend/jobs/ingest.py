"""Turning uploads (single files, zip archives) into named blobs, safely."""
from __future__ import annotations

import hashlib
import posixpath
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from django.conf import settings

from backend.core.errors import ServiceError

ZIP_MAGIC = b"PK\x03\x04"
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif", ".avif"}


@dataclass(frozen=True)
class Blob:
    name: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def extension(self) -> str:
        ext = posixpath.splitext(self.name.lower())[1]
        return ext if ext in IMAGE_EXTENSIONS else ".bin"


def is_zip(name: str, head: bytes) -> bool:
    return name.lower().endswith(".zip") or head.startswith(ZIP_MAGIC)


def _is_unsafe_member(name: str) -> bool:
    normalized = name.replace("\\", "/")
    return normalized.startswith("/") or ".." in normalized.split("/") or (len(normalized) > 1 and normalized[1] == ":")


def _is_junk_member(name: str) -> bool:
    base = posixpath.basename(name)
    return name.startswith("__MACOSX/") or base.startswith(".") or base in {"Thumbs.db", "desktop.ini"}


def iter_zip(name: str, fileobj: BinaryIO) -> Iterator[Blob]:
    """Yield the files of a zip archive, refusing zip-slip paths and bombs.

    Checks run on the central directory before anything is extracted, and the
    real byte counts are checked again while reading (headers can lie).
    """
    try:
        archive = zipfile.ZipFile(fileobj)
    except zipfile.BadZipFile as exc:
        raise ServiceError("zip_corrupt", f"{name}: not a readable zip archive ({exc})", field="files")
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        unsafe = [m.filename for m in members if _is_unsafe_member(m.filename)]
        if unsafe:
            raise ServiceError("zip_unsafe_path", f"{name}: refused, entry path escapes the archive: {unsafe[0]!r}", field="files")
        members = [m for m in members if not _is_junk_member(m.filename)]
        if len(members) > settings.FACEINDEX_ZIP_MAX_ENTRIES:
            raise ServiceError("zip_too_many_entries", f"{name}: {len(members)} entries, limit {settings.FACEINDEX_ZIP_MAX_ENTRIES}", field="files")
        declared = sum(m.file_size for m in members)
        compressed = sum(m.compress_size for m in members) or 1
        if declared > settings.FACEINDEX_ZIP_MAX_TOTAL_BYTES:
            raise ServiceError("zip_too_large", f"{name}: expands to {declared} bytes, limit {settings.FACEINDEX_ZIP_MAX_TOTAL_BYTES}", field="files")
        if declared / compressed > settings.FACEINDEX_ZIP_MAX_RATIO and declared > 10 * 1024 * 1024:
            raise ServiceError("zip_bomb", f"{name}: compression ratio {declared / compressed:.0f}:1 exceeds {settings.FACEINDEX_ZIP_MAX_RATIO}:1", field="files")
        for member in members:
            if member.file_size > settings.FACEINDEX_MAX_UPLOAD_BYTES:
                raise ServiceError("file_too_large", f"{name}/{member.filename}: {member.file_size} bytes, limit {settings.FACEINDEX_MAX_UPLOAD_BYTES}", field="files")
            try:
                with archive.open(member) as entry:
                    data = entry.read(settings.FACEINDEX_MAX_UPLOAD_BYTES + 1)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:  # bad CRC, truncated, odd method
                raise ServiceError("zip_corrupt", f"{name}/{member.filename}: unreadable entry ({exc})", field="files")
            if len(data) > settings.FACEINDEX_MAX_UPLOAD_BYTES:
                raise ServiceError("zip_bomb", f"{name}/{member.filename}: expands beyond its declared size", field="files")
            yield Blob(member.filename, data)


def iter_upload(name: str, fileobj: BinaryIO, size: int | None = None) -> Iterator[Blob]:
    head = fileobj.read(4)
    fileobj.seek(0)
    if is_zip(name, head):
        yield from iter_zip(name, fileobj)
        return
    if size is not None and size > settings.FACEINDEX_MAX_UPLOAD_BYTES:
        raise ServiceError("file_too_large", f"{name}: {size} bytes, limit {settings.FACEINDEX_MAX_UPLOAD_BYTES}", field="files")
    data = fileobj.read(settings.FACEINDEX_MAX_UPLOAD_BYTES + 1)
    if len(data) > settings.FACEINDEX_MAX_UPLOAD_BYTES:
        raise ServiceError("file_too_large", f"{name}: larger than {settings.FACEINDEX_MAX_UPLOAD_BYTES} bytes", field="files")
    yield Blob(name, data)
