from backend.core.errors import ServiceError
from backend.jobs.services import Upload


def uploads_from_request(request, field: str = "files") -> list[Upload]:
    files = request.FILES.getlist(field) or request.FILES.getlist("file")
    if not files:
        raise ServiceError("no_files", f"send one or more files as multipart field '{field}'", field=field)
    return [Upload(f.name, f, f.size) for f in files]
