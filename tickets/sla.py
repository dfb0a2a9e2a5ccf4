"""SLA breaches: a periodic sweep flags tickets whose first response or resolution is late.

Due times are set when a ticket opens (tickets.services.sla_due, per priority in
`tickets.sla`); the first agent reply sets `first_responded_at`, solving sets `solved_at`.
The sweep flags each target at most once per ticket, with an audit entry and a
`ticket.sla_breached` webhook event: a ticket still waiting past its due time, and one
answered or solved late (flagged when the sweep first sees it). A solved or closed ticket
that never got a reply is not flagged for the first response: nobody waits on it.
Two sweeps at once flag a ticket once: each flag is a conditional UPDATE.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from kokan import config
from kokan.db import Database, utcnow
from tickets import services, subscriptions
from tickets.models import ACTIVE_STATUSES, Ticket

SWEEP_BATCH = 500
"""Tickets flagged per target per sweep: a backlog clears over a few runs without one
long transaction holding row locks."""
FIRST_RESPONSE = "first_response"
RESOLUTION = "resolution"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Breach:
    ticket_id: int
    target: str
    due_at: dt.datetime


def _active() -> list[str]:
    return [status.value for status in ACTIVE_STATUSES]


def _flag(session: Session, ticket: Ticket, target: str, now: dt.datetime) -> Breach | None:
    column = (
        Ticket.first_response_breached_at
        if target == FIRST_RESPONSE
        else Ticket.resolution_breached_at
    )
    flagged = session.execute(
        update(Ticket)
        .where(Ticket.id == ticket.id, column.is_(None))
        .values({column: now})
        .execution_options(synchronize_session=False)
    )
    if not getattr(flagged, "rowcount", 0):
        return None
    session.refresh(ticket)
    due = ticket.first_response_due_at if target == FIRST_RESPONSE else ticket.resolution_due_at
    assert due is not None
    done = ticket.first_responded_at if target == FIRST_RESPONSE else ticket.solved_at
    detail = {
        "target": target,
        "due_at": due.isoformat(),
        "done_at": done.isoformat() if done else None,
    }
    services.audit(
        session, services.SYSTEM_ACTOR, "ticket.sla_breached", "ticket", ticket.id, detail, now
    )
    subscriptions.emit(
        session,
        subscriptions.TICKET_SLA_BREACHED,
        {**subscriptions.ticket_data(ticket), "breach": detail},
        now=now,
    )
    return Breach(ticket.id, target, due)


def flag_breaches(session: Session, now: dt.datetime | None = None) -> list[Breach]:
    now = now or utcnow()
    late_reply = and_(
        Ticket.first_response_breached_at.is_(None),
        Ticket.first_response_due_at.is_not(None),
        or_(
            and_(
                Ticket.first_responded_at.is_(None),
                Ticket.first_response_due_at < now,
                Ticket.status.in_(_active()),
            ),
            Ticket.first_responded_at > Ticket.first_response_due_at,
        ),
    )
    late_resolution = and_(
        Ticket.resolution_breached_at.is_(None),
        Ticket.resolution_due_at.is_not(None),
        or_(
            and_(
                Ticket.solved_at.is_(None),
                Ticket.resolution_due_at < now,
                Ticket.status.in_(_active()),
            ),
            Ticket.solved_at > Ticket.resolution_due_at,
        ),
    )
    breaches: list[Breach] = []
    for target, condition in ((FIRST_RESPONSE, late_reply), (RESOLUTION, late_resolution)):
        tickets = session.scalars(
            select(Ticket).where(condition).order_by(Ticket.id).limit(SWEEP_BATCH)
        ).all()
        for ticket in tickets:
            breach = _flag(session, ticket, target, now)
            if breach is not None:
                breaches.append(breach)
    session.flush()
    return breaches


def sweep_sla() -> int:
    """The periodic job (`kokan cron`): flag what is late now; how many flags were set."""
    from rq import get_current_job

    settings = config.load().settings
    database = Database(settings.effective_database_url)
    job = get_current_job()
    subscriptions.use_redis(job.connection if job else None, settings.outbound_webhooks)
    try:
        breaches = services.run_with_retry(database, flag_breaches)
    finally:
        database.dispose()
    if breaches:
        log.info("SLA sweep: %s breaches flagged", len(breaches))
    return len(breaches)


def breached_tickets(session: Session, status: str | None, limit: int) -> list[Ticket]:
    """Tickets with a flagged breach, newest first."""
    query = select(Ticket).where(
        or_(
            Ticket.first_response_breached_at.is_not(None),
            Ticket.resolution_breached_at.is_not(None),
        )
    )
    if status is not None:
        query = query.where(Ticket.status == status)
    return list(session.scalars(query.order_by(Ticket.id.desc()).limit(limit)))
