"""Retention: recordings older than the configured days are deleted, each deletion logged.

recording.retention_days applies to every recording, recording.retention_days_by_queue
overrides it for a queue's calls (the queue on the call-detail row). A recording on legal
hold is never deleted, nor one whose ticket is on legal hold. Deleting is two steps, each safe to repeat: the row is marked
deleted (transcript removed, access log written) in one transaction, then the file goes
and the row forgets its key; a run cut short between the two is finished by the next.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import ColumnElement, and_, delete, false, or_, select, true, update

from kokan.config import Settings
from kokan.db import Database, utcnow
from kokan.job_context import job_context
from recording.models import (
    AccessAction,
    Recording,
    RecordingAccess,
    RecordingStatus,
    Transcript,
)
from recording.services import link_call
from recording.storage import Storage, key_for, storage_for
from tickets.models import Call, Interaction, Ticket

RETENTION_ACTOR = "retention"
"""Who the access log says deleted it."""
BATCH = 500
"""Recordings deleted per run: a run stays short, and the next (daily) run goes on."""
LEFTOVER_EXTENSIONS = ("wav", "mp3", "ogg")
"""Every key a recording's files can have had: an original that a killed conversion left."""

log = logging.getLogger(__name__)


def apply_retention_job() -> list[int]:
    """The rq job to schedule daily (rq cron); returns the ids deleted."""
    with job_context() as (settings, database):
        return apply_retention(database, storage_for(settings), settings)


def _ticket_on_hold() -> ColumnElement[bool]:
    """The recording's interaction is on a ticket under legal hold."""
    return (
        select(Ticket.id)
        .join(Interaction, Interaction.ticket_id == Ticket.id)
        .where(Interaction.id == Recording.interaction_id, Ticket.legal_hold == true())
        .exists()
    )


def _due(settings: Settings, now: dt.datetime) -> ColumnElement[bool] | None:
    days = settings.recording.retention_days
    by_queue = settings.recording.retention_days_by_queue
    rules: list[ColumnElement[bool]] = [
        and_(Call.queue == queue, Recording.created_at < now - dt.timedelta(days=queue_days))
        for queue, queue_days in sorted(by_queue.items())
    ]
    if days is not None:
        elsewhere = or_(Call.queue.is_(None), Call.queue.not_in(list(by_queue)))
        rules.append(and_(elsewhere, Recording.created_at < now - dt.timedelta(days=days)))
    return or_(*rules) if rules else None


def apply_retention(
    database: Database,
    storage: Storage,
    settings: Settings,
    now: dt.datetime | None = None,
    batch: int = BATCH,
) -> list[int]:
    now = now or utcnow()
    deleted: list[int] = []
    due = _due(settings, now)
    if due is not None:
        with database.unit_of_work() as session:
            candidates = session.execute(
                select(Recording.id, Recording.created_at, Call.queue)
                .outerjoin(Call, Call.id == Recording.call_id)
                .where(
                    due,
                    Recording.status != RecordingStatus.DELETED,
                    Recording.legal_hold == false(),
                    ~_ticket_on_hold(),
                )
                .order_by(Recording.id)
                .limit(batch)
            ).all()
        for recording_id, created_at, queue in candidates:
            if _mark_deleted(database, recording_id, created_at, queue, settings, now):
                deleted.append(recording_id)
    _remove_files(database, storage)
    if deleted:
        log.info("retention deleted %s recording(s)", len(deleted))
    return deleted


def _mark_deleted(
    database: Database,
    recording_id: int,
    created_at: dt.datetime,
    queue: str | None,
    settings: Settings,
    now: dt.datetime,
) -> bool:
    days = settings.recording.retention_days_by_queue.get(
        queue or "", settings.recording.retention_days
    )
    with database.unit_of_work() as session:
        row = session.get(Recording, recording_id)
        if row is not None:
            link_call(session, row)  # a ticket's hold counts even if no step linked it yet
            session.flush()
        # guarded: a legal hold set since the selection (on the recording or its ticket) wins
        marked = session.scalar(
            update(Recording)
            .where(
                Recording.id == recording_id,
                Recording.status != RecordingStatus.DELETED,
                Recording.legal_hold == false(),
                ~_ticket_on_hold(),
            )
            .values(status=RecordingStatus.DELETED, deleted_at=now)
            .returning(Recording.id)
        )
        if marked is None:
            return False
        session.execute(delete(Transcript).where(Transcript.recording_id == recording_id))
        session.add(
            RecordingAccess(
                recording_id=recording_id,
                user_id=None,
                actor=RETENTION_ACTOR,
                action=AccessAction.DELETE,
                detail=(
                    f"recorded {created_at.isoformat(timespec='seconds')}, "
                    f"kept {days} days" + (f" (queue {queue})" if queue else "")
                ),
                at=now,
            )
        )
    log.info("recording %s deleted by retention (%s days)", recording_id, days)
    return True


def _remove_files(database: Database, storage: Storage) -> None:
    with database.unit_of_work() as session:
        pending = session.execute(
            select(Recording.id, Recording.storage_key).where(
                Recording.status == RecordingStatus.DELETED, Recording.storage_key.is_not(None)
            )
        ).all()
    for recording_id, key in pending:
        for extension in LEFTOVER_EXTENSIONS:
            storage.delete(key_for(recording_id, extension))
        if key is not None:
            storage.delete(key)
        with database.unit_of_work() as session:
            session.execute(
                update(Recording).where(Recording.id == recording_id).values(storage_key=None)
            )
