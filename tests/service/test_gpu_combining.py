"""A torch worker combines several small batch messages into one device batch, and loses none of them when killed.

FACEINDEX_DEVICE=torch-cpu runs a GPU worker's path (TorchFacePipeline, batches
on the device, combining) on the CPU. The session's worker is stopped while a
torch worker with the same node name stands in for it, so requeue_orphans at
its restart finds what the killed one held.
"""
from __future__ import annotations

import re
import time

import pytest

from backend.jobs import routing
from backend.jobs.broker import broker_image_ids
from backend.jobs.models import Image

from helpers.api import assert_each_image_indexed_exactly_once, files_payload, wait_for_job
from helpers.images import varied_copies

pytestmark = pytest.mark.django_db(transaction=True)

COMBINED = re.compile(r"combined (\d+) messages into one device batch of (\d+) images")
JOBS, PER_JOB = 4, 3  # four jobs of three photos: four messages of three images each


@pytest.fixture
def torch_worker(celery_worker_process):
    celery_worker_process.wait_idle()
    celery_worker_process.stop()
    log_path = celery_worker_process.log_path.with_name("worker-torch.log")
    log_path.unlink(missing_ok=True)
    worker = type(celery_worker_process)(log_path, env={"FACEINDEX_DEVICE": "torch-cpu", "FACEINDEX_GPU_BATCH_WAIT_MS": "500"})
    try:
        yield worker
    finally:
        worker.stop()
        celery_worker_process.start()


def _post_jobs(api, sample_archive) -> list[int]:
    routing.forget_cached_state()
    files = varied_copies(sample_archive.archive_dir / "2019/group.jpg", JOBS * PER_JOB)  # distinct bytes: no dedup links
    names = sorted(files)
    return [api.post("/api/v1/jobs", files_payload({n: files[n] for n in names[i::JOBS]}), format="multipart").json()["id"]
            for i in range(JOBS)]


def _combined(worker) -> list[tuple[int, int]]:
    text = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
    return [(int(m), int(n)) for m, n in COMBINED.findall(text)]


def test_small_messages_are_combined_into_one_device_batch(api, sample_archive, torch_worker):
    job_ids = _post_jobs(api, sample_archive)  # queued while no worker runs
    torch_worker.start()
    for job_id in job_ids:
        wait_for_job(api, job_id, timeout=240)
    combined = _combined(torch_worker)
    assert combined and max(m for m, _ in combined) >= 2, torch_worker.log_tail()
    assert all(n == m * PER_JOB for m, n in combined)
    for job_id in job_ids:
        assert_each_image_indexed_exactly_once(job_id, PER_JOB)


def test_a_worker_killed_holding_combined_messages_loses_nothing_after_restart(api, sample_archive, torch_worker):
    job_ids = _post_jobs(api, sample_archive)
    ids = set(Image.objects.filter(job_id__in=job_ids).values_list("id", flat=True))
    torch_worker.start(wait=False)  # watch its log from the start: the combined batch takes only seconds
    deadline = time.monotonic() + 120
    while not _combined(torch_worker):
        assert torch_worker.process.poll() is None, torch_worker.log_tail()
        assert time.monotonic() < deadline, torch_worker.log_tail()
        time.sleep(0.05)
    torch_worker.kill()  # mid-batch: the combined images take seconds on this CPU
    _waiting, unacked = broker_image_ids()
    assert unacked & ids, "the killed worker held no taken messages"
    assert Image.objects.filter(id__in=ids, status=Image.Status.DONE).count() < len(ids)

    torch_worker.start()  # same node name: requeue_orphans re-sends what the dead one held
    for job_id in job_ids:
        wait_for_job(api, job_id, timeout=240)
    for job_id in job_ids:
        assert_each_image_indexed_exactly_once(job_id, PER_JOB)


def test_only_first_attempts_of_batch_tasks_due_now_are_combined():
    import redis
    from celery import current_app
    from django.conf import settings

    from backend.jobs.broker import combinable
    from backend.jobs.queueing import LIST_SOURCE_TASK, PROCESS_BATCH_TASK

    queue = "faceindex.test-combining"  # no worker reads it
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete(queue)
    try:
        current_app.send_task(PROCESS_BATCH_TASK, args=[[1, 2]], queue=queue, task_id="first")
        current_app.send_task(PROCESS_BATCH_TASK, args=[[3]], queue=queue, retries=1)
        current_app.send_task(PROCESS_BATCH_TASK, args=[[4]], queue=queue, countdown=60)
        current_app.send_task(LIST_SOURCE_TASK, args=[5, "token"], queue=queue)
        oldest_first = client.lrange(queue, 0, -1)[::-1]
        assert [combinable(raw) for raw in oldest_first] == [("first", [1, 2]), None, None, None]
    finally:
        client.delete(queue)
