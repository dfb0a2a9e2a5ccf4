"""Recordings on the customer record: a recording joins its call's interaction (and so
its ticket), and a voicemail's transcript is written onto its voicemail interaction.

The interaction is made when the call ends (tickets.call_tickets), the recording when
Twilio reports it: either may come first. Every step that meets both links them (the
fetch, the transcription), and `link_recent`, run by `kokan cron` with the stalled-fetch
sweep, links what no step met. Linking is keyed by the CallSid and safe to repeat.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from kokan.db import Database, utcnow
from recording.models import Recording, RecordingKind, RecordingStatus, Transcript
from recording.services import link_call
from tickets.models import Interaction

TRANSCRIPT_MARK = "\n\nTranscript: "
"""Between a voicemail interaction's summary and what the caller said; replaced, never
appended twice, when the transcript is written again."""
LINK_WINDOW = dt.timedelta(days=7)
"""Only recordings this recent are looked at by the sweep: a call's interaction appears
within minutes of its end, so an older unlinked recording has no interaction to find."""
LINK_BATCH = 1000
"""Recordings linked per sweep; the next sweep (ten minutes later) goes on."""

log = logging.getLogger(__name__)


def with_transcript(body: str, text: str) -> str:
    summary = body.split(TRANSCRIPT_MARK, 1)[0]
    return summary + TRANSCRIPT_MARK + text if text.strip() else summary


def attach(session: Session, row: Recording) -> None:
    """Link the call and interaction; put a voicemail's transcript on its interaction."""
    link_call(session, row)
    if row.kind != RecordingKind.VOICEMAIL or row.interaction_id is None:
        return
    text = session.scalar(select(Transcript.text).where(Transcript.recording_id == row.id))
    interaction = session.get(Interaction, row.interaction_id)
    if text is None or interaction is None:
        return
    body = with_transcript(interaction.body, text)
    if body != interaction.body:
        interaction.body = body
        interaction.updated_at = utcnow()


def attach_recording(database: Database, recording_id: int) -> None:
    with database.unit_of_work() as session:
        row = session.get(Recording, recording_id)
        if row is not None:
            attach(session, row)


def link_recent(database: Database, now: dt.datetime | None = None) -> int:
    """For the periodic sweep: recent recordings with no interaction yet; how many linked."""
    since = (now or utcnow()) - LINK_WINDOW
    linked = 0
    with database.unit_of_work() as session:
        rows = session.scalars(
            select(Recording)
            .where(
                Recording.interaction_id.is_(None),
                Recording.provider_call_id.is_not(None),
                Recording.status != RecordingStatus.DELETED,
                Recording.created_at >= since,
            )
            .order_by(Recording.id)
            .limit(LINK_BATCH)
        ).all()
        for row in rows:
            attach(session, row)
            linked += row.interaction_id is not None
    if linked:
        log.info("linked %s recording(s) to their interactions", linked)
    return linked
