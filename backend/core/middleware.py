"""Request-level guards that run before any view reads the body."""
from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse

from .errors import error_body


class RequestSizeLimitMiddleware:
    """Refuse a request whose declared body exceeds FACEINDEX_MAX_REQUEST_BYTES (413), unread.

    Django's own DATA_UPLOAD_MAX_MEMORY_SIZE leaves file uploads out; this cap
    covers the whole body. Larger archives belong in an import (S3 prefix or
    server folder), which reads them in the background.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.FACEINDEX_MAX_REQUEST_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse(error_body("bad_request", "invalid Content-Length header"), status=400)
        if limit and length > limit:
            return JsonResponse(
                error_body("request_too_large", f"the request body is {length} bytes, limit {limit}; "
                                                "import large archives from S3 or a server folder instead"),
                status=413)
        return self.get_response(request)
