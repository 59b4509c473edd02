"""Request-level guards around the body: a size cap before any view reads it, a bounded drain after."""
from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse, UnreadablePostError

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


class UnreadBodyDrainMiddleware:
    """Read and discard the request body a response left unread, up to FACEINDEX_DRAIN_UNREAD_BODY_BYTES.

    A view may answer without reading the body: a throttle's 429, a 401/403/404
    before parsing. gunicorn 27 then drains at most 64 KiB of it and closes the
    keep-alive connection its response had announced, and a client reusing
    that connection is reset (benchmarks/bench_load.py counted 588 resets in
    60 s with the default throttles). `Connection: close` from the app does not
    help: gunicorn drops that header. Reading the rest here, in chunks that are
    thrown away, leaves the connection usable.

    Django marks a started read in HttpRequest._read_started (set by
    request.read()); request.read() itself only returns what nobody has
    consumed yet (a LimitedStream capped at Content-Length, or the buffer a
    request.body left), so draining through it is right whether the body was
    never touched or a parser stopped half-way.

    Bodies declared larger than the bound are left alone: reading, say, a
    200 MB upload only to say 429 would hold a thread for the whole transfer,
    so gunicorn closes that connection and the client opens a new one. The
    413 of RequestSizeLimitMiddleware (placed before this one) never reaches
    here, for the same reason. A body without Content-Length (chunked) is
    invisible to Django (its stream reads nothing) and stays gunicorn's to
    drain or close.
    """

    CHUNK_BYTES = 64 * 1024

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return response
        if 0 < length <= settings.FACEINDEX_DRAIN_UNREAD_BODY_BYTES:
            try:
                while request.read(self.CHUNK_BYTES):
                    pass
            except UnreadablePostError:  # the client went away: nothing left to keep open
                pass
        return response
