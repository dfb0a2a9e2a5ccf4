"""The customer record's JSON API: customers, their timeline, merges, tickets and notes.

Agents, supervisors and admins read and work tickets; merging customers needs a
supervisor or an admin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from admin.auth import require_role
from admin.models import Role
from admin.services import find_user
from kokan.db import utcnow
from kokan.errors import InvalidInput
from kokan.wiring import database, redis_client, settings
from recording.legal_hold import set_legal_hold, take_legal_hold
from tickets import schemas
from tickets.email_out import enqueue_email, queue_email_reply
from tickets.jobs import enqueue_send
from tickets.models import Channel, Customer, Ticket, TicketStatus
from tickets.phones import to_e164
from tickets.services import (
    TicketChanges,
    TimelineCursor,
    add_note,
    audit_log,
    customer_by_email,
    customer_by_phone,
    emails_of,
    get_customer,
    get_ticket,
    merge_customers,
    phones_of,
    queue_reply,
    run_with_retry,
    timeline,
    update_ticket,
)
from tickets.sla import breached_tickets

blueprint = Blueprint("tickets_api", __name__, url_prefix="/api")

READERS = (Role.ADMIN, Role.SUPERVISOR, Role.AGENT)
MERGERS = (Role.ADMIN, Role.SUPERVISOR)
DEFAULT_PAGE = 50


class UnknownAssignee(InvalidInput):
    error_id = "unknown-assignee"


def _customer(session: Session, customer: Customer) -> dict[str, Any]:
    tickets = list(
        session.scalars(
            select(Ticket)
            .where(Ticket.customer_id == customer.id)
            .order_by(Ticket.created_at.desc(), Ticket.id.desc())
        )
    )
    return schemas.customer_json(
        customer, phones_of(session, customer.id), emails_of(session, customer.id), tickets
    )


def _json_body() -> Any:
    data = request.get_json(silent=True)
    if data is None:
        raise InvalidInput("send a JSON object with Content-Type: application/json")
    return data


@blueprint.get("/customers/<int:customer_id>")
@require_role(*READERS)
def show_customer(customer_id: int) -> dict[str, Any]:
    with database().unit_of_work() as session:
        return _customer(session, get_customer(session, customer_id))


@blueprint.get("/customers")
@require_role(*READERS)
def search_customers() -> dict[str, Any]:
    phone, email = request.args.get("phone"), request.args.get("email")
    if bool(phone) == bool(email):
        raise InvalidInput("search by exactly one of ?phone= or ?email=")
    with database().unit_of_work() as session:
        if phone:
            found = customer_by_phone(session, to_e164(phone, settings().tickets.default_region))
        else:
            found = customer_by_email(session, email or "")
        return {"customers": [_customer(session, found)] if found is not None else []}


@blueprint.get("/customers/<int:customer_id>/timeline")
@require_role(*READERS)
def customer_timeline(customer_id: int) -> dict[str, Any]:
    raw_limit = request.args.get("limit", str(DEFAULT_PAGE))
    if (
        not raw_limit.isascii()
        or not raw_limit.isdigit()
        or not 1 <= int(raw_limit) <= schemas.MAX_PAGE
    ):
        raise InvalidInput(f"limit must be a whole number from 1 to {schemas.MAX_PAGE}")
    raw_before = request.args.get("before")
    before = TimelineCursor.decode(raw_before) if raw_before else None
    with database().unit_of_work() as session:
        page = timeline(session, customer_id, int(raw_limit), before)
        return {
            "customer_id": page.customer_id,
            "items": [schemas.interaction_json(item) for item in page.items],
            "next_before": page.next_cursor,
        }


@blueprint.post("/customers/<int:customer_id>/merge")
@require_role(*MERGERS)
def merge(customer_id: int) -> dict[str, Any]:
    body = schemas.parse(schemas.MergeBody, _json_body())
    actor = g.principal.username

    def work(session: Session) -> dict[str, Any]:
        result = merge_customers(session, customer_id, body.from_id, actor)
        return {
            "customer": _customer(session, get_customer(session, customer_id)),
            "merged": {
                "id": result.merged_id,
                "phones": result.phones,
                "emails": result.emails,
                "tickets": result.tickets,
                "interactions": result.interactions,
            },
        }

    return run_with_retry(database(), work)


@blueprint.get("/tickets")
@require_role(*READERS)
def list_tickets() -> dict[str, Any]:
    """`?breached=1`: tickets whose SLA the sweep flagged (tickets.sla); `status=` narrows."""
    if request.args.get("breached") not in ("1", "true"):
        raise InvalidInput("list tickets with ?breached=1 (optionally &status=…&limit=…)")
    status = request.args.get("status")
    if status is not None and status not in [item.value for item in TicketStatus]:
        raise InvalidInput(
            f"status must be one of {', '.join(item.value for item in TicketStatus)}"
        )
    raw_limit = request.args.get("limit", str(DEFAULT_PAGE))
    if (
        not raw_limit.isascii()
        or not raw_limit.isdigit()
        or not 1 <= int(raw_limit) <= schemas.MAX_PAGE
    ):
        raise InvalidInput(f"limit must be a whole number from 1 to {schemas.MAX_PAGE}")
    now = utcnow()
    with database().unit_of_work() as session:
        tickets = breached_tickets(session, status, int(raw_limit))
        return {"tickets": [schemas.ticket_json(ticket, now) for ticket in tickets]}


@blueprint.get("/tickets/<int:ticket_id>")
@require_role(*READERS)
def show_ticket(ticket_id: int) -> dict[str, Any]:
    from tickets.models import Interaction

    with database().unit_of_work() as session:
        ticket = get_ticket(session, ticket_id)
        interactions = session.scalars(
            select(Interaction)
            .where(Interaction.ticket_id == ticket.id)
            .order_by(Interaction.created_at, Interaction.id)
        )
        return {
            **schemas.ticket_json(ticket, utcnow()),
            "legal_hold": ticket.legal_hold,
            "interactions": [schemas.interaction_json(item) for item in interactions],
            "audit": [
                schemas.audit_json(entry) for entry in audit_log(session, "ticket", ticket.id)
            ],
        }


@blueprint.patch("/tickets/<int:ticket_id>")
@require_role(*READERS)
def patch_ticket(ticket_id: int) -> dict[str, Any]:
    data, hold = take_legal_hold(_json_body(), g.principal.role)  # recording.legal_hold
    patch = schemas.parse(schemas.TicketPatch, data)
    changes = TicketChanges(
        status=patch.status,
        priority=patch.priority,
        assignee=patch.assignee,
        assignee_given="assignee" in data,
        tags=patch.tags,
    )
    with database().unit_of_work() as session:
        assignee = changes.assignee if changes.assignee_given else None
        if assignee is not None and find_user(session, assignee) is None:
            raise UnknownAssignee(f"no user named {changes.assignee!r}")
        if hold is not None:
            ticket = set_legal_hold(session, ticket_id, hold, g.principal.username)
        if hold is None or data:
            ticket = update_ticket(
                session, settings().tickets, ticket_id, changes, g.principal.username
            )
        return {**schemas.ticket_json(ticket, utcnow()), "legal_hold": ticket.legal_hold}


@blueprint.post("/tickets/<int:ticket_id>/notes")
@require_role(*READERS)
def post_note(ticket_id: int) -> tuple[dict[str, Any], int]:
    body = schemas.parse(schemas.NoteBody, _json_body())
    with database().unit_of_work() as session:
        note = add_note(session, ticket_id, body.body, g.principal.username)
        return schemas.interaction_json(note), 201


@blueprint.post("/tickets/<int:ticket_id>/replies")
@require_role(*READERS)
def post_reply(ticket_id: int) -> Response:
    """Queue an SMS/WhatsApp reply on the ticket's channel; 409 (with a note on the ticket)
    when the number opted out."""
    data = _json_body()
    config = settings()
    with database().unit_of_work() as session:
        if get_ticket(session, ticket_id).channel == Channel.EMAIL:
            return _email_reply(ticket_id, data)
    body = schemas.parse(schemas.ReplyBody, data)
    with database().unit_of_work() as session:
        outcome = queue_reply(session, config.tickets, ticket_id, body.body, g.principal.username)
        shown = schemas.interaction_json(outcome.interaction)
    if outcome.refused:
        response = jsonify(
            {
                "error_id": "recipient-opted-out",
                "message": f"{outcome.recipient.e164} has opted out of messages on this "
                "channel; nothing was sent and the ticket says so",
                "note": shown,
            }
        )
        response.status_code = 409
        return response
    return _enqueued(
        shown,
        lambda: enqueue_send(
            redis_client(), outcome.interaction.id, config.tickets.send_retry_intervals_s
        ),
    )


def _enqueued(shown: dict[str, Any], enqueue: Callable[[], None]) -> Response:
    try:
        enqueue()
    except redis.RedisError:
        # stored as queued; the agent sees it did not leave and may send it again
        shown["delivery_status"] = "queued"
        response = jsonify(
            {
                "error_id": "queue-unavailable",
                "message": "the reply is stored but could not be queued for sending",
                "reply": shown,
            }
        )
        response.status_code = 503
        return response
    response = jsonify(shown)
    response.status_code = 202
    return response


def _email_reply(ticket_id: int, data: Any) -> Response:
    """An e-mail ticket's reply: stored with its Message-ID, sent by tickets.email_out."""
    body = schemas.parse(schemas.EmailReplyBody, data)
    config = settings()
    with database().unit_of_work() as session:
        message = queue_email_reply(
            session,
            config.tickets,
            config.email,
            get_ticket(session, ticket_id),
            body.body,
            g.principal.username,
        )
        shown = schemas.interaction_json(message)
    return _enqueued(
        shown,
        lambda: enqueue_email(redis_client(), shown["id"], config.email.send_retry_intervals_s),
    )
