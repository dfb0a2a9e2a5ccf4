"""The ACD's KPI history: its event stream copied into SQL before the stream is trimmed.

The ACD's scripts append every change to one Redis stream (acd.events), trimmed to
about a week. `HistoryProjector`, a thread of `kokan worker` beside the call-detail
projector, reads it through a consumer group and keeps two tables (acd.models): one
row per queued call, and one row per agent status change whose end is the agent's
next change. Reports (admin.kpis) read those tables only.

Applying events is idempotent and tolerant of order: a call's row is made by whichever
of its events comes first, and each event then fills only what it knows by a rule that
gives the same result in any order (the join's time is the earliest; a result, once
set, is the same from every terminal event; an agent state's end is recomputed from
the rows around it). Batches take a PostgreSQL advisory lock, so projectors in several
worker processes never recompute the same agent's intervals from half-committed rows;
SQLite serialises writers by itself.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import redis
from sqlalchemy import Table, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from acd.events import Event, EventType, decode_entry
from acd.keys import DEFAULT_NAMESPACE, Keys
from acd.models import AcdAgentState, AcdCall
from acd.schemas import AgentStatus
from kokan.db import Database
from kokan.stream_consumer import RECLAIM_IDLE_MS, Entry, StreamConsumer

GROUP = "acd-history"
"""Its own consumer group: the live floor and other readers keep their own positions."""
ADVISORY_LOCK_KEY = 0x4B4F4B414E4843
"""PostgreSQL advisory lock ("KOKANHC") held for one batch's transaction: agent state
intervals are recomputed from committed neighbours, so two batches must not interleave."""
STREAM_ID_DIGITS = 15
"""Both halves of a stream id padded to this many digits sort as the stream does."""
SHORT_FLAG = "1"
"""The abandon event's `short` field for a caller gone within the queue's short-abandon time."""

log = logging.getLogger(__name__)

CALLS = cast(Table, AcdCall.__table__)
STATES = cast(Table, AcdAgentState.__table__)

CALL_EVENTS = frozenset(
    {
        EventType.JOIN,
        EventType.OFFER,
        EventType.ANSWER,
        EventType.ABANDON,
        EventType.END,
        EventType.VOICEMAIL,
        EventType.OVERFLOW,
        EventType.CALLBACK,
        EventType.WRAP_UP,
    }
)
"""Events that change a call's row; no-answer and wrap-up-end show in the agent states."""


def event_key(stream_id: str) -> str:
    """A stream id ("1733359-5") as a string that sorts in stream order."""
    ms, _, seq = stream_id.partition("-")
    return f"{int(ms):0{STREAM_ID_DIGITS}d}-{int(seq or 0):0{STREAM_ID_DIGITS}d}"


