"""Reading request input that DRF serializers do not cover: query-string ids, the body's shape."""
from __future__ import annotations

from .errors import ServiceError

MAX_ID = 2**63 - 1  # bigint primary keys


def id_param(request, name: str) -> int | None:
    """The query parameter ``name`` as an object id; None when absent or empty, a 400 when not an id."""
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 < value <= MAX_ID:
        raise ServiceError("invalid", f"{name} must be a positive integer id, not {raw[:40]!r}", field=name)
    return value


def body_object(request):
    """The request body, which must be a JSON object (or a form); a 400 otherwise."""
    if not hasattr(request.data, "get"):
        raise ServiceError("invalid", f"the request body must be a JSON object, not {type(request.data).__name__}")
    return request.data
