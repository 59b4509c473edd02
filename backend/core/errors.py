"""One error shape for the whole API: {"error": {"code", "message", "field"}}.

Every error answer has it, 500 included (handler400/403/404/500 below serve
the paths DRF does not), and none carries settings or a traceback. A service
the request needs being down (database, object storage) is a 503 the client
may retry, with nothing half-saved.
"""
import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.core.exceptions import TooManyFilesSent
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from . import outages

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """A business-rule violation raised by a service; maps to a 4xx response."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, code: str, message: str, *, field: str | None = None, status_code: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        if status_code is not None:
            self.status_code = status_code


class NotFound(ServiceError):
    status_code = status.HTTP_404_NOT_FOUND


class Conflict(ServiceError):
    status_code = status.HTTP_409_CONFLICT


def _first_validation_error(detail) -> tuple[str | None, str]:
    if isinstance(detail, dict):
        for field, value in detail.items():
            _, message = _first_validation_error(value)
            return (None if field == "non_field_errors" else field), message
    if isinstance(detail, list) and detail:
        return _first_validation_error(detail[0])
    return None, str(detail)


def error_body(code: str, message: str, field: str | None = None) -> dict:
    return {"error": {"code": code, "message": message, "field": field}}


# Django refuses these while parsing the request: a 4xx with its own code.
SUSPICIOUS_REQUESTS = [
    (TooManyFilesSent, "too_many_files", "too many files in one request", status.HTTP_400_BAD_REQUEST),
    (TooManyFieldsSent, "too_many_fields", "too many form fields in one request", status.HTTP_400_BAD_REQUEST),
    (RequestDataTooBig, "request_too_large", "the request body is too large",
     status.HTTP_413_REQUEST_ENTITY_TOO_LARGE),
]


def exception_handler(exc, context):
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.code, exc.message, exc.field), status=exc.status_code)
    if isinstance(exc, SuspiciousOperation):
        for kind, code, message, status_code in SUSPICIOUS_REQUESTS:
            if isinstance(exc, kind):
                return Response(error_body(code, f"{message}: {exc}"), status=status_code)
        return Response(error_body("bad_request", "the request was refused as malformed"), status=400)
    if not isinstance(exc, exceptions.APIException) and outages.is_outage(exc):
        log.warning("answering 503: %s: %s", type(exc).__name__, exc)
        return Response(error_body("service_unavailable", "a service this request needs is unavailable; "
                                                          "nothing was saved, retry later"),
                        status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "5"})
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        field, message = _first_validation_error(exc.detail)
        response.data = error_body("invalid", message, field)
    else:
        code = getattr(exc, "default_code", "error")
        response.data = error_body(code, str(getattr(exc, "detail", exc)))
    return response


# -- Django's own error views (urls.py handler400/403/404/500): the same shape --------

def bad_request(request, exception=None):
    return JsonResponse(error_body("bad_request", "the request was refused as malformed"), status=400)


def permission_denied(request, exception=None):
    return JsonResponse(error_body("permission_denied", "you do not have permission to do this"), status=403)


def page_not_found(request, exception=None):
    return JsonResponse(error_body("not_found", "no such resource"), status=404)


def server_error(request):
    return JsonResponse(error_body("internal_error", "the server failed to answer this request; it was logged"),
                        status=500)


def csrf_failure(request, reason=""):
    return JsonResponse(error_body("csrf_failed", "CSRF check failed; send the token or use token auth"), status=403)
