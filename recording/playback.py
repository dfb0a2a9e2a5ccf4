"""Who may list, read and play which recordings, and the access log every play writes.

Supervisors and admins see every recording. Agents see only recordings of their own calls,
and only when recording.agents_hear_own is on; a colleague's recording is 403, not 404,
so an agent is told plainly that it exists but is not theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from admin.models import Role
from kokan.errors import Conflict
from recording.errors import RecordingFileMissing, RecordingForbidden, RecordingNotFound
from recording.models import (
    AccessAction,
    Recording,
    RecordingAccess,
    RecordingStatus,
    Transcript,
)
from recording.schemas import (
    RecordingDetail,
    RecordingOut,
    RecordingPage,
    RecordingQuery,
    TranscriptOut,
)
from recording.storage import Storage
from tickets.models import Call, Interaction

MAX_LOGGED_RANGE = 128
"""The Range header is logged as sent, cut to the column's width."""
AUDIO_URL = "/api/recordings/{id}/audio"
MAX_ID = 2**31 - 1
"""recordings.id is a 32-bit integer on PostgreSQL: a larger id from a URL is simply unknown
(asked of the database, it would be an out-of-range error, not a 404)."""
EXTENSIONS = {"audio/mpeg": "mp3", "audio/ogg": "ogg"}
"""For the download's file name; anything else is the WAV it was fetched as."""


class RecordingNotPlayable(Conflict):
    error_id = "recording-not-playable"


@dataclass(frozen=True)
class Viewer:
    user_id: int | None
    username: str
    role: Role


@dataclass
class Audio:
    """An open file to send; the caller closes it (the response does, once sent)."""

    handle: BinaryIO
    size: int
    content_type: str
    sha256: str | None
    download_name: str


def _restrict(viewer: Viewer, agents_hear_own: bool) -> str | None:
    """The agent id a viewer is limited to; None for no limit."""
    if viewer.role in (Role.ADMIN, Role.SUPERVISOR):
        return None
    if viewer.role == Role.AGENT and agents_hear_own:
        return viewer.username
    raise RecordingForbidden(
        "agents may hear only their own calls, and only when recording.agents_hear_own is on"
    )


def _visible(viewer: Viewer, agents_hear_own: bool, row: Recording) -> None:
    own = _restrict(viewer, agents_hear_own)
    if own is not None and row.agent_id != own:
        raise RecordingForbidden(f"recording {row.id} is not of one of your calls")


def _queue() -> ColumnElement[str | None]:
    """The call-detail row's queue, else the one the recording's callback named."""
    return func.coalesce(Call.queue, Recording.queue)


def _base() -> Select[Recording, str | None, int, int | None]:
    return (
        select(Recording, _queue(), Transcript.id, Interaction.ticket_id)
        .outerjoin(Call, Call.id == Recording.call_id)
        .outerjoin(Transcript, Transcript.recording_id == Recording.id)
        .outerjoin(Interaction, Interaction.id == Recording.interaction_id)
    )


def list_recordings(
    session: Session, viewer: Viewer, query: RecordingQuery, *, agents_hear_own: bool
) -> RecordingPage:
    own = _restrict(viewer, agents_hear_own)
    if own is not None and query.agent not in (None, own):
        raise RecordingForbidden("agents may list only their own calls")
    statement = _base().where(Recording.status != RecordingStatus.DELETED)
    agent = own or query.agent
    if agent is not None:
        statement = statement.where(Recording.agent_id == agent)
    if query.queue is not None:
        statement = statement.where(_queue() == query.queue)
    if query.ticket is not None:
        statement = statement.where(Interaction.ticket_id == query.ticket)
    if query.customer is not None:
        statement = statement.where(Interaction.customer_id == query.customer)
    if query.kind is not None:
        statement = statement.where(Recording.kind == query.kind)
    if query.since is not None:
        statement = statement.where(Recording.created_at >= query.since)
    if query.until is not None:
        statement = statement.where(Recording.created_at < query.until)
    if query.before_id is not None:
        statement = statement.where(Recording.id < query.before_id)
    for word in query.words:
        # a plain LIKE: % and _ typed by the user are matched as themselves
        statement = statement.where(Transcript.text.contains(word, autoescape=True))
    found = session.execute(statement.order_by(Recording.id.desc()).limit(query.limit + 1)).all()
    page = [_out(row, queue, transcript_id, ticket) for row, queue, transcript_id, ticket in found]
    more = len(page) > query.limit
    page = page[: query.limit]
    return RecordingPage(recordings=page, next_before_id=page[-1].id if more else None)


