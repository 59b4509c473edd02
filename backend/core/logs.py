"""Structured logs: one JSON object per line, with the ids of the work in hand.

The API tags each request with an id (RequestContextMiddleware); a Celery task
adds its task id by itself (read from celery's current task), and code that
works on a job or an image binds those ids for the lines it logs
(``with log_context(job_id=..., image_ids=...)``). ``extra={"image_id": ...}``
on a single call works too.
"""
from __future__ import annotations

import contextvars
import json
import logging
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone

from celery import current_task

CONTEXT_FIELDS = ("request_id", "task_id", "job_id", "image_id", "image_ids", "delivery_id", "owner_id")
_context: contextvars.ContextVar[dict] = contextvars.ContextVar("faceindex_log_context", default={})


@contextmanager
def log_context(**fields):
    """Add ``fields`` to every log record made inside the block (nested blocks add up)."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound ids, and the running Celery task's id, onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        task = current_task
        if task and getattr(task.request, "id", None) and not hasattr(record, "task_id"):
            record.task_id = task.request.id
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({name: getattr(record, name) for name in CONTEXT_FIELDS if hasattr(record, name)})
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RequestContextMiddleware:
    """Binds a request id (the client's X-Request-ID, or a new one) for the request's log lines."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        with log_context(request_id=request_id[:64]):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id[:64]
        return response
