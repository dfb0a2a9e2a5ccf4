"""Work that runs on a clock rather than on an event, enqueued by rq's cron scheduler
(`kokan cron`, one per deployment; a second one only enqueues the same idempotent jobs
twice)."""

from __future__ import annotations

import redis
from rq.cron import CronScheduler

from kokan.work_queues import DEFAULT_QUEUE, MESSAGES_QUEUE, RECORDINGS_QUEUE, WEBHOOKS_QUEUE
from recording.jobs import requeue_stalled_fetches
from recording.retention import apply_retention_job
from tickets.proactive import sweep_due
from tickets.sla import sweep_sla
from tickets.subscriptions import sweep_deliveries

STALLED_FETCH_SWEEP_S = 600
"""A fetch job lost with its worker is found again within ten minutes; Twilio keeps the
recording for far longer than that."""
RETENTION_CRON = "17 3 * * *"
"""Daily at 03:17 server time: off the busy hours, and off the hour that every other
system's nightly job picks."""

SLA_SWEEP_S = 60
"""A breach is flagged within a minute of its due time; the shortest target is 15 minutes."""
PROACTIVE_SWEEP_S = 60
"""A proactive message set for a time (or for the end of quiet hours) leaves within a
minute of it; SMS needs no finer clock."""
WEBHOOK_SWEEP_S = 60
"""A delivery whose enqueue was lost (or raised by the call projector) leaves within about
two minutes (tickets.subscriptions.SWEEP_GRACE_S + this)."""


def scheduler(connection: redis.Redis) -> CronScheduler:
    cron = CronScheduler(connection=connection, logging_level="INFO")
    cron.register(requeue_stalled_fetches, RECORDINGS_QUEUE, interval=STALLED_FETCH_SWEEP_S)
    cron.register(apply_retention_job, RECORDINGS_QUEUE, cron=RETENTION_CRON)
    cron.register(sweep_sla, DEFAULT_QUEUE, interval=SLA_SWEEP_S)
    cron.register(sweep_deliveries, WEBHOOKS_QUEUE, interval=WEBHOOK_SWEEP_S)
    cron.register(sweep_due, MESSAGES_QUEUE, interval=PROACTIVE_SWEEP_S)
    return cron
