"""Refused uploads keep the client's keep-alive connection usable under the real gunicorn.

gunicorn 27 drains at most 64 KiB of a body the app left unread, then closes
the connection its response had kept open; a client reusing it is reset
(backend/core/middleware.py UnreadBodyDrainMiddleware reads the rest).
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import uuid

import cv2
import numpy as np
import pytest

from helpers.images import package_image_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def gunicorn_api(test_stack, tmp_path):
    """The API under gunicorn with the project's config (one process), uploads throttled to 1/minute."""
    port = _free_port()
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="backend.config.settings_test",
               FACEINDEX_API_BIND=f"127.0.0.1:{port}", FACEINDEX_API_PROCESSES="1", FACEINDEX_API_THREADS="4",
               FACEINDEX_THROTTLE_JOBS="1/minute", PYTHONUNBUFFERED="1")
    env.pop("DB_POOL_MAX_SIZE", None)  # the config sizes the pool to its threads
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:backend.config.gunicorn", "backend.config.wsgi"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"gunicorn exited:\n{log_path.read_text(errors='replace')}"
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                probe.request("GET", "/healthz")
                if probe.getresponse().status == 200:
                    probe.close()
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"gunicorn not answering:\n{log_path.read_text(errors='replace')}"
            time.sleep(0.3)
        yield port
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(timeout=10)


def _photo_of_about(size: int) -> bytes:
    """A real photo re-encoded at a scale that makes its JPEG about `size` bytes."""
    image = cv2.imdecode(np.frombuffer(package_image_bytes("t1.jpg"), np.uint8), cv2.IMREAD_COLOR)
    scale = 1.0
    while True:
        data = cv2.imencode(".jpg", cv2.resize(image, None, fx=scale, fy=scale), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
        if len(data) >= size:
            return data.tobytes()
        scale *= 1.25


def _multipart(filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{filename}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_throttled_uploads_answer_on_the_same_keepalive_connection(api, gunicorn_api):
    from rest_framework.authtoken.models import Token

    token = Token.objects.get(user=api.user).key
    photo = _photo_of_about(300_000)
    connection = http.client.HTTPConnection("127.0.0.1", gunicorn_api, timeout=60)
    answers, sockets = [], []
    try:
        # Accepted, throttled twice, then refused before parsing (unknown token).
        for i, key in enumerate([token, token, token, "not-a-token"]):
            body, content_type = _multipart(f"photo{i}.jpg", photo)
            assert len(body) > 4 * 64 * 1024  # well past what gunicorn drains by itself
            connection.request("POST", "/api/v1/jobs", body=body,
                               headers={"Authorization": f"Token {key}", "Content-Type": content_type})
            response = connection.getresponse()
            answers.append((response.status, response.getheader("Retry-After"), json.loads(response.read())))
            sockets.append(connection.sock)
    finally:
        connection.close()

    statuses = [status for status, _, _ in answers]
    assert statuses == [202, 429, 429, 401], answers
    assert all(retry_after and int(retry_after) > 0 for _, retry_after, _ in answers[1:3])
    assert answers[1][2]["error"]["code"] == "throttled"
    # One connection carried them all: http.client opens a new socket only when the old one was closed.
    assert sockets[0] is not None and all(sock is sockets[0] for sock in sockets)
