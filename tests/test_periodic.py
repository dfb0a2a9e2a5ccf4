"""Kokan's periodic jobs reach their queue through rq's cron scheduler."""

from __future__ import annotations

import redis

from kokan.periodic import (
    PROACTIVE_SWEEP_S,
    RETENTION_CRON,
    SLA_SWEEP_S,
    STALLED_FETCH_SWEEP_S,
    WEBHOOK_SWEEP_S,
    scheduler,
)
from kokan.work_queues import (
    DEFAULT_QUEUE,
    MESSAGES_QUEUE,
    RECORDINGS_QUEUE,
    WEBHOOKS_QUEUE,
    queue,
)


def test_the_schedule_names_each_periodic_job_and_enqueues_what_is_due(
    redis_client: redis.Redis,
) -> None:
    cron = scheduler(redis_client)
    plan = {job.func_name: (job.queue_name, job.interval, job.cron) for job in cron._cron_jobs}
    assert plan == {
        "recording.jobs.requeue_stalled_fetches": (RECORDINGS_QUEUE, STALLED_FETCH_SWEEP_S, None),
        "recording.retention.apply_retention_job": (RECORDINGS_QUEUE, None, RETENTION_CRON),
        "tickets.sla.sweep_sla": (DEFAULT_QUEUE, SLA_SWEEP_S, None),
        "tickets.subscriptions.sweep_deliveries": (WEBHOOKS_QUEUE, WEBHOOK_SWEEP_S, None),
        "tickets.proactive.sweep_due": (MESSAGES_QUEUE, PROACTIVE_SWEEP_S, None),
    }
    enqueued = cron.enqueue_jobs()
    assert enqueued, "a sweep is due at once on start"
    waiting = [job.func_name for job in queue(redis_client, RECORDINGS_QUEUE).jobs]
    assert "recording.jobs.requeue_stalled_fetches" in waiting
