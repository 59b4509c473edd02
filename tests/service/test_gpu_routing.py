"""Routing: batches go to the GPU queue while a GPU worker's heartbeat lives, else to the CPU queue.

No GPU here: the heartbeat is written as a GPU worker's would be (routing.beat),
and nothing consumes the GPU queue, which is exactly the case of a GPU worker
that died: its messages must not strand the job.
"""
from __future__ import annotations

import pytest
import redis
from django.conf import settings

from backend.jobs import routing, services
from backend.jobs.broker import waiting_image_ids
from backend.jobs.models import Image

from .conftest import files_payload, wait_for_job
from .test_archive_resume import _assert_each_image_indexed_exactly_once
from .test_worker_crash import varied_copies

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker():
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    routing.forget_cached_state()
    yield client
    client.delete(*client.keys(routing.GPU_WORKER_KEY_PREFIX + "*") or ["-"], settings.FACEINDEX_GPU_QUEUE)
    routing.forget_cached_state()


def test_a_live_gpu_worker_gets_big_batches_and_a_dead_ones_queue_falls_back_to_cpu(
        api, sample_archive, celery_worker_process, broker, settings):
    settings.FACEINDEX_GPU_BATCH_SIZE = 3
    routing.beat(broker, "gpu-worker@test")
    assert routing.route_for_images(broker) == (settings.FACEINDEX_GPU_QUEUE, 3)

    count = 5
    files = varied_copies(sample_archive.archive_dir / "2019/group.jpg", count)
    job_id = api.post("/api/v1/jobs", files_payload(files), format="multipart").json()["id"]
    ids = set(Image.objects.filter(job_id=job_id).values_list("id", flat=True))
    assert broker.llen(settings.FACEINDEX_GPU_QUEUE) == 2  # 5 images in batches of 3, none on the CPU queue
    assert waiting_image_ids() >= ids  # queued, for a GPU worker that lives
    assert Image.objects.filter(job_id=job_id, status=Image.Status.PENDING).count() == count  # CPU worker keeps off

    broker.delete(routing.GPU_WORKER_KEY_PREFIX + "gpu-worker@test")  # the GPU worker's heartbeat expires
    routing.forget_cached_state()
    assert routing.route_for_images(broker) == (None, settings.FACEINDEX_BATCH_SIZE)
    assert not waiting_image_ids() & ids  # no live consumer: they no longer count as queued
    assert services.sweep_lost_images(min_age_s=0) == count  # so the sweep re-sends them, to the CPU queue
    wait_for_job(api, job_id, timeout=240)
    _assert_each_image_indexed_exactly_once(job_id, count)
