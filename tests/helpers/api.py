"""REST helpers for the service tests: clients with real token auth, uploads, job polling, enrollment."""
from __future__ import annotations

import io
import time
import uuid
import zipfile
from pathlib import Path

from rest_framework.test import APIClient


def make_client(username: str | None = None) -> APIClient:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_user(username=username or f"user-{uuid.uuid4().hex[:8]}", password="pw")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    client.user = user
    return client


def files_payload(paths: dict[str, bytes]) -> dict:
    return {"files": [_named(name, data) for name, data in paths.items()]}


def _named(name: str, data: bytes):
    buf = io.BytesIO(data)
    buf.name = name
    return buf


def zip_bytes(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def wait_for_job(client: APIClient, job_id: int, timeout: float = 180.0, until=None) -> dict:
    """Poll the job until it is finished (or `until(job)` holds); bounded."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.content
        job = response.json()
        if (until(job) if until else job["status"] in ("completed", "cancelled")):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not done after {timeout}s: {job}")
        time.sleep(0.3)


def index(client: APIClient, files: dict[str, bytes]) -> dict:
    """Submit the files as one job and wait until it is finished."""
    response = client.post("/api/v1/jobs", files_payload(files), format="multipart")
    assert response.status_code == 202, response.content
    return wait_for_job(client, response.json()["id"])


def enroll(client: APIClient, name: str, files: dict[str, bytes]) -> int:
    """Create an identity and enroll the files (each must show one face); returns its id."""
    created = client.post("/api/v1/identities", {"name": name}, format="json")
    assert created.status_code == 201, created.content
    identity_id = created.json()["id"]
    enrolled = client.post(f"/api/v1/identities/{identity_id}/enroll", files_payload(files), format="multipart")
    assert enrolled.status_code == 201, enrolled.content
    return identity_id


def enroll_people(client: APIClient, enroll_dir: Path) -> dict[str, int]:
    """One identity per sub-folder of ``enroll_dir``, enrolled from its photos: {name: id}."""
    return {person.name: enroll(client, person.name, read_tree(person))
            for person in sorted(p for p in enroll_dir.iterdir() if p.is_dir())}


def assert_each_image_indexed_exactly_once(job_id: int, count: int, faces_per_image: int = 6) -> None:
    """The job completed with every image indexed once: each image has its faces once (the group photo: 6)."""
    from backend.gallery.models import Face
    from backend.jobs.models import Image, Job

    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.COMPLETED
    assert (job.processed_images, job.failed_images) == (count, 0)
    per_image = [Face.objects.filter(image=image).count() for image in Image.objects.filter(job_id=job_id)]
    assert per_image == [faces_per_image] * count, per_image
    assert job.faces_found == faces_per_image * count
