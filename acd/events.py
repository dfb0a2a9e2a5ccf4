"""The ACD's event stream: every state change, in the order Redis applied them.

The scripts append to one Redis stream in the same atomic step as the change itself,
so the stream never disagrees with the state: the live floor tails it, KPIs and the
call-detail record (queue and answer times) are computed from it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import redis

from acd.keys import DEFAULT_NAMESPACE, Keys

EVENT_STREAM_MAXLEN = 1_000_000
"""About a busy week of events (~100 per call); trimmed approximately (XADD MAXLEN ~),
so trimming costs nothing per write. KPI history is copied out before it ages off."""
READ_BATCH = 1000
"""Entries per XRANGE / XREAD round trip when reading the stream."""


class EventType(StrEnum):
    JOIN = "join"
    OFFER = "offer"
    ANSWER = "answer"
    NO_ANSWER = "no-answer"
    ABANDON = "abandon"
    END = "end"
    """A connected call finished (result completed), or a task was cancelled."""
    VOICEMAIL = "voicemail"
    """Max wait reached; the caller leaves the ACD for voicemail."""
    OVERFLOW = "overflow"
    CALLBACK = "callback"
    WRAP_UP = "wrap-up"
    WRAP_UP_END = "wrap-up-end"
    STATUS = "status"


TERMINAL = frozenset({EventType.ABANDON, EventType.END, EventType.VOICEMAIL})
"""Exactly one of these closes every call that entered the ACD."""


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    at_ms: int
    fields: dict[str, str]

    def get(self, name: str) -> str:
        return self.fields.get(name, "")


def decode_entry(entry_id: bytes | str, raw: Mapping[Any, Any]) -> Event:
    """One stream entry as an Event (the live floor and the KPI history read the same)."""
    fields = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    return Event(
        id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        type=fields.pop("type", ""),
        at_ms=int(fields.pop("at", "0")),
        fields=fields,
    )


class EventLog:
    """Reads one ACD's stream; writing is the scripts' job alone."""

    def __init__(self, client: redis.Redis, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.redis = client
        self.key = Keys(namespace).events

    def read(self, after: str = "-", count: int = READ_BATCH) -> list[Event]:
        """Up to `count` events after the id `after` (exclusive; "-" from the start)."""
        start = after if after == "-" else f"({after}"
        entries = cast(
            "list[tuple[bytes, dict[bytes, bytes]]]",
            self.redis.xrange(self.key, min=start, max="+", count=count),
        )
        return [decode_entry(entry_id, raw) for entry_id, raw in entries]

    def all(self) -> Iterator[Event]:
        after = "-"
        while True:
            batch = self.read(after)
            yield from batch
            if len(batch) < READ_BATCH:
                return
            after = batch[-1].id

    def length(self) -> int:
        return int(self.redis.xlen(self.key))
