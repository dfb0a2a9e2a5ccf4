"""Call-detail records: one row per call leg Kokan handles, whatever the transport."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kokan.db import Base, UTCDateTime, utcnow


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class Outcome(enum.StrEnum):
    ANSWERED = "answered"
    ABANDONED = "abandoned"
    VOICEMAIL = "voicemail"
    TRANSFERRED = "transferred"
    CALLBACK = "callback"
    COMPLETED_IN_IVR = "completed-in-ivr"
    FAILED = "failed"


def new_call_id() -> str:
    return uuid.uuid4().hex


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (UniqueConstraint("provider", "provider_call_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_call_id)
    provider: Mapped[str] = mapped_column(String(16))
    provider_call_id: Mapped[str] = mapped_column(String(64))
    from_number: Mapped[str] = mapped_column(String(64))
    to_number: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16), default="voice")
    direction: Mapped[str] = mapped_column(String(16), default=Direction.INBOUND)
    arrived_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    queued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    answered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    queue: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str | None] = mapped_column(String(32))
