"""The playback API's query parameters and answers, checked by pydantic."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from acd.schemas import NAME_PATTERN
from kokan.errors import InvalidInput

DEFAULT_PAGE = 50
MAX_PAGE = 200
"""A page of metadata stays small; a client pages on with before_id."""
MAX_SEARCH_CHARS = 200
MAX_SEARCH_WORDS = 8
"""Each word is one LIKE over the transcripts; a handful is what a person types."""
AGENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
"""Agents are users: the username's own pattern (admin.services.USERNAME_PATTERN)."""


class InvalidRecordingQuery(InvalidInput):
    error_id = "recording-query-invalid"


class RecordingQuery(BaseModel):
    """GET /api/recordings?agent=&queue=&since=&until=&q=&kind=&ticket=&customer=&limit=&before_id="""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    agent: str | None = Field(default=None, pattern=AGENT_PATTERN)
    queue: str | None = Field(default=None, pattern=NAME_PATTERN)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    q: str | None = Field(default=None, min_length=1, max_length=MAX_SEARCH_CHARS)
    kind: str | None = Field(default=None, pattern=r"^(call|voicemail)$")
    ticket: int | None = Field(default=None, ge=1, le=2**31 - 1)
    customer: int | None = Field(default=None, ge=1, le=2**31 - 1)
    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    before_id: int | None = Field(default=None, ge=1, le=2**31)

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-11-23T09:00+09:00 or …Z")
        return value

    @property
    def words(self) -> list[str]:
        found = (self.q or "").split()
        if len(found) > MAX_SEARCH_WORDS:
            raise InvalidRecordingQuery(f"q: search for at most {MAX_SEARCH_WORDS} words")
        return found

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> RecordingQuery:
        try:
            return cls.model_validate(args)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "query"
            message = first["msg"].removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                message = "unknown filter"
            raise InvalidRecordingQuery(f"{where}: {message}") from None


class TranscriptOut(BaseModel):
    text: str
    words: list[dict[str, Any]]
    model: str
    created_at: dt.datetime


class RecordingOut(BaseModel):
    id: int
    kind: str
    status: str
    failure_reason: str | None
    created_at: dt.datetime
    processed_at: dt.datetime | None
    duration_ms: int | None
    channels: int | None
    size_bytes: int | None
    content_type: str | None
    sha256: str | None
    call_id: int | None
    provider_call_id: str | None
    queue: str | None
    agent_id: str | None
    legal_hold: bool
    has_transcript: bool
    audio_url: str | None
    pauses: list[dict[str, Any]]
    """Spans paused for card numbers (silence in the file): start_ms, end_ms (None: to the end)."""
    interaction_id: int | None
    ticket_id: int | None


class RecordingDetail(RecordingOut):
    transcript: TranscriptOut | None


class RecordingPage(BaseModel):
    recordings: list[RecordingOut]
    next_before_id: int | None
    """Pass as before_id for the next (older) page; None on the last page."""
