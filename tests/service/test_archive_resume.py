"""Jobs survive a Redis restart, lost broker messages and a killed worker; cancel stops scheduling."""
from __future__ import annotations

import time

import pytest
import redis
from django.conf import settings

from backend.gallery.models import Face
from backend.jobs import services
from backend.jobs.models import Image, Job

from .conftest import files_payload, wait_for_job
from .test_worker_crash import varied_copies

pytestmark = pytest.mark.django_db(transaction=True)

FACES_PER_GROUP_PHOTO = 6


def _submit_copies(api, sample_archive, count: int) -> int:
    files = varied_copies(sample_archive.archive_dir / "2019/group.jpg", count)
    return api.post("/api/v1/jobs", files_payload(files), format="multipart").json()["id"]


def _assert_each_image_indexed_exactly_once(job_id: int, count: int) -> None:
    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.COMPLETED
    assert (job.processed_images, job.failed_images) == (count, 0)
    per_image = [Face.objects.filter(image=image).count() for image in Image.objects.filter(job_id=job_id)]
    assert per_image == [FACES_PER_GROUP_PHOTO] * count, per_image
    assert job.faces_found == FACES_PER_GROUP_PHOTO * count


def test_redis_restart_mid_job_loses_and_repeats_nothing(api, sample_archive, celery_worker_process, test_stack):
    job_id = _submit_copies(api, sample_archive, 24)
    wait_for_job(api, job_id, until=lambda j: j["processed_images"] >= 1)
    test_stack.redis.stop()  # SIGTERM: the AOF (fsync always) keeps every queued message
    time.sleep(1.0)
    assert Job.objects.get(pk=job_id).status == Job.Status.RUNNING
    test_stack.redis.start()
    deadline = time.monotonic() + 30
    while not test_stack.redis.healthy() and time.monotonic() < deadline:
        time.sleep(0.1)
    back_at = time.monotonic()
    wait_for_job(api, job_id, timeout=180)
    assert time.monotonic() - back_at <= 60, "the job took longer than 60 s after Redis was back"
    _assert_each_image_indexed_exactly_once(job_id, 24)
    celery_worker_process.wait_idle()


def _kill_mid_job_and_lose_the_broker(api, sample_archive, worker) -> tuple[int, int]:
    """A job interrupted by a worker kill, then the broker's messages lost too
    (e.g. Redis run without persistence). Returns (job id, unfinished images)."""
    job_id = _submit_copies(api, sample_archive, 24)
    wait_for_job(api, job_id, until=lambda j: j["processed_images"] >= 1)
    worker.kill()
    # Every unfinished image is still named by a message: nothing to sweep.
    assert services.sweep_lost_images(min_age_s=0) == 0
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("celery", settings.FACEINDEX_LISTING_QUEUE, "unacked", "unacked_index")
    unfinished = Image.objects.filter(job_id=job_id).exclude(status__in=(Image.Status.DONE, Image.Status.FAILED))
    assert unfinished.filter(status=Image.Status.PENDING).exists()
    return job_id, unfinished.count()


def test_a_restarted_worker_resends_what_the_broker_lost(api, sample_archive, celery_worker_process):
    job_id, _ = _kill_mid_job_and_lose_the_broker(api, sample_archive, celery_worker_process)
    celery_worker_process.start()  # re-queues its claimed batch and every image no message names
    wait_for_job(api, job_id, timeout=180)
    _assert_each_image_indexed_exactly_once(job_id, 24)
    celery_worker_process.wait_idle()


def test_the_sweep_resends_lost_messages_when_the_worker_never_returns(api, sample_archive, celery_worker_process):
    job_id, unfinished = _kill_mid_job_and_lose_the_broker(api, sample_archive, celery_worker_process)
    # Another worker's sweeper: the dead worker's claimed batch is stale at once
    # here (stale_processing_s=0), and no message names any unfinished image.
    assert services.sweep_lost_images(min_age_s=0, stale_processing_s=0) == unfinished
    celery_worker_process.start()
    wait_for_job(api, job_id, timeout=180)
    _assert_each_image_indexed_exactly_once(job_id, 24)
    celery_worker_process.wait_idle()
    assert services.sweep_lost_images(min_age_s=0) == 0  # a finished job is never swept
    celery_worker_process.wait_idle()


def test_cancel_stops_scheduling_and_keeps_finished_work(api, sample_archive, celery_worker_process):
    job_id = _submit_copies(api, sample_archive, 40)
    wait_for_job(api, job_id, until=lambda j: j["processed_images"] >= 1)
    response = api.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"

    def settled():
        return not Image.objects.filter(job_id=job_id, status=Image.Status.PROCESSING).exists()

    deadline = time.monotonic() + 60
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.3)
    time.sleep(1.5)  # queued batches reach the worker and are skipped
    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.CANCELLED and job.finished_at
    done = Image.objects.filter(job_id=job_id, status=Image.Status.DONE)
    assert 1 <= done.count() == job.processed_images < 40
    assert Image.objects.filter(job_id=job_id, status=Image.Status.PENDING).count() == 40 - done.count()
    assert Face.objects.filter(image__job_id=job_id).count() == FACES_PER_GROUP_PHOTO * done.count() == job.faces_found
    time.sleep(1.0)
    assert Job.objects.get(pk=job_id).processed_images == job.processed_images  # nothing more was scheduled
    again = api.post(f"/api/v1/jobs/{job_id}/cancel").json()
    assert again["status"] == "cancelled" and again["processed_images"] == job.processed_images
    celery_worker_process.wait_idle()
