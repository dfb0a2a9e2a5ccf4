"""The rq worker process: runs Kokan's slow work (downloads, conversions, outbound messages)."""

from __future__ import annotations

import secrets
import time
from typing import Any

import redis
from rq import Worker

from kokan.selfcheck import SELFCHECK_RESULT_TTL_S, selfcheck
from kokan.work_queues import ALL_QUEUES, queue

SELFCHECK_POLL_S = 0.1


def run_worker(connection: redis.Redis, *, burst: bool = False) -> None:
    worker = Worker(list(ALL_QUEUES), connection=connection)
    worker.work(burst=burst, with_scheduler=True, logging_level="INFO")


def check_worker(connection: redis.Redis, timeout_s: float) -> dict[str, Any] | None:
    """Enqueue a self-check and wait for a worker to answer it; None if none did in time."""
    token = secrets.token_hex(8)
    job = queue(connection).enqueue(selfcheck, token, result_ttl=SELFCHECK_RESULT_TTL_S)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = job.get_status(refresh=True)
        if status is not None and status.value == "finished":
            result = job.return_value()
            return dict(result) if isinstance(result, dict) else None
        if status is not None and status.value == "failed":
            return None
        time.sleep(SELFCHECK_POLL_S)
    job.cancel()
    return None
