"""Call-detail records fed from a Redis stream, so webhooks never wait for SQL.

Drivers append small events (a call arrived, was queued, ended with an outcome) to one
stream; projectors in `kokan worker` processes read it through a consumer group and
upsert the `calls` table in batches. Every event carries the call's identity and parties,
and applying one only fills fields that are still empty, so duplicates and any order of
delivery give the same row.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from sqlalchemy import Table, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from kokan import config
from kokan.config import TicketsSettings
from kokan.db import Database
from kokan.stream_consumer import RECLAIM_IDLE_MS, Entry, StreamConsumer
from tickets.models import Call, new_call_id

STREAM = "kokan:cdr:events"
"""One stream for every transport's call events; the ACD appends queue and answer events."""
GROUP = "cdr-projector"
STREAM_MAX_LEN = 1_000_000
"""Events are projected within seconds; the cap only bounds memory if every projector is down."""
XADD_PREFIX = ("XADD", STREAM, "MAXLEN", "~", str(STREAM_MAX_LEN), "*")
"""An event's XADD up to its fields: trimmed approximately (whole macro-nodes, cheap)."""

log = logging.getLogger(__name__)

CALLS = cast(Table, Call.__table__)


@dataclass(frozen=True)
class CallIdentity:
    provider: str
    provider_call_id: str
    from_number: str
    to_number: str
    channel: str = "voice"
    direction: str = "inbound"


def _ms(moment: dt.datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def _moment(ms: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC)


def event_fields(
    kind: str, call: CallIdentity, at: dt.datetime, **extra: str | None
) -> dict[str, str]:
    fields = {
        "type": kind,
        "provider": call.provider,
        "provider_call_id": call.provider_call_id,
        "from": call.from_number,
        "to": call.to_number,
        "channel": call.channel,
        "direction": call.direction,
        "at": _ms(at),
    }
    fields.update({key: value for key, value in extra.items() if value is not None})
    return fields


def event_command(
    kind: str, call: CallIdentity, at: dt.datetime, **extra: str | None
) -> tuple[str, ...]:
    """One event's XADD as a command, to go out with a webhook's other commands in one
    round trip (ivr.call_store's `also`)."""
    fields = event_fields(kind, call, at, **extra)
    return (*XADD_PREFIX, *itertools.chain.from_iterable(fields.items()))


def append(
    client: redis.Redis | redis.client.Pipeline,
    kind: str,
    call: CallIdentity,
    at: dt.datetime,
    **extra: str | None,
) -> None:
    """Add one event (on a pipeline, it goes out with the caller's other commands)."""
    client.execute_command(*event_command(kind, call, at, **extra))  # type: ignore[no-untyped-call]


def _insert_ignoring_duplicates(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(
            postgresql.insert(CALLS).on_conflict_do_nothing(
                index_elements=["provider", "provider_call_id"]
            ),
            list(rows),
        )
    else:
        connection.execute(sqlite.insert(CALLS).on_conflict_do_nothing(), list(rows))


def apply(connection: Connection, events: Sequence[Mapping[str, str]]) -> None:
    """Upsert each event's call, then fill the fields the event knows that are still empty."""
    rows = {}
    for event in events:
        key = (event["provider"], event["provider_call_id"])
        if key not in rows:
            rows[key] = {
                "call_id": new_call_id(),
                "provider": event["provider"],
                "provider_call_id": event["provider_call_id"],
                "from_number": event.get("from", "")[:64],
                "to_number": event.get("to", "")[:64],
                "channel": event.get("channel", "voice"),
                "direction": event.get("direction", "inbound"),
                "arrived_at": _moment(event["at"]),
            }
    if rows:
        _insert_ignoring_duplicates(connection, list(rows.values()))
    for event in events:
        match = (CALLS.c.provider == event["provider"]) & (
            CALLS.c.provider_call_id == event["provider_call_id"]
        )
        at = _moment(event["at"])
        if event["type"] == "arrived":
            # a later event may have made the row first, without the parties or the real start
            connection.execute(
                update(CALLS).where(match, CALLS.c.arrived_at > at).values(arrived_at=at)
            )
            if event.get("from"):
                connection.execute(
                    update(CALLS)
                    .where(match, CALLS.c.from_number == "")
                    .values(from_number=event["from"][:64], to_number=event.get("to", "")[:64])
                )
            continue
        if event["type"] == "queued":
            connection.execute(
                update(CALLS)
                .where(match, CALLS.c.queued_at.is_(None))
                .values(queued_at=at, queue=event.get("queue"))
            )
            if event.get("survey"):
                connection.execute(
                    update(CALLS)
                    .where(match, CALLS.c.survey_flow.is_(None))
                    .values(survey_flow=event["survey"][:64])
                )
        elif event["type"] == "answered":
            connection.execute(
                update(CALLS).where(match, CALLS.c.answered_at.is_(None)).values(answered_at=at)
            )
        elif event["type"] == "outcome":
            connection.execute(
                update(CALLS)
                .where(match, CALLS.c.outcome.is_(None))
                .values(outcome=event.get("outcome"))
            )
        elif event["type"] == "ended":
            connection.execute(
                update(CALLS).where(match, CALLS.c.ended_at.is_(None)).values(ended_at=at)
            )
        elif event["type"] == "survey":
            pass  # not a column of the call: the tickets step keeps the answers
        else:
            log.warning("unknown call event type %r ignored", event["type"])


def _decoded(fields: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (key.decode() if isinstance(key, bytes) else key): (
            value.decode() if isinstance(value, bytes) else value
        )
        for key, value in fields.items()
    }


class CdrProjector(StreamConsumer):
    """Reads the call event stream through a consumer group and writes the calls table."""

    stream = STREAM
    group = GROUP
    what = "call-detail projection"

    def __init__(
        self,
        client: redis.Redis,
        database: Database,
        consumer: str | None = None,
        reclaim_idle_ms: int = RECLAIM_IDLE_MS,
        tickets: TicketsSettings | None = None,
    ) -> None:
        super().__init__(client, consumer, reclaim_idle_ms)
        self.database = database
        self._tickets = tickets

    def handle(self, entries: list[Entry]) -> None:
        events = [_decoded(fields) for _id, fields in entries if fields]
        with self.database.engine.begin() as connection:
            apply(connection, events)
        self._calls_to_tickets(events)

    # ---- step 2, apart from the call-detail records: calls become tickets ----

    def _calls_to_tickets(self, events: Sequence[Mapping[str, str]]) -> None:
        """Ended calls become tickets per `tickets.call_rule` (tickets.call_tickets), in a
        transaction of their own after the records are committed: a failure here is logged
        and never holds up the calls table."""
        try:
            from tickets.call_tickets import follow_ups, survey_answers, tickets_for_calls

            if self._tickets is None:  # as jobs do: the worker's own config file and env
                self._tickets = config.load().settings.tickets
            calls = {
                (e["provider"], e["provider_call_id"]) for e in events if e["type"] != "arrived"
            }
            tickets_for_calls(self.database, self._tickets, calls)
            survey_answers(
                self.database, self._tickets, [e for e in events if e["type"] == "survey"]
            )
            follow_ups(self.database, self._tickets, calls)
        except Exception:
            log.exception("calls to tickets failed for this batch; call records are kept")
