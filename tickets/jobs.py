"""The send job: an agent's SMS/WhatsApp reply out through Twilio's REST API.

Safe to run any number of times: a message Twilio already took (its SID is stored) or
one already refused or failed is left alone. A number that opted out after the reply
was queued is refused with a note on the ticket. "Not now" answers (429, 5xx, a broken
connection) raise so that rq retries with the configured pauses; on the last attempt the
message is marked failed with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from rq import Queue, Retry, get_current_job
from sqlalchemy import update
from twilio.base.exceptions import TwilioRestException

from kokan.config import Settings
from kokan.db import Database, utcnow
from kokan.errors import KokanError
from kokan.job_context import job_context
from kokan.twilio_rest import TwilioNotConfigured, rest_client
from kokan.work_queues import MESSAGES_QUEUE
from tickets import services
from tickets.models import Interaction, Ticket
from tickets.phones import to_e164

SEND_JOB = "tickets.jobs.send_message"
SEND_JOB_TIMEOUT_S = 60
RESULT_TTL_S = 24 * 3600
FAILURE_TTL_S = 7 * 24 * 3600
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
UNSUBSCRIBED_RECIPIENT = 21610
"""Twilio's error code for a number that replied STOP to the carrier."""
STATUS_CALLBACK_PATH = "/webhooks/twilio/messaging/status"

log = logging.getLogger(__name__)

ClientFactory = Callable[[Settings], Any]


class SendInterrupted(KokanError):
    """Twilio did not take the message this time; rq tries again."""

    error_id = "message-send-interrupted"
    status = 503


@dataclass(frozen=True)
class _Outbound:
    interaction_id: int
    ticket_id: int | None
    channel: str
    body: str
    to_address: str
    from_address: str
    status: str | None
    sent: bool


def send_job_id(interaction_id: int) -> str:
    return f"send-message-{interaction_id}"


def send_retry(intervals: list[int]) -> Retry | None:
    return Retry(max=len(intervals), interval=list(intervals)) if intervals else None


def enqueue_send(connection: Any, interaction_id: int, intervals: list[int]) -> None:
    Queue(MESSAGES_QUEUE, connection=connection).enqueue(
        SEND_JOB,
        interaction_id,
        job_id=send_job_id(interaction_id),
        retry=send_retry(intervals),
        job_timeout=SEND_JOB_TIMEOUT_S,
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        description=f"send message {interaction_id}",
    )


def send_message(interaction_id: int) -> str:
    """The rq job the reply endpoint enqueues."""
    job = get_current_job()
    with job_context() as (settings, database):
        return deliver(
            interaction_id,
            settings=settings,
            database=database,
            last_attempt=job is None or not job.retries_left,
        )


def _load(database: Database, interaction_id: int) -> _Outbound | None:
    with database.unit_of_work() as session:
        row = session.get(Interaction, interaction_id)
        if row is None:
            return None
        return _Outbound(
            interaction_id=row.id,
            ticket_id=row.ticket_id,
            channel=row.channel,
            body=row.body,
            to_address=row.to_address or "",
            from_address=row.from_address or "",
            status=row.delivery_status,
            sent=row.provider_message_id is not None,
        )


def status_callback_url(settings: Settings, interaction_id: int) -> str | None:
    if not settings.public_url:
        return None
    return f"{settings.public_url}{STATUS_CALLBACK_PATH}?interaction={interaction_id}"


def deliver(
    interaction_id: int,
    *,
    settings: Settings,
    database: Database,
    client_factory: ClientFactory = rest_client,
    last_attempt: bool = True,
) -> str:
    """Send one queued outbound message; returns its delivery status."""
    target = _load(database, interaction_id)
    if target is None:
        log.warning("message %s no longer exists; nothing to send", interaction_id)
        return "missing"
    if target.sent or target.status not in (services.QUEUED, services.RETRYING):
        return target.status or "unknown"
    e164 = to_e164(target.to_address, settings.tickets.default_region)
    if _refuse_if_opted_out(database, target, e164):
        return services.REFUSED
    try:
        client = client_factory(settings)
        message = client.messages.create(
            to=target.to_address,
            from_=target.from_address,
            body=target.body,
            status_callback=status_callback_url(settings, interaction_id),
        )
    except TwilioNotConfigured as exc:
        return _fail(database, target, exc.message)
    except TwilioRestException as exc:
        if exc.code == UNSUBSCRIBED_RECIPIENT:
            _carrier_opt_out(database, target, e164)
            return services.REFUSED
        reason = f"Twilio answered HTTP {exc.status} (code {exc.code}): {exc.msg}"
        if exc.status in RETRYABLE_STATUSES:
            return _interrupted(database, target, reason, last_attempt)
        return _fail(database, target, reason)
    except requests.RequestException as exc:
        reason = f"the request to Twilio broke off ({type(exc).__name__})"
        return _interrupted(database, target, reason, last_attempt)
    status = str(getattr(message, "status", None) or "accepted")
    status = "queued-at-provider" if status == "queued" else status
    try:
        with database.unit_of_work() as session:
            services.record_provider_id(
                session, interaction_id, services.PROVIDER_TWILIO, str(message.sid)
            )
            services.apply_delivery_status(session, interaction_id, status, str(message.sid))
    except Exception:
        # Twilio has the message: raising would make rq send it a second time. The status
        # callbacks (keyed by the interaction id in their URL) still fill in its progress.
        log.exception("message %s sent as %s but not recorded", interaction_id, message.sid)
        return status
    log.info("message %s handed to Twilio as %s", interaction_id, message.sid)
    return status


def _refuse_if_opted_out(database: Database, target: _Outbound, e164: str) -> bool:
    with database.unit_of_work() as session:
        if not services.is_opted_out(session, e164, target.channel):
            return False
        _refuse(session, target, e164)
        return True


def _refuse(session: Any, target: _Outbound, e164: str) -> None:
    if not services.apply_delivery_status(session, target.interaction_id, services.REFUSED):
        return
    ticket = session.get(Ticket, target.ticket_id) if target.ticket_id else None
    if ticket is not None:
        services.refusal_note(session, ticket, e164, target.channel, target.body, utcnow())
    log.info("message %s not sent: %s opted out of %s", target.interaction_id, e164, target.channel)


def _carrier_opt_out(database: Database, target: _Outbound, e164: str) -> None:
    """Twilio says the number is unsubscribed: remember it, so Kokan stops trying too."""
    with database.unit_of_work() as session:
        ticket = session.get(Ticket, target.ticket_id) if target.ticket_id else None
        if ticket is not None:
            services.set_opt_out(
                session, e164, target.channel, True, "twilio", ticket.customer_id, utcnow()
            )
        _refuse(session, target, e164)


def _fail(database: Database, target: _Outbound, reason: str) -> str:
    with database.unit_of_work() as session:
        services.apply_delivery_status(
            session, target.interaction_id, services.FAILED, error=reason
        )
    log.error("message %s failed: %s", target.interaction_id, reason)
    return services.FAILED


def _interrupted(database: Database, target: _Outbound, reason: str, last_attempt: bool) -> str:
    if last_attempt:
        return _fail(database, target, f"gave up after the last retry: {reason}")
    with database.unit_of_work() as session:
        session.execute(
            update(Interaction)
            .where(Interaction.id == target.interaction_id)
            .values(delivery_status=services.RETRYING, delivery_error=reason[:255])
        )
    raise SendInterrupted(reason)
