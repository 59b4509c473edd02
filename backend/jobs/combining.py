"""Batches assembled from several messages on a worker whose models run batches on a device (torch).

Small jobs send small messages (a job of 3 photos is one message of 3), and a
GPU fed 3 photos at a time idles. So a batch task that starts on such a worker
with fewer than FACEINDEX_GPU_BATCH_IMAGES images takes more waiting batch
messages from its own queue (kombu ``basic_get``, unacked until done) for up
to FACEINDEX_GPU_BATCH_WAIT_MS, and the task runs all their images as one
device batch.

Why nothing is lost or done twice: the combined images are claimed at once
(processing.process_images), exactly like one message's; a taken message is
acked only after its images are written, failed, or moved into the task's
retry message. A worker killed while holding taken messages leaves their
images PROCESSING under its name or PENDING with no waiting message, and
requeue_orphans re-sends both at its restart; the taken messages themselves
come back after the visibility timeout, and claiming skips what is finished.
Any other error puts them back in the queue untouched. Only first attempts
combine: a retried message (it carries the images of the failed combined
batch) runs alone, so a bad image fails at most one batch's worth, as before.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from celery import current_app
from celery.exceptions import Retry
from django.conf import settings

from .broker import combinable

log = logging.getLogger(__name__)

POLL_S = 0.005  # between reads of an empty queue while waiting for more messages


@dataclass
class Taken:
    message: object  # kombu Message, unacked
    image_ids: list[int]


@contextmanager
def more_images(queue: str | None, have: int) -> Iterator[list[Taken]]:
    """Messages taken from ``queue`` to fill a batch that holds ``have`` images (none if it is full or ``queue`` unknown).

    Acked when the block ends normally or by the task's retry (whose message
    carries their images); any other exception puts them back in the queue.
    """
    limit = settings.FACEINDEX_GPU_BATCH_IMAGES
    if not queue or have >= limit:
        yield []
        return
    with current_app.connection_for_write() as connection:
        channel = connection.default_channel
        taken = _take(channel, queue, have, limit, settings.FACEINDEX_GPU_BATCH_WAIT_MS / 1000)
        try:
            yield taken
        except Retry:
            _settle(taken, ack=True)
            raise
        except BaseException:
            _settle(taken, ack=False)
            raise
        _settle(taken, ack=True)


def _take(channel, queue: str, have: int, limit: int, wait_s: float) -> list[Taken]:
    """Take the messages at the head of ``queue`` while they fit; stop at the first that does not.

    The head is looked at before it is taken, so a message that is not ours to
    combine (another task, a retry, one due later, one too big) stays where it is.
    """
    taken: list[Taken] = []
    deadline = time.monotonic() + wait_s
    while have < limit:
        raw = channel.client.lindex(queue, -1)  # kombu's Redis queues are taken from the right
        if raw is None:
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
            continue
        head = combinable(raw)
        if head is None or have + len(head[1]) > limit:
            break
        message = channel.basic_get(queue, no_ack=False)
        if message is None:
            continue
        if message.headers.get("id") != head[0]:
            # Another worker took the one looked at: this one goes back (to the far end) and the batch runs as it is.
            message.reject(requeue=True)
            break
        taken.append(Taken(message, head[1]))
        have += len(head[1])
    return taken


def _settle(taken: list[Taken], *, ack: bool) -> None:
    for item in taken:
        try:
            item.message.ack() if ack else item.message.reject(requeue=True)
        except Exception:  # the broker is away: the channel's close, or else the visibility timeout, returns it
            log.warning("could not %s a combined message", "ack" if ack else "requeue", exc_info=True)
