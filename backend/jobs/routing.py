"""Which queue a batch of images goes to: the GPU queue while a GPU worker is alive, else the CPU queue.

How "alive" is decided: a worker whose face pipeline runs on a CUDA device
(FACEINDEX_DEVICE) writes ``faceindex:gpu-worker:<node name>`` into Redis
every HEARTBEAT_S seconds with a TTL of HEARTBEAT_TTL_S; ``enqueue_images``
looks for any such key (one SCAN, cached for CACHE_S in the process). GPU
workers consume the GPU queue *and* the CPU queue (so they also help with
CPU-routed work); CPU workers never take from the GPU queue.

GPU batches are bigger (FACEINDEX_GPU_BATCH_SIZE images per message) so the
GPU is not fed a few photos at a time. If the last GPU worker dies, its
heartbeat expires within HEARTBEAT_TTL_S: new work goes to the CPU queue, and
the images of messages still waiting in the GPU queue stop counting as queued
(``queues_with_live_consumers``), so the lost-message sweep re-sends them to
the CPU queue; a GPU worker that comes back later skips what is finished.
"""
from __future__ import annotations

import time

from django.conf import settings

GPU_WORKER_KEY_PREFIX = "faceindex:gpu-worker:"
HEARTBEAT_S = 10
HEARTBEAT_TTL_S = 3 * HEARTBEAT_S
CACHE_S = 5.0

_cache: dict[str, tuple[float, bool]] = {}


def gpu_worker_alive(client) -> bool:
    cached = _cache.get("alive")
    now = time.monotonic()
    if cached is not None and now - cached[0] < CACHE_S:
        return cached[1]
    alive = next(iter(client.scan_iter(match=GPU_WORKER_KEY_PREFIX + "*", count=100)), None) is not None
    _cache["alive"] = (now, alive)
    return alive


def forget_cached_state() -> None:
    _cache.clear()


def route_for_images(client) -> tuple[str | None, int]:
    """(queue name or None for the default CPU queue, images per message)."""
    if gpu_worker_alive(client):
        return settings.FACEINDEX_GPU_QUEUE, settings.FACEINDEX_GPU_BATCH_SIZE
    return None, settings.FACEINDEX_BATCH_SIZE


def queues_with_live_consumers(client, default_queue: str) -> list[str]:
    """The queues whose waiting messages some worker will take: the CPU queue, and the GPU queue while a GPU worker lives."""
    return [default_queue] + ([settings.FACEINDEX_GPU_QUEUE] if gpu_worker_alive(client) else [])


def beat(client, node_name: str) -> None:
    """One heartbeat of a GPU worker."""
    client.set(GPU_WORKER_KEY_PREFIX + node_name, str(time.time()), ex=HEARTBEAT_TTL_S)


def stop_beating(client, node_name: str) -> None:
    client.delete(GPU_WORKER_KEY_PREFIX + node_name)
