"""Recordings: one row per recording Kokan keeps, from the provider's callback to the stored file."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
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
    DELETED = "deleted"
    """Retention removed the file and transcript; the row stays so that a late duplicate
    callback cannot bring the recording back, and so that the access log still names it."""


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
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    """Indexed: listings filter on it and retention selects by it."""
    stored_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    provider_deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """Set once the provider's copy is deleted (only when recording.delete_from_twilio)."""
    channels: Mapped[int | None] = mapped_column(Integer)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """Set once the stored file is the post-processed one (normalised, trimmed, compressed)."""
    agent_id: Mapped[str | None] = mapped_column(String(64), index=True)
    """The agent on the call (their username), for "agents hear their own calls"; None for a
    voicemail. A plain string until the call record links agents."""
    legal_hold: Mapped[bool] = mapped_column(default=False, server_default=false())
    """Retention never deletes a recording on hold, nor one whose ticket is on hold."""
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    queue: Mapped[str | None] = mapped_column(String(64))
    """The queue the call was answered from, as the recording's callback said: known at
    once, before the call-detail row (which also has it) is projected."""
    pauses: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    """[{"start_ms", "end_ms"}, …]: spans paused (silence in the file), from the start of
    the recording; end_ms None means paused to the end."""
    interaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("interactions.id", ondelete="SET NULL"), index=True
    )
    """The call's (or voicemail's) interaction, hence its ticket; linked whenever both exist."""


class Transcript(Base):
    """What vosk heard in a recording: the text (searched with LIKE) and every word's timing."""

    __tablename__ = "recording_transcripts"

    id: Mapped[int] = mapped_column(primary_key=True)
    recording_id: Mapped[int] = mapped_column(
        ForeignKey("recordings.id", ondelete="CASCADE"), unique=True
    )
    text: Mapped[str] = mapped_column(Text)
    words: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    """[{"word", "start_ms", "end_ms", "confidence", "channel"}, …] in time order."""
    model: Mapped[str] = mapped_column(String(255))
    """The model folder's name, so a transcript can be told apart after a model upgrade."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AccessAction(enum.StrEnum):
    PLAY = "play"
    DOWNLOAD = "download"
    DELETE = "delete"


class RecordingAccess(Base):
    """The access log: every play, download and deletion of a recording, by whom and when.

    recording_id is deliberately not a foreign key: the log must outlive whatever happens
    to the recording rows.
    """

    __tablename__ = "recording_access_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    recording_id: Mapped[int] = mapped_column(Integer, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(64))
    """The username, or "retention" for the scheduled deletion."""
    action: Mapped[str] = mapped_column(String(16))
    byte_range: Mapped[str | None] = mapped_column(String(128))
    """The Range header as sent (truncated), None for the whole file."""
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
