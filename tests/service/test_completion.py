"""Job completion as a service, straight against the database (no worker: it is not the point here)."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from backend.jobs import completion, webhooks
from backend.jobs.models import Image, Job

pytestmark = pytest.mark.django_db


def job_with_images(count: int) -> tuple[Job, list[Image]]:
    owner = get_user_model().objects.create_user(username=f"completion-{count}")
    job = Job.objects.create(owner=owner, total_images=count, webhook_url="https://hooks.example.org/faceindex")
    images = [Image.objects.create(owner=owner, job=job, object_key=f"k{i}", original_name=f"{i}.jpg", size_bytes=1) for i in range(count)]
    return job, images


def test_the_last_finished_image_completes_the_job_and_schedules_its_webhook_once(django_capture_on_commit_callbacks):
    job, (first, second) = job_with_images(2)
    with django_capture_on_commit_callbacks() as scheduled, transaction.atomic():
        completion.finish_image(first, failed=False, faces_found=3)
    job.refresh_from_db()
    assert (job.status, job.processed_images, job.faces_found) == (Job.Status.PENDING, 1, 3)
    assert scheduled == []  # not done yet: no webhook

    with django_capture_on_commit_callbacks() as scheduled, transaction.atomic():
        completion.finish_image(second, failed=True)
    job.refresh_from_db()
    assert (job.status, job.failed_images, job.done_images) == (Job.Status.COMPLETED, 1, 2)
    assert job.finished_at is not None
    assert len(scheduled) == 1  # job.completed, sent once the counters commit


def test_a_job_still_listing_its_source_does_not_complete():
    job, (image,) = job_with_images(1)
    Job.objects.filter(pk=job.pk).update(listing=True)
    job.refresh_from_db()
    with transaction.atomic():
        completion.finish_image(image, failed=False)
    job.refresh_from_db()
    assert job.status == Job.Status.PENDING and job.done_images == job.total_images == 1


def test_webhook_payload_is_the_job_summary():
    job, _ = job_with_images(1)
    payload = webhooks.payload_for(job, "job.completed")
    assert payload["event"] == "job.completed"
    assert payload["job"]["job_id"] == job.pk and payload["job"]["images"] == 1 and payload["job"]["pending"] == 1
