"""Every error answer is the API's JSON shape, 500 included, and none shows settings."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.test import Client, RequestFactory
from django.urls import get_resolver

from backend.jobs.models import Job

from .conftest import files_payload

pytestmark = pytest.mark.django_db(transaction=True)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert body["error"]["code"] == code, body
    assert set(body["error"]) == {"code", "message", "field"}
    return body["error"]


def _corrupt_zip(photo: bytes) -> bytes:
    """A zip whose central directory is fine but whose entry fails its CRC check."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("a.jpg", photo)
    data = bytearray(out.getvalue())
    data[len(data) // 2] ^= 0xFF  # inside the stored bytes of a.jpg
    return bytes(data)


def test_a_corrupt_zip_is_a_400_zip_corrupt_for_jobs_and_enrollment(api, sample_archive):
    photo = (sample_archive.archive_dir / "2019/group.jpg").read_bytes()
    broken = _corrupt_zip(photo)
    jobs_before = Job.objects.count()
    _error(api.post("/api/v1/jobs", files_payload({"photos.zip": broken}), format="multipart"), 400, "zip_corrupt")
    _error(api.post("/api/v1/jobs", files_payload({"photos.zip": b"PK\x03\x04 not really"}), format="multipart"),
           400, "zip_corrupt")
    assert Job.objects.count() == jobs_before
    identity = api.post("/api/v1/identities", {"name": "Someone"}, format="json").json()["id"]
    _error(api.post(f"/api/v1/identities/{identity}/enroll", files_payload({"faces.zip": broken}), format="multipart"),
           400, "zip_corrupt")


def test_too_many_files_is_a_json_400(api):
    files = {f"f{i}.jpg": b"x" for i in range(1001)}
    _error(api.post("/api/v1/jobs", files_payload(files), format="multipart"), 400, "too_many_files")


def test_the_whole_request_size_is_capped(api, settings):
    settings.FACEINDEX_MAX_REQUEST_BYTES = 50_000
    error = _error(api.post("/api/v1/jobs", files_payload({"big.jpg": b"\xff" * 60_000}), format="multipart"),
                   413, "request_too_large")
    assert "50000" in error["message"]
    assert not Job.objects.filter(owner=api.user).exists()


def test_errors_outside_drf_are_json_too(api, client):
    _error(api.get("/api/v1/no-such-thing"), 404, "not_found")
    _error(client.get("/no-such-page"), 404, "not_found")
    _error(Client(enforce_csrf_checks=True).post("/admin/login/", {"username": "x"}), 403, "csrf_failed")
    request = RequestFactory().get("/api/v1/jobs")
    for status, code in ((400, "bad_request"), (403, "permission_denied"), (404, "not_found"), (500, "internal_error")):
        view = get_resolver().resolve_error_handler(status)
        response = view(request) if status == 500 else view(request, Exception("boom"))
        assert response.status_code == status
        body = json.loads(response.content)
        assert body["error"]["code"] == code
        assert "DATABASE" not in response.content.decode() and "SECRET" not in response.content.decode()


def test_debug_is_off_unless_asked_for():
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_DEBUG", "DJANGO_SETTINGS_MODULE")}
    script = "import backend.config.settings as s; print(s.DEBUG)"
    off = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    on = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env={**env, "DJANGO_DEBUG": "1"},
                        capture_output=True, text=True, timeout=60)
    assert (off.stdout.strip(), on.stdout.strip()) == ("False", "True"), (off.stderr, on.stderr)
