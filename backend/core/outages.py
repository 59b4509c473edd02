"""Outages of the services behind the app (database, object storage, broker).

An outage is not the work's fault: work that meets one is kept and retried
once the service answers again, never failed or dropped. ``is_outage`` tells
an outage from a bug; ``wait_until_reachable`` blocks (capped exponential
backoff with jitter) until the database and storage answer, so a worker that
meets an outage stops taking new work instead of burning through its queue.
"""
from __future__ import annotations

import logging
import random
import time

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections

log = logging.getLogger(__name__)


def _outage_types() -> tuple[type[BaseException], ...]:
    import kombu.exceptions
    import psycopg
    import redis.exceptions
    import urllib3.exceptions

    return (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError,
            urllib3.exceptions.HTTPError, ConnectionError, TimeoutError,
            redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError)


def _is_outage_error(exc: BaseException) -> bool:
    from minio.error import S3Error, ServerError

    if isinstance(exc, _outage_types()):
        return True
    if isinstance(exc, ServerError):  # a 5xx answer without an S3 error body
        return True
    if isinstance(exc, S3Error):
        response = getattr(exc, "response", None)
        status = getattr(response, "status", None) or 0
        return status >= 500 or exc.code in {"ServiceUnavailable", "SlowDown", "InternalError"}
    if isinstance(exc, DatabaseError):  # psycopg's connection-level failures arrive wrapped
        return isinstance(exc.__cause__, _outage_types())
    return False


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) says a backing service is unreachable."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if _is_outage_error(exc):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def backoff_delay(attempt: int, *, base: float | None = None, cap: float | None = None) -> float:
    """Seconds before retry number ``attempt`` (0-based): doubling from ``base``, capped, with jitter.

    The jitter (half to all of the step) keeps workers that met the same
    outage from all probing again in the same instant.
    """
    base = settings.FACEINDEX_OUTAGE_BACKOFF_S if base is None else base
    cap = settings.FACEINDEX_OUTAGE_BACKOFF_CAP_S if cap is None else cap
    step = min(cap, base * (2 ** min(attempt, 30)))
    return step * random.uniform(0.5, 1.0)


def _database_reachable() -> bool:
    connection = connections["default"]
    try:
        connection.close()  # a connection from before the outage is dead even if the server is back
    except DatabaseError:
        pass
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False
    finally:
        try:
            connection.close()
        except DatabaseError:
            pass


def _storage_reachable() -> bool:
    from . import storage

    return storage.reachable()


def unreachable() -> list[str]:
    """Names of the services the work needs that do not answer now."""
    down = []
    if not _database_reachable():
        down.append("database")
    if not _storage_reachable():
        down.append("storage")
    return down


def wait_until_reachable(*, timeout: float | None = None, sleep=time.sleep) -> list[str]:
    """Block until the database and storage answer, at most ``timeout`` seconds.

    Returns what is still down ([] when everything answers).
    """
    timeout = settings.FACEINDEX_OUTAGE_WAIT_S if timeout is None else timeout
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        down = unreachable()
        remaining = deadline - time.monotonic()
        if not down or remaining <= 0:
            return down
        delay = min(backoff_delay(attempt), remaining)
        log.warning("%s unreachable; probing again in %.1f s", " and ".join(down), delay)
        sleep(delay)
        attempt += 1
