"""Import sources bigger than one chunk: listed on in the background, resumably."""
from __future__ import annotations

import io
import json
import uuid

import cv2
import numpy as np
import pytest
import redis
from django.conf import settings as django_settings

from backend.core import storage
from backend.jobs import listing, services, sources
from backend.jobs.models import Image, Job

from helpers.api import wait_for_job

pytestmark = pytest.mark.django_db(transaction=True)

FILES = 7


def _photos(sample_archive, count: int) -> dict[str, bytes]:
    """Distinct small photos of one person (different bytes: none is deduplicated)."""
    base = cv2.imread(str(sample_archive.archive_dir / "2021/hanks-large.jpg"))
    base = cv2.resize(base, None, fx=0.5, fy=0.5)
    return {f"roll-{i // 3}/frame-{i:02d}.jpg":
            cv2.imencode(".jpg", np.clip(base.astype(np.int16) + i, 0, 255).astype(np.uint8))[1].tobytes()
            for i in range(count)}


def test_an_s3_prefix_longer_than_a_chunk_is_listed_on_by_the_workers(api, sample_archive, settings,
                                                                        celery_worker_process):
    bucket = f"listing-{uuid.uuid4().hex[:10]}"
    storage.ensure_bucket(bucket)
    photos = _photos(sample_archive, FILES)
    for name, data in photos.items():
        storage.client().put_object(bucket, f"scans/{name}", io.BytesIO(data), len(data))
    settings.FACEINDEX_IMPORT_S3_BUCKETS = [bucket]
    settings.FACEINDEX_IMPORT_LIST_CHUNK = 2  # the request lists 2; the worker lists the rest

    response = api.post("/api/v1/jobs", {"source": f"s3://{bucket}/scans"}, format="json")
    assert response.status_code == 202, response.content
    accepted = response.json()
    assert (accepted["total_images"], accepted["listing"]) == (2, True)

    job = wait_for_job(api, accepted["id"])
    assert (job["status"], job["listing"], job["listing_error"]) == ("completed", False, "")
    assert (job["total_images"], job["processed_images"], job["failed_images"]) == (FILES, FILES, 0)
    names = list(Image.objects.filter(job_id=job["id"]).values_list("original_name", flat=True))
    assert sorted(names) == sorted(photos)  # every file once
    assert job["faces_found"] == FILES


def test_a_folder_listing_resumes_after_a_lost_lister_without_listing_a_file_twice(
        api, sample_archive, settings, celery_worker_process, tmp_path):
    photos = _photos(sample_archive, FILES)
    for name, data in photos.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    settings.FACEINDEX_IMPORT_ROOTS = [str(tmp_path)]
    settings.FACEINDEX_IMPORT_LIST_CHUNK = 2
    celery_worker_process.wait_idle()
    celery_worker_process.stop()  # this test plays the listing worker itself
    try:
        job_id = api.post("/api/v1/jobs", {"source": str(tmp_path)}, format="json").json()["id"]
        job = Job.objects.get(pk=job_id)
        assert (job.total_images, job.listed_files, job.listing) == (2, 2, True)
        first_token = job.listing_task
        assert first_token and job_id not in listing.stalled_listings(0)  # its task waits in the queue

        assert listing.continue_listing(job_id, first_token, seconds=0) is True  # one chunk, then hand over
        assert Job.objects.get(pk=job_id).total_images == 4

        # A lister that read a chunk and died before writing it changes nothing...
        listing.Lister(sources.source_for_job(job), Job.objects.get(pk=job_id)).take()
        # ...and once its message is gone too (no message names the job), the
        # listing is stalled however recently it moved, and is re-sent.
        broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
        queue = django_settings.FACEINDEX_LISTING_QUEUE
        # The listing task waits in its own queue; the two chunks' batches in the default one, none twice.
        assert (broker.llen(queue), broker.llen("celery")) == (1, 2)
        for raw in broker.lrange(queue, 0, -1):
            if json.loads(raw)["headers"]["task"] == "faceindex.list_source":
                broker.lrem(queue, 1, raw)
        assert listing.stalled_listings(3600) == [job_id]
        assert services.resume_stalled_listings(min_age_s=3600) == 1
        second_token = Job.objects.get(pk=job_id).listing_task
        assert second_token != first_token
        assert listing.continue_listing(job_id, first_token) is False  # superseded: stops at once
        assert Job.objects.get(pk=job_id).total_images == 4

        assert listing.continue_listing(job_id, second_token) is False  # lists to the end
        job = Job.objects.get(pk=job_id)
        assert (job.total_images, job.listed_files, job.listing) == (FILES, FILES, False)
        names = list(Image.objects.filter(job_id=job_id).values_list("original_name", flat=True))
        assert sorted(names) == sorted(photos)
    finally:
        celery_worker_process.start()
    done = wait_for_job(api, job_id)
    assert (done["status"], done["processed_images"], done["failed_images"]) == ("completed", FILES, 0)


def test_an_import_stops_listing_at_the_file_limit_and_says_so(api, sample_archive, settings, tmp_path,
                                                                 celery_worker_process):
    for name, data in _photos(sample_archive, 5).items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    settings.FACEINDEX_IMPORT_ROOTS = [str(tmp_path)]
    settings.FACEINDEX_IMPORT_MAX_FILES = 3
    job = wait_for_job(api, api.post("/api/v1/jobs", {"source": str(tmp_path)}, format="json").json()["id"])
    assert (job["status"], job["total_images"], job["processed_images"]) == ("completed", 3, 3)
    assert job["listing_error"].startswith("source_too_large: more than 3 files")
