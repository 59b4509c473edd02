"""Completion webhooks: signed POSTs with retries and a delivery log.

Body: the JSON job summary (stored once per delivery, so every retry sends
the same bytes). Signed the Standard Webhooks way (standardwebhooks.com):
``webhook-id`` (the delivery id, stable across retries, for receiver-side
dedup), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``,
where the key is the base64 part of the owner's ``whsec_...`` secret. Signing
the id and the time, not only the body, lets a receiver refuse a replayed
delivery (``verify`` below; the README shows a receiver). Also sent:
``X-Faceindex-Event``. A 2xx answer delivers; anything else is retried with
exponential, jittered backoff (FACEINDEX_WEBHOOK_BACKOFF_S, _BACKOFF_MAX_S) up
to FACEINDEX_WEBHOOK_MAX_ATTEMPTS.
"""
from __future__ import annotations

import base64
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

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from .models import Job, WebhookDelivery, WebhookEndpoint
from .selectors import job_summary

log = logging.getLogger(__name__)


def endpoint_for(owner) -> WebhookEndpoint:
    """The owner's endpoint settings, created with a fresh secret on first use."""
    endpoint, _ = WebhookEndpoint.objects.get_or_create(owner=owner, defaults={"secret": new_secret()})
    return endpoint


SECRET_PREFIX = "whsec_"
# How far a receiver lets a delivery's timestamp stray from its clock (Standard Webhooks' default).
TOLERANCE_S = 5 * 60


class InvalidSignature(Exception):
    """A delivery whose signature does not match, or whose timestamp is too old or too new (a replay)."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    # Secrets made before Standard Webhooks signing (64 hex digits) sign with their own bytes.
    return base64.b64decode(secret[len(SECRET_PREFIX):]) if secret.startswith(SECRET_PREFIX) else secret.encode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: HMAC-SHA256 over ``{id}.{timestamp}.{body}``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()


def verify(secret: str, headers, body: bytes, *, now: float | None = None, tolerance_s: float = TOLERANCE_S) -> None:
    """What a receiver does: raises InvalidSignature unless ``body`` was signed with ``secret`` recently.

    ``headers`` is any mapping with the webhook-* headers (case as sent).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        message_id, timestamp = lowered["webhook-id"], int(lowered["webhook-timestamp"])
        signatures = lowered["webhook-signature"].split()
    except (KeyError, ValueError):
        raise InvalidSignature("missing or malformed webhook-id / webhook-timestamp / webhook-signature")
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_s:
        raise InvalidSignature(f"timestamp {timestamp} is more than {tolerance_s:.0f} s from now")
    expected = sign(secret, message_id, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise InvalidSignature("no signature matches")


def encode(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


def payload_for(job: Job, event: str) -> dict:
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
    webhook-id.
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
    current_app.send_task("faceindex.deliver_webhook", args=[delivery_id], countdown=countdown)


def attempt(delivery_id: int) -> bool:
    """POST once and log it; True when the delivery should be tried again (the task backs off)."""
    delivery = WebhookDelivery.objects.select_related("owner").get(pk=delivery_id)
    if delivery.status != WebhookDelivery.Status.PENDING:
        return False
    body = encode(delivery.payload)
    message_id, timestamp = str(delivery.pk), int(time.time())
    request = urllib.request.Request(delivery.url, data=body, method="POST", headers={
        "Content-Type": "application/json",
        "User-Agent": "faceindex-webhook/1",
        "X-Faceindex-Event": delivery.event,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(endpoint_for(delivery.owner).secret, message_id, timestamp, body),
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
    return delivery.status == WebhookDelivery.Status.PENDING
