"""Outages mid-job and at submission: nothing accepted is lost or indexed twice.

Each service is really stopped and started again (the embedded PostgreSQL,
SeaweedFS S3 and Redis of the test stack) while the real worker runs a job.
The job must finish within RECOVERY_S of the service answering again.
"""
from __future__ import annotations

import time

import pytest
from django.db import connection

from backend.jobs.models import Image, Job

from .conftest import files_payload, wait_for_job
from .test_archive_resume import _assert_each_image_indexed_exactly_once
from .test_worker_crash import varied_copies

pytestmark = pytest.mark.django_db(transaction=True)

IMAGES = 10
RECOVERY_S = 60.0


def _submit(api, sample_archive, count: int = IMAGES):
    files = varied_copies(sample_archive.archive_dir / "2019/group.jpg", count)
    return api.post("/api/v1/jobs", files_payload(files), format="multipart")


def _wait_healthy(service, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not service.healthy():
        assert time.monotonic() < deadline, f"{service} not healthy after {timeout}s"
        time.sleep(0.2)


def _finish_within_recovery(api, job_id: int, back_at: float) -> dict:
    job = wait_for_job(api, job_id, timeout=RECOVERY_S + 30)
    took = time.monotonic() - back_at
    assert took <= RECOVERY_S, f"job {job_id} finished {took:.0f}s after the service was back"
    return job


def test_postgres_restart_mid_job_finishes_the_job_and_repeats_nothing(api, sample_archive, celery_worker_process,
                                                                      test_stack):
    job_id = _submit(api, sample_archive).json()["id"]
    wait_for_job(api, job_id, until=lambda j: j["processed_images"] >= 1)

    test_stack.postgres.stop()
    connection.close()
    time.sleep(3)
    # The API answers while the database is down: a JSON 503, never a 500 page.
    down = api.get("/api/v1/jobs")
    assert down.status_code == 503, down.content
    assert down.json()["error"]["code"] == "service_unavailable"
    assert "PASSWORD" not in down.content.decode() and "DATABASE" not in down.content.decode()
    time.sleep(2)
    test_stack.postgres.start()
    back_at = time.monotonic()
    connection.close()  # this test's own connection died with the server

    _finish_within_recovery(api, job_id, back_at)
    _assert_each_image_indexed_exactly_once(job_id, IMAGES)
    celery_worker_process.wait_idle()


def test_s3_restart_mid_job_finishes_the_job_and_repeats_nothing(api, sample_archive, celery_worker_process,
                                                                test_stack):
    job_id = _submit(api, sample_archive).json()["id"]
    wait_for_job(api, job_id, until=lambda j: j["processed_images"] >= 1)

    test_stack.s3.stop()
    # A job submitted while storage is down: 503, and nothing saved.
    jobs_before = Job.objects.count()
    refused = _submit(api, sample_archive, 2)
    assert refused.status_code == 503, refused.content
    assert refused.json()["error"]["code"] == "service_unavailable"
    assert Job.objects.count() == jobs_before
    test_stack.s3.start()
    _wait_healthy(test_stack.s3)
    back_at = time.monotonic()

    _finish_within_recovery(api, job_id, back_at)
    _assert_each_image_indexed_exactly_once(job_id, IMAGES)
    celery_worker_process.wait_idle()


def test_a_job_posted_while_the_broker_is_down_is_accepted_and_sent_from_the_outbox(
        api, sample_archive, celery_worker_process, test_stack):
    test_stack.redis.stop()
    try:
        response = _submit(api, sample_archive)
        assert response.status_code == 202, response.content
        job_id = response.json()["id"]
        # Saved, and waiting in the outbox (never sent): no retry of the POST needed, none duplicated.
        images = Image.objects.filter(job_id=job_id)
        assert images.count() == IMAGES
        assert not images.filter(queued_at__isnull=False).exists()
    finally:
        test_stack.redis.start()
        _wait_healthy(test_stack.redis)
    back_at = time.monotonic()

    _finish_within_recovery(api, job_id, back_at)
    _assert_each_image_indexed_exactly_once(job_id, IMAGES)
    assert Job.objects.filter(owner=api.user).count() == 1
    celery_worker_process.wait_idle()
