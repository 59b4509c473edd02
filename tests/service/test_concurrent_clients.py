"""Parallel clients against a real threaded HTTP server: no crash, no lost or mixed-up answer."""
from __future__ import annotations

import json
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers.api import enroll_people, wait_for_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]

PARALLEL = 5
ROUNDS = 2  # bounded: PARALLEL x ROUNDS requests of each kind


def multipart(fields: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for name, (filename, data) in fields.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, token: str, fields: dict[str, tuple[str, bytes]]) -> tuple[int, dict]:
    body, content_type = multipart(fields)
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Authorization": f"Token {token}", "Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read())


def test_five_parallel_clients_search_and_submit_without_errors(api, sample_archive, live_server):
    from rest_framework.authtoken.models import Token

    ids = enroll_people(api, sample_archive.enroll_dir)
    token = Token.objects.get(user=api.user).key
    hanks = (sample_archive.archive_dir / "2021/hanks-large.jpg").read_bytes()
    collins = (sample_archive.archive_dir / "2020/astronaut-crop.jpg").read_bytes()

    def search(i: int):
        photo, expected = (hanks, "Tom Hanks") if i % 2 else (collins, "Eileen Collins")
        status, body = post(f"{live_server.url}/api/v1/search", token, {"file": (f"probe{i}.jpg", photo)})
        return status, expected, body

    def submit(i: int):
        return post(f"{live_server.url}/api/v1/jobs", token, {"files": (f"batch{i}.jpg", hanks)})

    with ThreadPoolExecutor(PARALLEL) as pool:
        searches = list(pool.map(search, range(PARALLEL * ROUNDS)))
        submissions = list(pool.map(submit, range(PARALLEL * ROUNDS)))

    for status, expected, body in searches:
        assert status == 200
        assert body["results"][0]["match"] == {"id": ids[expected], "name": expected}
    assert all(status == 202 for status, _ in submissions)
    job_ids = {body["id"] for _, body in submissions}
    assert len(job_ids) == PARALLEL * ROUNDS
    for job_id in job_ids:
        job = wait_for_job(api, job_id)
        assert (job["status"], job["failed_images"]) == ("completed", 0)