def _moment(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _seconds(ms: str) -> float | None:
    return int(ms) / 1000 if ms else None


def _insert_ignoring_duplicates(
    connection: Connection, table: Table, key: str, rows: Sequence[Mapping[str, Any]]
) -> None:
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        connection.execute(
            postgresql.insert(table).on_conflict_do_nothing(index_elements=[key]), list(rows)
        )
    else:
        connection.execute(sqlite.insert(table).on_conflict_do_nothing(), list(rows))


def _first_row(event: Event) -> dict[str, Any]:
    """The row a call's first-seen event makes; later events correct what it guessed."""
    wait = _seconds(event.get("wait_ms"))
    at = _moment(event.at_ms)
    queue = event.get("to") if event.type == EventType.OVERFLOW else event.get("queue")
    return {
        "call_id": event.get("call"),
        "queue": queue or "",
        "entry_queue": event.get("queue") if event.type == EventType.JOIN else None,
        "channel": event.get("channel") or "voice",
        "kind": "call",
        "priority": 0,
        "joined_at": at - dt.timedelta(seconds=wait) if wait is not None else at,
        "talk_seconds": 0.0,
        "hold_seconds": 0.0,
        "wrapup_seconds": 0.0,
    }


def _apply_call(connection: Connection, event: Event) -> None:
    c = CALLS.c
    match = c.call_id == event.get("call")
    at = _moment(event.at_ms)
    wait = _seconds(event.get("wait_ms"))

    def run(*conditions: ColumnElement[bool], **values: Any) -> None:
        connection.execute(update(CALLS).where(match, *conditions).values(**values))

    still_waiting = (c.answered_at.is_(None), c.ended_at.is_(None))
    if wait is not None:  # every event with a wait knows when the call joined
        joined = at - dt.timedelta(seconds=wait)
        run(c.joined_at > joined, joined_at=joined)
    kind = event.type
    if kind == EventType.JOIN:
        run(
            joined_at=at,
            entry_queue=event.get("queue"),
            priority=int(event.get("priority") or 0),
            channel=event.get("channel") or "voice",
        )
        run(*still_waiting, c.overflowed_at.is_(None), queue=event.get("queue"))
        if event.get("caller"):
            run(c.customer.is_(None), customer=event.get("caller")[:64])
    elif kind == EventType.OFFER:
        run(or_(c.first_offered_at.is_(None), c.first_offered_at > at), first_offered_at=at)
    elif kind == EventType.ANSWER:
        run(
            c.answered_at.is_(None),
            answered_at=at,
            agent_id=event.get("agent"),
            wait_seconds=wait,
            queue=event.get("queue"),
        )
        if event.get("kind"):
            run(kind=event.get("kind"))
    elif kind == EventType.ABANDON:
        short = event.get("short") == SHORT_FLAG
        run(
            abandoned_at=at,
            ended_at=at,
            result="short-abandon" if short else "abandoned",
            wait_seconds=wait,
            queue=event.get("queue"),
        )
    elif kind == EventType.END:
        values: dict[str, Any] = {
            "ended_at": at,
            "result": event.get("result"),
            "queue": event.get("queue"),
        }
        if event.get("talk_ms"):
            values["talk_seconds"] = _seconds(event.get("talk_ms"))
        if wait is not None:  # cancelled before an answer
            values["wait_seconds"] = wait
        run(**values)
    elif kind == EventType.VOICEMAIL:
        run(ended_at=at, result="voicemail", wait_seconds=wait, queue=event.get("queue"))
    elif kind == EventType.OVERFLOW:
        later = or_(c.overflowed_at.is_(None), c.overflowed_at < at)
        run(*still_waiting, later, queue=event.get("to"))
        run(later, overflowed_at=at)
    elif kind == EventType.CALLBACK:
        run(kind="callback")
        if event.get("number"):
            run(c.customer.is_(None), customer=event.get("number")[:64])
    elif kind == EventType.WRAP_UP:
        run(
            wrapup_started_at=at,
            wrapup_event_key=event_key(event.id),
            agent_id=event.get("agent"),
        )


def _relink(connection: Connection, agent_id: str, from_key: str) -> None:
    """Each of the agent's states from just before `from_key` on ends where the next begins."""
    s = STATES.c
    previous = connection.execute(
        select(func.max(s.event_key)).where(s.agent_id == agent_id, s.event_key < from_key)
    ).scalar()
    rows = connection.execute(
        select(s.id, s.started_at, s.ended_at)
        .where(s.agent_id == agent_id, s.event_key >= (previous or from_key))
        .order_by(s.event_key)
    ).all()
    for row, following in zip(rows, [*rows[1:], None], strict=True):
        ended = following.started_at if following is not None else None
        if row.ended_at != ended:
            connection.execute(update(STATES).where(s.id == row.id).values(ended_at=ended))


def _close_wrapups(connection: Connection, agents: Iterable[str]) -> None:
    """A wrap-up ends at the agent's first status after it that is not wrap-up (the
    wrap-up-end event names no call; the agent's own states do)."""
    c, s = CALLS.c, STATES.c
    for agent_id in sorted(set(agents)):
        open_wrapups = connection.execute(
            select(c.id, c.wrapup_started_at, c.wrapup_event_key).where(
                c.agent_id == agent_id,
                c.wrapup_event_key.is_not(None),
                c.wrapup_ended_at.is_(None),
            )
        ).all()
        for call in open_wrapups:
            ended = connection.execute(
                select(s.started_at)
                .where(
                    s.agent_id == agent_id,
                    s.event_key > call.wrapup_event_key,
                    s.status != AgentStatus.WRAP_UP.value,
                )
                .order_by(s.event_key)
                .limit(1)
            ).scalar()
            if ended is None or call.wrapup_started_at is None:
                continue
            connection.execute(
                update(CALLS)
                .where(c.id == call.id)
                .values(
                    wrapup_ended_at=ended,
                    wrapup_seconds=max(0.0, (ended - call.wrapup_started_at).total_seconds()),
                )
            )


def apply(connection: Connection, events: Sequence[Event]) -> None:
    """Copy one batch of ACD events into the history tables, in the caller's transaction."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    call_events = [e for e in events if e.type in CALL_EVENTS and e.get("call")]
    first: dict[str, dict[str, Any]] = {}
    for event in call_events:
        first.setdefault(event.get("call"), _first_row(event))
    _insert_ignoring_duplicates(connection, CALLS, "call_id", list(first.values()))
    for event in call_events:
        _apply_call(connection, event)

    states = [
        {
            "event_key": event_key(e.id),
            "agent_id": e.get("agent"),
            "status": e.get("to"),
            "presence": e.get("presence"),
            "reason": e.get("reason")[:64],
            "started_at": _moment(e.at_ms),
        }
        for e in events
        if e.type == EventType.STATUS and e.get("agent")
    ]
    _insert_ignoring_duplicates(connection, STATES, "event_key", states)
    earliest: dict[str, str] = {}
    for state in states:
        agent_id, key = str(state["agent_id"]), str(state["event_key"])
        earliest[agent_id] = min(key, earliest.get(agent_id, key))
    for agent_id, key in sorted(earliest.items()):
        _relink(connection, agent_id, key)
    wrapping = {e.get("agent") for e in call_events if e.type == EventType.WRAP_UP}
    _close_wrapups(connection, {*earliest, *wrapping} - {""})


class HistoryProjector(StreamConsumer):
    """Reads the ACD's event stream through a consumer group and writes the history."""

    group = GROUP
    what = "ACD history projection"

    def __init__(
        self,
        client: redis.Redis,
        database: Database,
        namespace: str = DEFAULT_NAMESPACE,
        consumer: str | None = None,
        reclaim_idle_ms: int = RECLAIM_IDLE_MS,
    ) -> None:
        super().__init__(client, consumer, reclaim_idle_ms)
        self.database = database
        self.stream = Keys(namespace).events

    def handle(self, entries: list[Entry]) -> None:
        events = [decode_entry(entry_id, fields) for entry_id, fields in entries if fields]
        with self.database.engine.begin() as connection:
            apply(connection, events)
