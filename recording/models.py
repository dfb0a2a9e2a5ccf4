"""Recordings: one row per recording Kokan keeps, from the provider's callback to the stored file."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kokan.db import Base, UTCDateTime, utcnow


class RecordingKind(enum.StrEnum):
    VOICEMAIL = "voicemail"
    CALL = "call"


class RecordingStatus(enum.StrEnum):
    PENDING = "pending"
    """Known from the provider's callback; the fetch job has not stored the file yet."""
    STORED = "stored"
    """The file is in storage under storage_key, checked and measured."""
    FAILED = "failed"
    """Kokan gave up (failure_reason says why); the provider may still hold the original."""


class Recording(Base):
    """The provider's recording id is unique per provider: a callback delivered twice is one row."""

    __tablename__ = "recordings"
    __table_args__ = (UniqueConstraint("provider", "provider_recording_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int | None] = mapped_column(
        ForeignKey("calls.id", ondelete="SET NULL"), index=True
    )
    """The call-detail row, linked once it exists (call rows are written asynchronously)."""
    provider: Mapped[str] = mapped_column(String(16))
    provider_call_id: Mapped[str | None] = mapped_column(String(64), index=True)
    """The provider's call id (Twilio's CallSid): how call_id is found, whenever the row appears."""
    provider_account_id: Mapped[str | None] = mapped_column(String(64))
    """Twilio's AccountSid the recording lives under (a subaccount's, possibly)."""
    provider_recording_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=RecordingStatus.PENDING, index=True)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    storage_key: Mapped[str | None] = mapped_column(String(128))
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    """The provider's figure until the file is stored, then measured from the file itself."""
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    content_type: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    stored_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    provider_deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """Set once the provider's copy is deleted (only when recording.delete_from_twilio)."""
