"""Names of the rq queues; every slow job goes to one of these."""

from __future__ import annotations

import redis
from rq import Queue

DEFAULT_QUEUE = "default"
"""Short jobs that must not wait behind long conversions (outbound messages, self-checks)."""

RECORDINGS_QUEUE = "recordings"
"""Downloads (and later conversions) of recordings: minutes each, so kept off the default queue."""

MESSAGES_QUEUE = "messages"
"""Outbound SMS/WhatsApp replies: seconds each, kept apart so a backlog of recordings or a
Twilio outage for messages does not hold up the other."""

WEBHOOKS_QUEUE = "webhooks"
"""Outbound webhook deliveries (tickets.subscriptions): a slow or dead subscriber waits out
its timeouts here, never in front of customers' messages."""

ASR_QUEUE = "asr"
"""Speech answers of callers on the line (ivr.speech): a caller waits in silence for each,
so they go before everything else, and only workers with the vosk model loaded take them."""

ALL_QUEUES = (ASR_QUEUE, DEFAULT_QUEUE, MESSAGES_QUEUE, WEBHOOKS_QUEUE, RECORDINGS_QUEUE)
"""What `kokan worker` listens to, in priority order; later issues append their queues."""


def queue(connection: redis.Redis, name: str = DEFAULT_QUEUE) -> Queue:
    return Queue(name, connection=connection)
