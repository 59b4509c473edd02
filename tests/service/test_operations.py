"""Operations: probes, per-user throttles, JSON logs with the work's ids; against the real stack."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from django.test import Client

from backend.core.logs import ContextFilter, JsonFormatter, log_context

from helpers.api import files_payload, make_client, wait_for_job

pytestmark = pytest.mark.django_db(transaction=True)


def test_healthz_answers_and_readyz_checks_every_dependency():
    client = Client(HTTP_HOST="10.1.2.3:8000")  # a probe calls the container address, not an allowed host
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.content
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok", "models": "ok"}


def test_readyz_is_503_and_names_the_failing_dependency(settings):
    settings.S3_BUCKET = "no-such-bucket-for-readyz"
    ready = Client().get("/readyz")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["storage"].startswith("failed") and checks["database"] == "ok"


def test_search_is_throttled_per_user_with_retry_after(settings):
    settings.FACEINDEX_THROTTLE_SEARCH = "2/minute"
    first, other = make_client(), make_client()
    # An empty search is refused (400) but still counts: the limit guards the endpoint, not success.
    assert [first.post("/api/v1/search", {}, format="multipart").status_code for _ in range(2)] == [400, 400]
    throttled = first.post("/api/v1/search", {}, format="multipart")
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "throttled"
    assert 0 < int(throttled["Retry-After"]) <= 60
    assert other.post("/api/v1/search", {}, format="multipart").status_code == 400  # per user: others go on
    assert first.get("/api/v1/identities").status_code == 200  # reads are not limited


def test_job_creation_is_throttled_but_listing_jobs_is_not(settings):
    settings.FACEINDEX_THROTTLE_JOBS = "1/hour"
    client = make_client()
    assert client.post("/api/v1/jobs", {}, format="multipart").status_code == 400  # no files
    assert client.post("/api/v1/jobs", {}, format="multipart").status_code == 429
    assert client.get("/api/v1/jobs").status_code == 200


def test_log_lines_are_json_with_the_bound_ids():
    record = logging.LogRecord("faceindex.test", logging.WARNING, __file__, 1, "image %s failed", (7,), None)
    with log_context(job_id=3, image_ids=[7, 8]):
        assert ContextFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "image 7 failed" and line["level"] == "WARNING"
    assert line["job_id"] == 3 and line["image_ids"] == [7, 8]
    outside = logging.LogRecord("faceindex.test", logging.INFO, __file__, 1, "idle", (), None)
    ContextFilter().filter(outside)
    assert "job_id" not in json.loads(JsonFormatter().format(outside))  # the context ended with the block


def test_the_worker_logs_json_lines_carrying_task_job_and_image_ids(api, sample_archive, celery_worker_process):
    log_path = Path(celery_worker_process.log_path)
    start = log_path.stat().st_size  # the log outlives sessions, whose ids restart: read only this test's lines
    photo = (sample_archive.archive_dir / "2021/hanks-large.jpg").read_bytes()
    job = wait_for_job(api, api.post("/api/v1/jobs", files_payload({"logged.jpg": photo}), format="multipart").json()["id"])
    from backend.jobs.models import Image

    image_id = Image.objects.get(job_id=job["id"]).pk
    with open(log_path, "rb") as log:
        log.seek(start)
        lines = [json.loads(line) for line in log.read().decode(errors="replace").splitlines() if line.startswith("{")]
    mine = [line for line in lines if image_id in line.get("image_ids", [])]
    assert mine, "no worker log line names the image"
    assert all(line["job_id"] == job["id"] and line["task_id"] for line in mine)
