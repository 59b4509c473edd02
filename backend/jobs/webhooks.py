"""Completion webhooks: signed POSTs with retries and a delivery log.

Body: the JSON job summary (stored once per delivery, so every retry sends
the same bytes). Headers: ``X-Faceindex-Event``, ``X-Faceindex-Delivery``
(id, stable across retries, for receiver-side dedup) and
``X-Faceindex-Signature: sha256=<hex HMAC-SHA256(owner secret, body)>``.
A 2xx answer delivers; anything else is retried after 2, 4, 8, ... seconds
(FACEINDEX_WEBHOOK_BACKOFF_S doubling) up to FACEINDEX_WEBHOOK_MAX_ATTEMPTS.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from datetime import timedelta
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from .models import Job, WebhookDelivery, WebhookEndpoint

log = logging.getLogger(__name__)


def endpoint_for(owner) -> WebhookEndpoint:
    """The owner's endpoint settings, created with a fresh secret on first use."""
    endpoint, _ = WebhookEndpoint.objects.get_or_create(owner=owner, defaults={"secret": secrets.token_hex(32)})
    return endpoint


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


def payload_for(job: Job, event: str) -> dict:
    from backend.reports.selectors import job_summary

    return {"event": event, "job": job_summary(job=job)}


def schedule(job_id: int, event: str) -> WebhookDelivery | None:
    """Record the delivery (once per job and event) and send it to a worker."""
    job = Job.objects.select_related("owner").get(pk=job_id)
    endpoint = endpoint_for(job.owner)
    url = job.webhook_url or endpoint.url
    if not url:
        return None
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(owner=job.owner, job=job, event=event, url=url,
                                                      payload=payload_for(job, event))
    except IntegrityError:
        return None  # already scheduled (a re-run of the last image)
    send(delivery.pk)
    return delivery


def refused_target(url: str) -> str:
    """Why a webhook URL may not be called, or "" when it may.

    Checked when sending (not only when the URL is saved), on every address
    the host resolves to: a webhook must not become a way to reach the
    service's own network (metadata endpoints, the database, the admin).
    FACEINDEX_WEBHOOK_ALLOW_PRIVATE lifts this for trusted setups and tests.
    """
    if settings.FACEINDEX_WEBHOOK_ALLOW_PRIVATE:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "target_not_allowed: not an http(s) URL"
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError:
        return ""  # unresolvable now: the request fails and is retried like any network error
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            return f"target_not_allowed: {parts.hostname} resolves to non-public address {address}"
    return ""


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is the answer, never followed: the next hop's address was never checked
    (refused_target), so a public URL could bounce the POST into the service's network."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError with the 3xx


_opener = urllib.request.build_opener(_RefuseRedirects)


def sweep_missed(*, min_age_s: float) -> int:
    """Catch up on webhooks a crash or a broker outage dropped; returns how many were (re)sent.

    - a finished job whose owner or job has a URL but no delivery for its event:
      scheduling failed before the delivery was recorded;
    - a delivery never attempted: its message was lost after it was recorded.
    A delivery that was merely slow may be sent twice; receivers dedupe on
    X-Faceindex-Delivery.
    """
    cutoff = timezone.now() - timedelta(seconds=min_age_s)
    resent = 0
    recorded = WebhookDelivery.objects.filter(job=OuterRef("pk"), event=Concat(Value("job."), OuterRef("status")))
    finished = (Job.objects.filter(status__in=(Job.Status.COMPLETED, Job.Status.CANCELLED), finished_at__lt=cutoff)
                .filter(Q(webhook_url__gt="") | Q(owner__webhook__url__gt=""))
                .filter(~Exists(recorded)))
    for job in finished.only("id", "status")[:1000]:
        resent += schedule(job.pk, f"job.{job.status}") is not None
    for delivery_id in (WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, attempts=[],
                                                       created_at__lt=cutoff).values_list("id", flat=True)[:1000]):
        send(delivery_id)
        resent += 1
    return resent


def send(delivery_id: int, countdown: float = 0) -> None:
    from workers.celery_app import app

    app.send_task("faceindex.deliver_webhook", args=[delivery_id], countdown=countdown)


def attempt(delivery_id: int) -> float | None:
    """POST once and log it; returns seconds until the next try, or None when done."""
    delivery = WebhookDelivery.objects.select_related("owner").get(pk=delivery_id)
    if delivery.status != WebhookDelivery.Status.PENDING:
        return None
    body = encode(delivery.payload)
    request = urllib.request.Request(delivery.url, data=body, method="POST", headers={
        "Content-Type": "application/json",
        "User-Agent": "faceindex-webhook/1",
        "X-Faceindex-Event": delivery.event,
        "X-Faceindex-Delivery": str(delivery.pk),
        "X-Faceindex-Signature": sign(endpoint_for(delivery.owner).secret, body),
    })
    started = time.monotonic()
    status_code, error = None, ""
    refused = refused_target(delivery.url)
    if refused:
        error = refused
    else:
        try:
            with _opener.open(request, timeout=settings.FACEINDEX_WEBHOOK_TIMEOUT_S) as response:
                status_code = response.status
        except urllib.error.HTTPError as exc:
            status_code, error = exc.code, f"HTTP {exc.code}"
            if 300 <= exc.code < 400:
                # Final, like a refused target: retrying would get the same redirect.
                refused = error = f"redirect_not_followed: HTTP {exc.code} to {exc.headers.get('Location', '?')}"
        except (urllib.error.URLError, OSError) as exc:
            error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    ok = status_code is not None and 200 <= status_code < 300
    delivery.attempts = [*delivery.attempts, {"at": timezone.now().isoformat(), "status_code": status_code,
                                              "error": error, "seconds": round(time.monotonic() - started, 3)}]
    if ok:
        delivery.status, delivery.delivered_at = WebhookDelivery.Status.DELIVERED, timezone.now()
    elif refused or len(delivery.attempts) >= settings.FACEINDEX_WEBHOOK_MAX_ATTEMPTS:
        delivery.status = WebhookDelivery.Status.FAILED
        log.warning("webhook %s to %s failed after %d attempts", delivery.pk, delivery.url, len(delivery.attempts))
    delivery.save(update_fields=["attempts", "status", "delivered_at"])
    if delivery.status != WebhookDelivery.Status.PENDING:
        return None
    return settings.FACEINDEX_WEBHOOK_BACKOFF_S * 2 ** (len(delivery.attempts) - 1)
