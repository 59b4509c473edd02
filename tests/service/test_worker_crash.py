"""A worker killed with SIGKILL mid-job loses nothing and repeats nothing."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.gallery.models import Face
from backend.jobs.broker import broker_image_ids
from backend.jobs.models import Image, Job

from .conftest import files_payload, wait_for_job

REPO_ROOT = Path(__file__).resolve().parents[2]

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
    back_at = time.monotonic()
    job = wait_for_job(api, job_id, timeout=240)
    assert time.monotonic() - back_at <= 60, "the job took longer than 60 s after the worker was back"

    assert job["status"] == "completed"
    assert (job["processed_images"], job["failed_images"]) == (len(files), 0)
    images = Image.objects.filter(job_id=job_id)
    assert all(image.status == Image.Status.DONE for image in images)
    per_image = [Face.objects.filter(image=image).count() for image in images]
    assert per_image == [6] * len(files), per_image  # no face written twice
    assert job["faces_found"] == Face.objects.filter(image__job_id=job_id).count() == 6 * len(files)


# Takes the first queued message and dies by SIGKILL before claiming its
# images, printing the message's task name first. "unacked": the way kombu
# takes it (kept in the "unacked" hash until acked; Redis would hand it out
# again only after the visibility timeout). "popped": BRPOP has moved it into
# the worker's socket but kombu has not yet recorded it as unacked, so the
# dead worker takes the message with it.
TAKE_MESSAGE_AND_DIE = """
import json, os, signal, sys
import django
django.setup()
from workers.celery_app import app
with app.connection_for_write() as connection:
    channel = connection.default_channel
    if sys.argv[1] == "unacked":
        message = channel.basic_get("celery", no_ack=False)
        task = message.headers["task"] if message else "none"
    else:
        popped = channel.client.brpop(["celery"], timeout=5)
        task = json.loads(popped[1])["headers"]["task"] if popped else "none"
    print(task, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("taken", ["unacked", "popped"])
def test_a_batch_taken_by_a_worker_killed_before_claiming_it_is_resent_at_restart(
        api, sample_archive, celery_worker_process, taken):
    """The gap between taking a message and claiming its images: without a
    re-send the batch would wait out the visibility timeout, or be lost."""
    celery_worker_process.wait_idle()
    celery_worker_process.stop()
    files = varied_copies(sample_archive.archive_dir / "2019/group.jpg", 8)  # one batch
    job_id = api.post("/api/v1/jobs", files_payload(files), format="multipart").json()["id"]

    env = dict(os.environ, DJANGO_SETTINGS_MODULE="backend.config.settings_test")
    taker = subprocess.run([sys.executable, "-c", TAKE_MESSAGE_AND_DIE, taken], cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert taker.returncode == -9 and taker.stdout.strip() == "faceindex.process_batch", taker.stderr
    image_ids = set(Image.objects.filter(job_id=job_id).values_list("id", flat=True))
    waiting, unacked = broker_image_ids()
    assert not image_ids & waiting
    assert (image_ids <= unacked) if taken == "unacked" else not image_ids & unacked
    assert set(Image.objects.filter(job_id=job_id).values_list("status", flat=True)) == {Image.Status.PENDING}

    celery_worker_process.start()
    job = wait_for_job(api, job_id, timeout=120)  # well inside the 300 s visibility timeout

    assert job["status"] == "completed"
    assert (job["processed_images"], job["failed_images"]) == (len(files), 0)
    per_image = [Face.objects.filter(image=image).count() for image in Image.objects.filter(job_id=job_id)]
    assert per_image == [6] * len(files), per_image
