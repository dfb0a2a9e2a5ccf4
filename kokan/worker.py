"""The rq worker process: runs Kokan's slow work (downloads, conversions, outbound messages)."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import redis

from acd.history import HistoryProjector
from kokan.config import Settings
from kokan.db import Database
from kokan.selfcheck import SELFCHECK_RESULT_TTL_S, selfcheck
from kokan.work_queues import ALL_QUEUES, queue
from recording.model_worker import ModelSharingWorker
from tickets import subscriptions
from tickets.cdr import CdrProjector

SELFCHECK_POLL_S = 0.1
PROJECTOR_STOP_S = 5.0
"""The projector finishes the batch in hand (one SQL transaction) before the worker exits."""


def run_worker(
    connection: redis.Redis,
    database: Database,
    *,
    burst: bool = False,
    settings: Settings | None = None,
) -> None:
    """rq jobs in the main thread; the call-detail projector and the ACD history projector
    beside them in threads, so every worker process also keeps the calls table and the KPI
    history up to date (consumer groups share the work)."""
    if settings is not None:  # the projector's call events reach webhook subscribers at once
        subscriptions.use_redis(connection, settings.outbound_webhooks)
    projector = CdrProjector(
        connection, database, tickets=settings.tickets if settings is not None else None
    )
    history = HistoryProjector(connection, database)
    if burst:
        projector.drain()
        history.drain()
        ModelSharingWorker(list(ALL_QUEUES), connection=connection).work(
            burst=True, logging_level="INFO"
        )
        projector.drain()
        history.drain()
        return
    stop = threading.Event()
    thread = threading.Thread(
        target=projector.run_forever, args=(stop,), name="cdr-projector", daemon=True
    )
    thread.start()
    history_thread = threading.Thread(
        target=history.run_forever, args=(stop,), name="acd-history-projector", daemon=True
    )
    history_thread.start()
    try:
        worker = ModelSharingWorker(list(ALL_QUEUES), connection=connection)
        worker.work(with_scheduler=True, logging_level="INFO")
    finally:
        stop.set()
        thread.join(PROJECTOR_STOP_S)
        history_thread.join(PROJECTOR_STOP_S)


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
