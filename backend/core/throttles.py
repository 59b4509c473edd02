"""Per-user request limits on the endpoints that run the models or take uploads.

A view opts in with ``throttle_scope`` ("search", "verify", "enroll", "jobs");
its rate is FACEINDEX_THROTTLE_<SCOPE> ("N/second|minute|hour|day", "off" for
none), read on every request so a settings change applies at once. Only
writes count (POST): reading a job's progress is never limited. Counters live
in the shared cache (Redis), so the limit holds across API processes. A
throttled request gets 429 with Retry-After (DRF) in the API's error shape.
With Redis unreachable the limit is not enforced (the request goes on): a job
posted during a broker outage is still accepted into the outbox.
"""
import logging

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import UserRateThrottle

from backend.core import outages

log = logging.getLogger(__name__)


class ScopedUserThrottle(UserRateThrottle):
    def __init__(self):
        pass  # the rate depends on the view: set in allow_request

    def get_rate(self):
        return getattr(settings, f"FACEINDEX_THROTTLE_{self.scope.upper()}", "") or None

    def allow_request(self, request, view):
        self.scope = getattr(view, "throttle_scope", None)
        if not self.scope or request.method in SAFE_METHODS:
            return True
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            return super().allow_request(request, view)
        except Exception as exc:
            if not outages.is_outage(exc):
                raise
            log.warning("throttle %s not enforced: its cache is unreachable (%s)", self.scope, exc)
            return True
