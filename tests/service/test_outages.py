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


def test_outage_backoff_doubles_up_to_its_cap_with_jitter():
    from backend.core import outages

    delays = [[outages.backoff_delay(attempt, base=0.5, cap=5.0) for _ in range(200)] for attempt in range(10)]
    assert 0.25 <= min(delays[0]) and max(delays[0]) <= 0.5
    assert 1.0 <= min(delays[2]) and max(delays[2]) <= 2.0
    assert all(max(row) <= 5.0 for row in delays) and min(delays[9]) >= 2.5  # capped, never below half the cap
    assert len({round(d, 6) for d in delays[4]}) > 100  # jittered: workers do not probe in lockstep


def test_an_unreachable_database_or_storage_is_an_outage_and_a_bug_is_not(test_stack):
    import psycopg
    import urllib3
    from minio import Minio

    from backend.core import outages

    closed_port = test_stack.ports.admin + 1  # nothing listens there
    with pytest.raises(psycopg.OperationalError) as database_down:
        psycopg.connect(f"postgres://x:y@127.0.0.1:{closed_port}/x", connect_timeout=2)
    assert outages.is_outage(database_down.value)
    storage = Minio(f"127.0.0.1:{closed_port}", access_key="a", secret_key="b", secure=False,
                    http_client=urllib3.PoolManager(retries=urllib3.Retry(total=0)))
    with pytest.raises(Exception) as storage_down:
        storage.bucket_exists("faceindex")
    assert outages.is_outage(storage_down.value)
    try:
        try:
            raise KeyError("a bug")
        except KeyError as bug:
            raise ValueError("while handling it") from bug
    except ValueError as chained:
        assert not outages.is_outage(chained)
    assert outages.unreachable() == []  # the test stack itself answers
