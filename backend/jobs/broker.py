"""What the broker still holds: image ids (and listing jobs) named by queued or unacked messages.

Used by the lost-message sweep so that a long backlog is not re-sent just
because it is old. Reads Celery's Redis transport layout (kombu): the queue
is a list of JSON messages, unacked deliveries a hash of [message, exchange,
routing_key]; message bodies are base64 JSON ``[args, kwargs, embed]``.
"""
from __future__ import annotations

import base64
import json
from contextlib import contextmanager

from celery import current_app
from django.conf import settings

from .routing import queues_with_live_consumers

PROCESS_TASKS = {"faceindex.process_batch", "faceindex.process_image"}
SCAN_CHUNK = 1000


def _task_args(raw: bytes | str, tasks: set[str]) -> list | None:
    """The positional arguments of a message for one of ``tasks``, else None."""
    message = json.loads(raw)
    if isinstance(message, list):  # unacked entry: [message, exchange, routing_key]
        message = message[0]
    if message.get("headers", {}).get("task") not in tasks:
        return None
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return json.loads(body)[0]


def _image_ids(raw: bytes | str) -> list[int]:
    args = _task_args(raw, PROCESS_TASKS)
    if args is None:
        return []
    first = args[0] if args else []
    return list(first) if isinstance(first, list) else [first]


def combinable(raw: bytes | str) -> tuple[str, list[int]] | None:
    """(task id, image ids) of a raw message a device batch may take in (jobs.combining), else None.

    Only first attempts of batch tasks, due now: a retry runs alone, and a
    message with an ETA waits in its worker until then.
    """
    headers = json.loads(raw).get("headers", {})
    if headers.get("retries") or headers.get("eta") or headers.get("task") not in PROCESS_TASKS:
        return None
    return headers.get("id"), _image_ids(raw)


@contextmanager
def _broker():
    """(Redis client, default queue name) on a pooled connection."""
    with current_app.connection_for_read() as connection:
        yield connection.default_channel.client, current_app.conf.task_default_queue or "celery"


def _waiting_messages(client, queue: str):
    """Raw messages waiting in ``queue``, read a page at a time (the backlog may be long)."""
    length = client.llen(queue)
    for start in range(0, length, SCAN_CHUNK):
        yield from client.lrange(queue, start, start + SCAN_CHUNK - 1)


def _waiting_image_ids(client, default_queue: str) -> set[int]:
    return {i for queue in queues_with_live_consumers(client, default_queue)
            for raw in _waiting_messages(client, queue) for i in _image_ids(raw)}


def waiting_image_ids() -> set[int]:
    """Image ids named by messages waiting in a queue some live worker consumes (routing)."""
    with _broker() as (client, queue):
        return _waiting_image_ids(client, queue)


def broker_image_ids() -> tuple[set[int], set[int]]:
    """(ids named by messages waiting in the queue, ids named by unacked deliveries)."""
    with _broker() as (client, queue):
        waiting = _waiting_image_ids(client, queue)
        unacked = {i for raw in client.hvals("unacked") for i in _image_ids(raw)}
    return waiting, unacked


def queued_image_ids() -> set[int]:
    """Every image id some message in the broker still names (queued or unacked)."""
    waiting, unacked = broker_image_ids()
    return waiting | unacked


LIST_TASK = "faceindex.list_source"


def broker_listing_jobs() -> tuple[set[int], set[int]]:
    """(job ids named by listing tasks waiting in their queue, job ids named by unacked ones)."""
    with _broker() as (client, _default_queue):
        waiting = {int(args[0]) for raw in _waiting_messages(client, settings.FACEINDEX_LISTING_QUEUE)
                   if (args := _task_args(raw, {LIST_TASK}))}
        unacked = {int(args[0]) for raw in client.hvals("unacked") if (args := _task_args(raw, {LIST_TASK}))}
    return waiting, unacked
