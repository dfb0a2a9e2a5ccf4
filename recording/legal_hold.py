"""Legal hold on a ticket: retention keeps every recording of the ticket while it is set.

Set through `PATCH /api/tickets/<id>` with `{"legal_hold": true|false}` by a supervisor or
an admin only (an agent gets 403); each change is audited. A closed ticket can be put on
hold (a dispute often comes after the case is closed), so this is apart from the
ticket's other edits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from admin.models import Role
from kokan.errors import InvalidInput
from recording.errors import RecordingForbidden
from tickets.models import AuditEntry, Ticket
from tickets.services import get_ticket

FIELD = "legal_hold"
HOLDERS = (Role.ADMIN, Role.SUPERVISOR)


def take_legal_hold(body: Any, role: Role) -> tuple[Any, bool | None]:
    """Split `legal_hold` off a PATCH body: (the rest, the wanted hold or None)."""
    if not isinstance(body, dict) or FIELD not in body:
        return body, None
    rest = {key: value for key, value in body.items() if key != FIELD}
    hold = body[FIELD]
    if not isinstance(hold, bool):
        raise InvalidInput("legal_hold: must be true or false")
    if role not in HOLDERS:
        raise RecordingForbidden("only supervisors and admins set or lift a legal hold")
    return rest, hold


def set_legal_hold(session: Session, ticket_id: int, hold: bool, actor: str) -> Ticket:
    ticket = get_ticket(session, ticket_id)
    if ticket.legal_hold != hold:
        ticket.legal_hold = hold
        session.add(
            AuditEntry(
                actor=actor,
                action="legal_hold.set" if hold else "legal_hold.lifted",
                subject_type="ticket",
                subject_id=ticket.id,
                detail={FIELD: [not hold, hold]},
            )
        )
    return ticket
