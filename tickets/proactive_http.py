"""Proactive messages over the API: other systems raise events (an order's status changed),
supervisors read what is scheduled and sent, and cancel what has not left yet."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from admin.auth import require_role
from admin.models import Role
from kokan.errors import InvalidInput
from kokan.wiring import database, settings
from tickets import proactive, schemas
from tickets.models import ScheduledMessage
from tickets.phones import to_e164
from tickets.services import find_or_create_by_phone, get_customer, run_with_retry

blueprint = Blueprint("proactive_api", __name__, url_prefix="/api/proactive")

SENDERS = (Role.ADMIN, Role.SUPERVISOR)
"""Raising events and cancelling messages: an integration's token or a supervisor."""
DEFAULT_PAGE = 50


def _json_body() -> Any:
    data = request.get_json(silent=True)
    if data is None:
        raise InvalidInput("send a JSON object with Content-Type: application/json")
    return data


@blueprint.post("/events")
@require_role(*SENDERS)
def raise_event() -> tuple[dict[str, Any], int]:
    body = schemas.parse(schemas.ProactiveEventBody, _json_body())
    if (body.customer_id is None) == (body.phone is None):
        raise InvalidInput("name the customer by exactly one of customer_id or phone")
    config = settings().tickets
    e164 = to_e164(body.phone, config.default_region) if body.phone is not None else None

    def work(session: Session) -> list[dict[str, Any]]:
        if e164 is not None:
            customer, _created = find_or_create_by_phone(session, e164)
        else:
            customer = get_customer(session, body.customer_id or 0)
        rows = proactive.raise_event(
            session,
            config,
            body.type,
            customer_id=customer.id,
            key=f"api:{body.type}:{body.id}",
            e164=e164,
            data=body.data,
            send_at=body.send_at,
            language=body.language,
        )
        return [schemas.scheduled_message_json(row) for row in rows]

    scheduled = run_with_retry(database(), work)
    return {"event": body.type, "id": body.id, "messages": scheduled}, 202


@blueprint.get("/messages")
@require_role(*SENDERS)
def list_messages() -> dict[str, Any]:
    query = select(ScheduledMessage).order_by(ScheduledMessage.id.desc()).limit(DEFAULT_PAGE)
    status = request.args.get("status")
    if status is not None:
        if status not in proactive.STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(proactive.STATUSES)}")
        query = query.where(ScheduledMessage.status == status)
    raw_customer = request.args.get("customer_id")
    if raw_customer is not None:
        if not raw_customer.isascii() or not raw_customer.isdigit() or len(raw_customer) > 18:
            raise InvalidInput("customer_id must be a whole number")
        query = query.where(ScheduledMessage.customer_id == int(raw_customer))
    with database().unit_of_work() as session:
        return {"messages": [schemas.scheduled_message_json(r) for r in session.scalars(query)]}


@blueprint.post("/messages/<int:message_id>/cancel")
@require_role(*SENDERS)
def cancel_message(message_id: int) -> dict[str, Any]:
    with database().unit_of_work() as session:
        row = proactive.cancel(session, message_id, g.principal.username)
        return schemas.scheduled_message_json(row)
