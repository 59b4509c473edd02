"""A worker killed with SIGKILL mid-job loses nothing and repeats nothing."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from backend.gallery.models import Face
from backend.jobs.models import Image, Job

from .conftest import files_payload, wait_for_job

pytestmark = pytest.mark.django_db(transaction=True)


def varied_copies(path, count: int) -> dict[str, bytes]:
    """Distinct files of the same scene (scale and brightness vary)."""
    base = cv2.imread(str(path))
    files = {}
    for i in range(count):
        scale = 0.6 + 0.4 * (i / count)
        img = cv2.resize(base, None, fx=scale, fy=scale)
        img = np.clip(img.astype(np.int16) + (i % 7) - 3, 0, 255).astype(np.uint8)
        files[f"copy-{i:03d}.jpg"] = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    return files


def test_sigkill_mid_job_then_restart_completes_every_image_exactly_once(api, sample_archive, celery_worker_process):
    files = varied_copies(sample_archive.archive_dir / "2019/group.jpg", 24)
    job_id = api.post("/api/v1/jobs", files_payload(files), format="multipart").json()["id"]

    wait_for_job(api, job_id, until=lambda j: j["processed_images"] >= 3)
    celery_worker_process.kill()
    interrupted = Job.objects.get(pk=job_id)
    assert interrupted.status == Job.Status.RUNNING and interrupted.done_images < interrupted.total_images

    celery_worker_process.start()
    job = wait_for_job(api, job_id, timeout=240)

    assert job["status"] == "completed"
    assert (job["processed_images"], job["failed_images"]) == (len(files), 0)
    images = Image.objects.filter(job_id=job_id)
    assert all(image.status == Image.Status.DONE for image in images)
    per_image = [Face.objects.filter(image=image).count() for image in images]
    assert per_image == [6] * len(files), per_image  # no face written twice
    assert job["faces_found"] == Face.objects.filter(image__job_id=job_id).count() == 6 * len(files)
