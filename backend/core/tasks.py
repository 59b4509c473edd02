"""The base class of the tasks that must outlive an outage (every app's tasks.py uses it)."""
import logging

from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from backend.core import outages

log = logging.getLogger(__name__)


class OutageSafeTask(Task):
    """A task that meets a database/storage/broker outage keeps its message.

    Instead of failing (which acks, i.e. drops, the message) it waits until
    the services answer again (capped backoff with jitter, bounded by
    FACEINDEX_OUTAGE_WAIT_S so it stays inside the time limit), then puts its
    message back at the head of the queue. While it waits this worker takes
    nothing new, so an outage no longer burns through the whole queue.
    """

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except (Retry, Reject, Ignore):
            raise
        except Exception as exc:
            if self.request.is_eager or not outages.is_outage(exc):
                raise
            log.warning("%s[%s] met an outage (%s: %s); waiting, then re-queueing its message",
                        self.name, self.request.id, type(exc).__name__, exc)
            still_down = outages.wait_until_reachable()
            if still_down:
                log.warning("%s still unreachable; message goes back to the queue", " and ".join(still_down))
            raise Reject(exc, requeue=True) from exc
