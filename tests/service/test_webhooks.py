"""Completion webhooks: HMAC-signed, retried with backoff, logged; a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .conftest import files_payload, wait_for_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]


class Receiver:
    """Answers 500 to the first POST, 200 afterwards; records every request."""

    def __init__(self):
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                          "at": time.monotonic()})
                self.send_response(500 if len(receiver.requests) == 1 else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"only {len(self.requests)} webhook requests arrived"
            time.sleep(0.1)


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.server.shutdown()


def test_completion_webhook_is_signed_retried_and_logged(api, sample_archive, receiver):
    endpoint = api.put("/api/v1/webhook", {"url": f"{receiver.url}/owner-default"}, format="json")
    assert endpoint.status_code == 200, endpoint.content
    secret = endpoint.json()["secret"]
    assert len(secret) == 64 and api.get("/api/v1/webhook").json()["secret"] == secret

    photo = (sample_archive.archive_dir / "2021/hanks-large.jpg").read_bytes()
    payload = {**files_payload({"h.jpg": photo}), "webhook_url": f"{receiver.url}/this-job"}
    job = wait_for_job(api, api.post("/api/v1/jobs", payload, format="multipart").json()["id"])
    receiver.wait_for(2)
    first, second = receiver.requests[:2]
    assert first["path"] == second["path"] == "/this-job"  # the job's URL wins over the owner's
    assert first["body"] == second["body"]  # a retry sends the same bytes
    assert second["at"] - first["at"] >= 1.5  # backoff, not a hot loop
    for request in (first, second):
        expected = "sha256=" + hmac.new(secret.encode(), request["body"], hashlib.sha256).hexdigest()
        assert hmac.compare_digest(request["headers"]["X-Faceindex-Signature"], expected)
        assert request["headers"]["X-Faceindex-Event"] == "job.completed"
    body = json.loads(second["body"])
    assert body["event"] == "job.completed" and body["job"]["job_id"] == job["id"]
    assert body["job"]["processed"] == 1 and body["job"]["faces"] == job["faces_found"] == 1

    deadline = time.monotonic() + 30
    while True:
        log = api.get("/api/v1/webhooks/deliveries", {"job": job["id"]}).json()
        if log["results"] and log["results"][0]["status"] == "delivered" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert log["count"] == 1
    delivery = log["results"][0]
    assert delivery["status"] == "delivered" and delivery["delivered_at"]
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 200]
    assert delivery["url"] == f"{receiver.url}/this-job"
    assert str(delivery["id"]) == first["headers"]["X-Faceindex-Delivery"]

    # The owner's default URL is used when the job names none.
    wait_for_job(api, api.post("/api/v1/jobs", files_payload({"again.jpg": photo + b"\0"}),
                                format="multipart").json()["id"])
    receiver.wait_for(3)
    assert receiver.requests[2]["path"] == "/owner-default"


def test_webhooks_to_the_services_own_network_are_refused_unless_allowed(api, receiver, settings):
    from backend.jobs import webhooks
    from backend.jobs.models import Job, WebhookDelivery

    settings.FACEINDEX_WEBHOOK_ALLOW_PRIVATE = False
    job = Job.objects.create(owner=api.user, status=Job.Status.COMPLETED)
    delivery = WebhookDelivery.objects.create(owner=api.user, job=job, event="job.completed",
                                              url=f"{receiver.url}/hook", payload={"event": "job.completed"})
    assert webhooks.attempt(delivery.pk) is None  # no retry: refusing again would not change
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.attempts[0]["error"].startswith("target_not_allowed: 127.0.0.1")
    assert receiver.requests == []
    assert webhooks.refused_target("http://169.254.169.254/latest/meta-data") != ""


def test_a_webhook_that_answers_a_redirect_is_not_followed(api, receiver):
    """A public URL answering 302 to an internal address must not get the POST delivered there."""
    from backend.jobs import webhooks
    from backend.jobs.models import Job, WebhookDelivery

    redirects = []

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):
            redirects.append(self.path)
            self.send_response(self.path == "/307" and 307 or 302)
            self.send_header("Location", f"{receiver.url}/internal")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    redirector = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    try:
        job = Job.objects.create(owner=api.user, status=Job.Status.COMPLETED)
        for code in ("302", "307"):
            delivery = WebhookDelivery.objects.create(
                owner=api.user, job=job, event=f"job.completed.{code}",
                url=f"http://127.0.0.1:{redirector.server_address[1]}/{code}", payload={"event": "job.completed"})
            assert webhooks.attempt(delivery.pk) is None  # final: a retry would meet the same redirect
            delivery.refresh_from_db()
            assert delivery.status == WebhookDelivery.Status.FAILED
            assert delivery.attempts[0]["status_code"] == int(code)
            assert delivery.attempts[0]["error"].startswith("redirect_not_followed")
    finally:
        redirector.shutdown()
    assert redirects == ["/302", "/307"]
    assert receiver.requests == []  # nothing reached the redirect's target


def test_a_webhook_dropped_before_it_was_recorded_is_caught_up_by_the_sweep(api, receiver):
    from datetime import timedelta

    from django.utils import timezone

    from backend.jobs import webhooks
    from backend.jobs.models import Job, WebhookDelivery

    # As if the process died between completing the job and recording the webhook.
    job = Job.objects.create(owner=api.user, status=Job.Status.COMPLETED, webhook_url=f"{receiver.url}/late",
                             finished_at=timezone.now() - timedelta(minutes=30))
    assert webhooks.sweep_missed(min_age_s=60) == 1
    receiver.wait_for(2)  # the first answer is a 500: retried with backoff
    delivery = WebhookDelivery.objects.get(job=job)
    assert delivery.event == "job.completed" and receiver.requests[-1]["path"] == "/late"
    assert webhooks.sweep_missed(min_age_s=60) == 0  # recorded now: nothing more to catch up
