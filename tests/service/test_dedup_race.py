"""Two workers indexing the same bytes at the same moment write its faces once."""
from __future__ import annotations

import threading

import pytest
from django.db import connection

from backend.core import storage
from backend.core.pipeline import get_pipeline
from backend.gallery.models import Face
from backend.jobs import processing
from backend.jobs.models import Image, Job

from helpers.api import files_payload

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_same_photo_in_two_jobs_processed_at_once_is_indexed_once_and_linked_once(
        api, sample_archive, celery_worker_process, monkeypatch):
    data = (sample_archive.archive_dir / "2019/group.jpg").read_bytes()
    get_pipeline()  # load the models before the two racers start
    celery_worker_process.wait_idle()
    celery_worker_process.stop()  # the two racers below play the workers
    try:
        job_ids = [api.post("/api/v1/jobs", files_payload({name: data}), format="multipart").json()["id"]
                   for name in ("copy-a.jpg", "copy-b.jpg")]
        image_ids = [Image.objects.get(job_id=job_id).pk for job_id in job_ids]

        # Both racers pass the early "already indexed?" check before either
        # writes: they meet after the models have run, then write together.
        meet = threading.Barrier(2, timeout=120)
        describe = processing._describe

        def describe_then_meet(batch):
            describe(batch)
            meet.wait()

        monkeypatch.setattr(processing, "_describe", describe_then_meet)
        errors = []

        def race(image_id: int, name: str) -> None:
            try:
                processing.process_images([image_id], worker_name=name)
            except Exception as exc:  # reported by the assertion below
                errors.append(exc)
            finally:
                connection.close()

        racers = [threading.Thread(target=race, args=(image_id, f"racer-{n}@test"))
                  for n, image_id in enumerate(image_ids)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=180)
        assert not errors and not any(r.is_alive() for r in racers), errors
    finally:
        monkeypatch.undo()
        celery_worker_process.start()

    images = {image.pk: image for image in Image.objects.filter(pk__in=image_ids)}
    assert {image.status for image in images.values()} == {Image.Status.DONE}
    linked = [image for image in images.values() if image.linked_from_id]
    assert len(linked) == 1, "one copy indexes, the other links to it"
    link = linked[0]
    canonical = images[link.linked_from_id]
    assert Face.objects.filter(image_id__in=image_ids).count() == Face.objects.filter(image=canonical).count() == 6
    assert Face.objects.filter(image=link).count() == 0
    # The linking racer had already stored its crops: they are removed, not left behind.
    crop_keys = set(storage.list_keys())
    assert {processing.crop_key(canonical, n) for n in range(6)} <= crop_keys
    assert not {processing.crop_key(link, n) for n in range(6)} & crop_keys
    jobs = {job.pk: job for job in Job.objects.filter(pk__in=job_ids)}
    assert {job.status for job in jobs.values()} == {Job.Status.COMPLETED}
    assert (jobs[link.job_id].linked_images, jobs[link.job_id].faces_found) == (1, 6)
    assert (jobs[canonical.job_id].linked_images, jobs[canonical.job_id].faces_found) == (0, 6)
