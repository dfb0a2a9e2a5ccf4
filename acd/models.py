"""The ACD's history in SQL: what the KPIs are computed from once the stream has aged off.

The event stream (acd.events) is trimmed to about a week; `acd.history` copies each
queued call and each agent status change out of it into these tables, so a report on
last quarter reads SQL, never Redis.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Float, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from kokan.db import Base, UTCDateTime, utcnow

CALL_ID_LENGTH = 128
"""acd.schemas.CALL_ID_PATTERN allows up to 128 characters (SIP Call-IDs are long)."""
NAME_LENGTH = 64
"""acd.schemas.NAME_PATTERN: queue and agent names are at most 64 characters."""
EVENT_KEY_LENGTH = 32
"""A stream id written as 15 + 1 + 15 digits (acd.history.event_key)."""


class AcdCall(Base):
    """One call (or chat/SMS task, or callback) that entered an ACD queue.

    Every column is filled by an order-free rule of `acd.history.apply`, so the row is
    the same whatever order and however many times the events were applied. The ACD's
    call id is the transport's own (a Twilio CallSid, a SIP Call-ID): it also names the
    call's row in `calls` and its survey interaction."""

    __tablename__ = "acd_calls"
    __table_args__ = (
        Index("ix_acd_calls_joined_at", "joined_at"),
        Index("ix_acd_calls_agent_wrapup", "agent_id", "wrapup_ended_at"),
        Index("ix_acd_calls_customer", "customer"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(String(CALL_ID_LENGTH), unique=True)
    queue: Mapped[str] = mapped_column(String(NAME_LENGTH))
    """Where the call was answered or left the ACD (after overflows); while it waits,
    where it waits."""
    entry_queue: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    """The queue the call joined first (differs from `queue` after an overflow)."""
    channel: Mapped[str] = mapped_column(String(16), default="voice")
    kind: Mapped[str] = mapped_column(String(16), default="call")
    """call, or callback once the caller asked to be called back."""
    priority: Mapped[int] = mapped_column(default=0)
    customer: Mapped[str | None] = mapped_column(String(64))
    """The caller's number as the driver gave it (E.164 for phone calls), or the
    callback number: who a repeat contact is matched on."""
    joined_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    first_offered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    answered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    agent_id: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    overflowed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    abandoned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    result: Mapped[str | None] = mapped_column(String(16))
    """completed, abandoned, short-abandon, voicemail or cancelled; None while in the ACD."""
    wait_seconds: Mapped[float | None] = mapped_column(Float())
    """From joining to the answer, or to leaving unanswered (abandon, voicemail, cancel)."""
    talk_seconds: Mapped[float] = mapped_column(Float(), default=0.0)
    hold_seconds: Mapped[float] = mapped_column(Float(), default=0.0)
    """The ACD has no hold events yet: 0 until a driver reports holds."""
    wrapup_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    wrapup_event_key: Mapped[str | None] = mapped_column(String(EVENT_KEY_LENGTH))
    """Where the wrap-up began in the stream: its end is the agent's next status change
    away from wrap-up after this point."""
    wrapup_ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    wrapup_seconds: Mapped[float] = mapped_column(Float(), default=0.0)


class AcdAgentState(Base):
    """One status an agent entered (from one `status` event); it lasts until the agent's
    next row in stream order, whose start is copied into `ended_at`."""

    __tablename__ = "acd_agent_states"
    __table_args__ = (
        Index("ix_acd_agent_states_agent_key", "agent_id", "event_key"),
        Index("ix_acd_agent_states_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_key: Mapped[str] = mapped_column(String(EVENT_KEY_LENGTH), unique=True)
    """The status event's stream id in sortable form: the order Redis applied them."""
    agent_id: Mapped[str] = mapped_column(String(NAME_LENGTH))
    status: Mapped[str] = mapped_column(String(16))
    """acd.schemas.AgentStatus, or `removed` when the agent was deleted."""
    presence: Mapped[str] = mapped_column(String(16), default="")
    reason: Mapped[str] = mapped_column(String(64), default="")
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """None while it is the agent's latest status."""


class CallWrapup(Base):
    """What the agent said the call was, picked from `wrapup_codes` after it (one row a
    call: picking again corrects it). Kept apart from `acd_calls`, which the history
    projector fills from the event stream at its own pace."""

    __tablename__ = "call_wrapups"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(String(CALL_ID_LENGTH), unique=True)
    agent_id: Mapped[str] = mapped_column(String(NAME_LENGTH))
    code: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    note: Mapped[str] = mapped_column(Text(), default="")
    by: Mapped[str] = mapped_column(String(64))
    """The user who picked it: the agent, or a supervisor correcting it."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