def recording_detail(
    session: Session, viewer: Viewer, recording_id: int, *, agents_hear_own: bool
) -> RecordingDetail:
    found = (
        session.execute(_base().where(Recording.id == recording_id)).first()
        if 0 < recording_id <= MAX_ID
        else None
    )
    if found is None:
        raise RecordingNotFound(f"no recording {recording_id}")
    row, queue, transcript_id, ticket = found
    _visible(viewer, agents_hear_own, row)
    transcript = session.get(Transcript, transcript_id) if transcript_id is not None else None
    return RecordingDetail(
        **_out(row, queue, transcript_id, ticket).model_dump(),
        transcript=TranscriptOut(
            text=transcript.text,
            words=transcript.words,
            model=transcript.model,
            created_at=transcript.created_at,
        )
        if transcript is not None
        else None,
    )


def open_audio(
    session: Session,
    storage: Storage,
    viewer: Viewer,
    recording_id: int,
    *,
    byte_range: str | None,
    download: bool,
    agents_hear_own: bool,
) -> Audio:
    """Check, open, and log the play or download (the log row commits with the session)."""
    row = session.get(Recording, recording_id) if 0 < recording_id <= MAX_ID else None
    if row is None:
        raise RecordingNotFound(f"no recording {recording_id}")
    _visible(viewer, agents_hear_own, row)
    if row.status == RecordingStatus.DELETED:
        raise RecordingFileMissing(f"recording {recording_id} was deleted by retention")
    if row.status != RecordingStatus.STORED or row.storage_key is None:
        raise RecordingNotPlayable(f"recording {recording_id} is {row.status}: no audio to play")
    try:
        handle = storage.open(row.storage_key)
    except FileNotFoundError:
        raise RecordingFileMissing(f"the file of recording {recording_id} is missing") from None
    try:
        size = storage.size(row.storage_key)
        session.add(
            RecordingAccess(
                recording_id=row.id,
                user_id=viewer.user_id,
                actor=viewer.username,
                action=AccessAction.DOWNLOAD if download else AccessAction.PLAY,
                byte_range=byte_range[:MAX_LOGGED_RANGE] if byte_range else None,
            )
        )
        session.flush()
    except BaseException:
        handle.close()
        raise
    content_type = row.content_type or "audio/wav"
    return Audio(
        handle=handle,
        size=size,
        content_type=content_type,
        sha256=row.sha256,
        download_name=f"recording-{row.id}.{EXTENSIONS.get(content_type, 'wav')}",
    )


def _out(
    row: Recording, queue: str | None, transcript_id: int | None, ticket_id: int | None
) -> RecordingOut:
    playable = row.status == RecordingStatus.STORED and row.storage_key is not None
    return RecordingOut(
        id=row.id,
        kind=row.kind,
        status=row.status,
        failure_reason=row.failure_reason,
        created_at=row.created_at,
        processed_at=row.processed_at,
        duration_ms=row.duration_ms,
        channels=row.channels,
        size_bytes=row.size_bytes,
        content_type=row.content_type,
        sha256=row.sha256,
        call_id=row.call_id,
        provider_call_id=row.provider_call_id,
        queue=queue,
        agent_id=row.agent_id,
        legal_hold=row.legal_hold,
        has_transcript=transcript_id is not None,
        audio_url=AUDIO_URL.format(id=row.id) if playable else None,
        pauses=list(row.pauses or []),
        interaction_id=row.interaction_id,
        ticket_id=ticket_id,
    )
