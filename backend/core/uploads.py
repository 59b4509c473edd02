"""Uploaded files as the services take them, whatever they came from (a request, a folder, bytes)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

from backend.core.errors import ServiceError


@dataclass(frozen=True)
class Upload:
    name: str
    fileobj: BinaryIO
    size: int | None = None

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> "Upload":
        return cls(name, io.BytesIO(data), len(data))


def uploads_from_request(request, field: str = "files") -> list[Upload]:
    files = request.FILES.getlist(field) or request.FILES.getlist("file")
    if not files:
        raise ServiceError("no_files", f"send one or more files as multipart field '{field}'", field=field)
    return [Upload(f.name, f, f.size) for f in files]
