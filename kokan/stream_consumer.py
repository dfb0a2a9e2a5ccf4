"""One consumer of a Redis stream through a consumer group: the projectors' common loop.

Each batch is what a dead consumer left unacknowledged (taken over after an idle time),
else what is new; the subclass handles the batch, and only then is it acknowledged, so
a consumer that dies mid-batch leaves it for the next one. Handling must be idempotent:
a batch can be handled twice.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any, cast

import redis

BATCH = 500
"""Entries per read: large enough to amortise a SQL transaction, small enough to stay quick."""
BLOCK_MS = 1_000
"""How long a consumer waits for new entries before looking for abandoned ones."""
RECLAIM_IDLE_MS = 30_000
"""Entries read by a consumer that died are taken over after this long without an ack."""
RETRY_PAUSE_S = 1.0
"""After a failed batch (the database away), wait before trying it again."""

Entry = tuple[bytes, dict[bytes, bytes]]

log = logging.getLogger(__name__)


def this_consumer() -> str:
    """A name per process: host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class StreamConsumer:
    """Subclasses set `stream` and `group` and implement `handle`."""

    stream: str
    group: str
    what = "stream projection"
    """Named in the log when a batch fails."""

    def __init__(
        self,
        client: redis.Redis,
        consumer: str | None = None,
        reclaim_idle_ms: int = RECLAIM_IDLE_MS,
    ) -> None:
        self.redis = client
        self.consumer = consumer or this_consumer()
        self.reclaim_idle_ms = reclaim_idle_ms
        self._group_ready = False

    def handle(self, entries: list[Entry]) -> None:
        raise NotImplementedError

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:  # from the stream's start: whatever is still in it is handled
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def run_once(self, block_ms: int | None = None) -> int:
        """Handle what is waiting (and what a dead consumer left); how many entries."""
        self._ensure_group()
        entries: list[Entry] = []
        reclaimed = self.redis.xautoclaim(
            self.stream, self.group, self.consumer, min_idle_time=self.reclaim_idle_ms, count=BATCH
        )
        entries.extend(reclaimed[1])
        if not entries:
            answer = self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=BATCH, block=block_ms
            )
            for _stream, stream_entries in cast(list[Any], answer or []):
                entries.extend(stream_entries)
        if not entries:
            return 0
        self.handle(entries)
        self.redis.xack(self.stream, self.group, *[entry_id for entry_id, _fields in entries])
        return len(entries)

    def drain(self) -> int:
        """Handle until nothing is waiting (tests and `kokan worker --burst`)."""
        total = 0
        while True:
            done = self.run_once(block_ms=None)
            if done == 0:
                return total
            total += done

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once(block_ms=BLOCK_MS)
            except Exception:
                log.exception("%s failed; retrying", self.what)
                stop.wait(RETRY_PAUSE_S)
