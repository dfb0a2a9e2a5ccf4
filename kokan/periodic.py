"""Work that runs on a clock rather than on an event, enqueued by rq's cron scheduler
(`kokan cron`, one per deployment; a second one only enqueues the same idempotent jobs
twice)."""

from __future__ import annotations

import redis
from rq.cron import CronScheduler

from kokan.work_queues import RECORDINGS_QUEUE
from recording.jobs import requeue_stalled_fetches
from recording.retention import apply_retention_job

STALLED_FETCH_SWEEP_S = 600
"""A fetch job lost with its worker is found again within ten minutes; Twilio keeps the
recording for far longer than that."""
RETENTION_CRON = "17 3 * * *"
"""Daily at 03:17 server time: off the busy hours, and off the hour that every other
system's nightly job picks."""


def scheduler(connection: redis.Redis) -> CronScheduler:
    cron = CronScheduler(connection=connection, logging_level="INFO")
    cron.register(requeue_stalled_fetches, RECORDINGS_QUEUE, interval=STALLED_FETCH_SWEEP_S)
    cron.register(apply_retention_job, RECORDINGS_QUEUE, cron=RETENTION_CRON)
    return cron
