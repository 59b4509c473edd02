"""Task retries back off by the tasks' retry_backoff, retry_backoff_max and retry_jitter options (no worker needed)."""
from __future__ import annotations

from django.conf import settings

from backend.jobs.tasks import backoff, deliver_webhook, process_batch


def delays(task, retries: int, samples: int = 200) -> list[float]:
    task.push_request(retries=retries)
    try:
        return [backoff(task) for _ in range(samples)]
    finally:
        task.pop_request()


def test_batch_retries_grow_exponentially_with_jitter_in_the_upper_half():
    assert process_batch.retry_jitter
    for retries in range(3):
        full = process_batch.retry_backoff * 2 ** retries
        drawn = delays(process_batch, retries)
        assert all(full / 2 <= d <= full for d in drawn), (retries, min(drawn), max(drawn))
        assert len(set(drawn)) > 1  # jittered: a fleet of workers does not retry in lockstep


def test_retry_delays_stop_growing_at_retry_backoff_max():
    drawn = delays(process_batch, retries=20)
    assert max(drawn) <= process_batch.retry_backoff_max
    assert min(drawn) >= process_batch.retry_backoff_max / 2


def test_webhook_retries_follow_the_webhook_settings():
    assert deliver_webhook.retry_backoff == settings.FACEINDEX_WEBHOOK_BACKOFF_S
    assert deliver_webhook.retry_backoff_max == settings.FACEINDEX_WEBHOOK_BACKOFF_MAX_S
    first = delays(deliver_webhook, retries=0)
    assert all(settings.FACEINDEX_WEBHOOK_BACKOFF_S / 2 <= d <= settings.FACEINDEX_WEBHOOK_BACKOFF_S for d in first)
