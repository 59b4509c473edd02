"""What the broker still holds: image ids named by queued or unacked messages.

Used by the lost-message sweep so that a long backlog is not re-sent just
because it is old. Reads Celery's Redis transport layout (kombu): the queue
is a list of JSON messages, unacked deliveries a hash of [message, exchange,
routing_key]; message bodies are base64 JSON ``[args, kwargs, embed]``.
"""
from __future__ import annotations

import base64
import json

PROCESS_TASKS = {"faceindex.process_batch", "faceindex.process_image"}
SCAN_CHUNK = 1000


def _image_ids(raw: bytes | str) -> list[int]:
    message = json.loads(raw)
    if isinstance(message, list):  # unacked entry: [message, exchange, routing_key]
        message = message[0]
    if message.get("headers", {}).get("task") not in PROCESS_TASKS:
        return []
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = json.loads(body)[0]
    first = args[0] if args else []
    return list(first) if isinstance(first, list) else [first]


def broker_image_ids() -> tuple[set[int], set[int]]:
    """(ids named by messages waiting in the queue, ids named by unacked deliveries)."""
    from workers.celery_app import app

    waiting: set[int] = set()
    unacked: set[int] = set()
    queue = app.conf.task_default_queue or "celery"
    with app.connection_for_read() as connection:
        client = connection.default_channel.client
        length = client.llen(queue)
        for start in range(0, length, SCAN_CHUNK):
            for raw in client.lrange(queue, start, start + SCAN_CHUNK - 1):
                waiting.update(_image_ids(raw))
        for raw in client.hvals("unacked"):
            unacked.update(_image_ids(raw))
    return waiting, unacked


def queued_image_ids() -> set[int]:
    """Every image id some message in the broker still names (queued or unacked)."""
    waiting, unacked = broker_image_ids()
    return waiting | unacked
