"""/healthz (the process answers) and /readyz (it can do its work: database, broker, storage, models).

Answered by a middleware placed first, before host validation, sessions and
authentication: probes call the process by its container address, which need
not be in ALLOWED_HOSTS, and carry no credentials. Neither reveals more
than each check's name and status.
"""
from __future__ import annotations

import json
import logging

from celery import current_app
from django.conf import settings
from django.db import connection
from django.http import HttpResponse

from backend.core import storage
from backend.core.pipeline import get_pipeline

log = logging.getLogger(__name__)


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    with current_app.connection_for_read() as broker:
        broker.ensure_connection(max_retries=1, timeout=2)


def _storage() -> None:
    if not storage.client().bucket_exists(settings.S3_BUCKET):
        raise RuntimeError(f"bucket {settings.S3_BUCKET} missing")


def _models() -> None:
    # Loads them on the first probe (then cached): the API answers search and
    # enrollment with them, so it is not ready before they load.
    get_pipeline()


CHECKS = {"database": _database, "broker": _broker, "storage": _storage, "models": _models}


def readiness() -> dict[str, str]:
    """Each check's result: "ok" or the error's type (details go to the log, not the answer)."""
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # any failure means not ready; say which check, log why
            log.warning("readiness check %s failed", name, exc_info=True)
            results[name] = f"failed: {type(exc).__name__}"
    return results


def _json(status: int, body: dict) -> HttpResponse:
    return HttpResponse(json.dumps(body), status=status, content_type="application/json")


class HealthCheckMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path == "/healthz":
            return _json(200, {"status": "ok"})
        if request.path == "/readyz":
            checks = readiness()
            ready = all(result == "ok" for result in checks.values())
            return _json(200 if ready else 503, {"status": "ok" if ready else "unavailable", "checks": checks})
        return self.get_response(request)
