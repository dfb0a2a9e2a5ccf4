"""Agents' e-mail replies: stored as queued on the ticket, sent through SMTP by an rq job.

The reply gets its own Message-ID when it is stored, so the customer's answer (In-Reply-To
naming it) finds the ticket even before the mail left; In-Reply-To and References name the
ticket's earlier e-mails so mail programs show one thread. Subject and body are UTF-8.

Safe to run again: a reply no longer queued (sent, failed) is left alone. "Not now"
answers (a 4xx reply, a refused or broken connection, a timeout) raise so that rq retries
with the configured pauses; a 5xx reply, or the last attempt, marks it failed with the
reason. SMTP has no idempotency key: a worker that dies between the server's "250" and
recording it sends that reply twice, which is the usual at-least-once of mail.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from typing import Any

from rq import Queue, Retry, get_current_job
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kokan.config import EmailSettings, TicketsSettings
from kokan.db import Database, utcnow
from kokan.errors import InvalidInput, KokanError
from kokan.job_context import job_context
from kokan.work_queues import MESSAGES_QUEUE
from tickets import services
from tickets.intake import PROVIDER_EMAIL, message_key
from tickets.models import Channel, Interaction, InteractionDirection, Ticket, TicketStatus

SEND_JOB = "tickets.email_out.send_email"
SEND_JOB_TIMEOUT_S = 120
RESULT_TTL_S = 24 * 3600
FAILURE_TTL_S = 7 * 24 * 3600
MAX_EMAIL_REPLY = 100_000
"""The same bound as an inbound e-mail's text."""
MAX_REFERENCES = 20
"""References keeps the first and the latest ids; mail programs need no more to thread."""
SENT = "sent"
"""The SMTP server took the message; mail has no delivery receipts Kokan can rely on."""

log = logging.getLogger(__name__)


class SmtpInterrupted(KokanError):
    """The SMTP server did not take the message this time; rq tries again."""

    error_id = "email-send-interrupted"
    status = 503


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"


def reply_recipient(session: Session, ticket: Ticket) -> str:
    """The address the customer last wrote from on this ticket, else their first address."""
    last = session.scalar(
        select(Interaction.from_address)
        .where(
            Interaction.ticket_id == ticket.id,
            Interaction.channel == Channel.EMAIL,
            Interaction.direction == InteractionDirection.INBOUND,
            Interaction.from_address.is_not(None),
        )
        .order_by(Interaction.created_at.desc(), Interaction.id.desc())
        .limit(1)
    )
    if last:
        return last
    emails = services.emails_of(session, ticket.customer_id)
    if not emails:
        raise services.NoRecipient(f"ticket {ticket.id}'s customer has no e-mail address")
    return emails[0]


def queue_email_reply(
    session: Session,
    tickets: TicketsSettings,
    email: EmailSettings,
    ticket: Ticket,
    body: str,
    author: str,
    now: dt.datetime | None = None,
) -> Interaction:
    """Store the reply as a queued outbound e-mail with its own Message-ID."""
    now = now or utcnow()
    if ticket.status == TicketStatus.CLOSED:
        raise services.TicketClosed(f"ticket {ticket.id} is closed")
    if len(body) > MAX_EMAIL_REPLY:
        raise InvalidInput(f"an e-mail reply has at most {MAX_EMAIL_REPLY} characters")
    recipient = reply_recipient(session, ticket)
    message = services.record_interaction(
        session,
        customer_id=ticket.customer_id,
        ticket=ticket,
        channel=Channel.EMAIL,
        direction=InteractionDirection.OUTBOUND,
        body=body,
        from_address=email.from_address,
        to_address=recipient,
        author=author,
        delivery_status=services.QUEUED,
        at=now,
    )
    # short, so the header stays on one line: `<kokan.<id>.<random>@<our domain>>`
    message_id = f"<kokan.{message.id}.{secrets.token_hex(8)}@{_domain(email.from_address)}>"
    message.message_ref = message_id
    message.provider = PROVIDER_EMAIL
    message.provider_message_id = message_key(Channel.EMAIL, message_id)
    if ticket.first_responded_at is None:
        ticket.first_responded_at = now
    if ticket.status == TicketStatus.NEW:
        ticket.status = TicketStatus.OPEN
    session.flush()
    return message


def send_job_id(interaction_id: int) -> str:
    return f"send-email-{interaction_id}"


def enqueue_email(connection: Any, interaction_id: int, intervals: list[int]) -> None:
    Queue(MESSAGES_QUEUE, connection=connection).enqueue(
        SEND_JOB,
        interaction_id,
        job_id=send_job_id(interaction_id),
        retry=Retry(max=len(intervals), interval=list(intervals)) if intervals else None,
        job_timeout=SEND_JOB_TIMEOUT_S,
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        description=f"send e-mail {interaction_id}",
    )


@dataclass(frozen=True)
class _Outgoing:
    interaction_id: int
    status: str | None
    message: EmailMessage


def _subject(ticket: Ticket | None) -> str:
    subject = (ticket.subject if ticket is not None else "") or "Your request"
    return subject if subject.lower().startswith("re:") else f"Re: {subject}"


def build_message(session: Session, row: Interaction, email: EmailSettings) -> EmailMessage:
    ticket = session.get(Ticket, row.ticket_id) if row.ticket_id is not None else None
    earlier = list(
        session.scalars(
            select(Interaction.message_ref)
            .where(
                Interaction.ticket_id == row.ticket_id,
                Interaction.channel == Channel.EMAIL,
                Interaction.message_ref.is_not(None),
                Interaction.id < row.id,
            )
            .order_by(Interaction.created_at, Interaction.id)
        )
    )
    message = EmailMessage()
    message["From"] = formataddr((email.from_name, row.from_address or email.from_address))
    message["To"] = row.to_address or ""
    message["Subject"] = _subject(ticket)
    message["Date"] = format_datetime(row.created_at)
    message["Message-ID"] = row.message_ref or make_msgid(domain=_domain(email.from_address))
    refs = [ref for ref in earlier if ref]
    if refs:
        message["In-Reply-To"] = refs[-1]
        kept = refs if len(refs) <= MAX_REFERENCES else [refs[0], *refs[-(MAX_REFERENCES - 1) :]]
        message["References"] = " ".join(kept)
    if ticket is not None:
        message["X-Kokan-Ticket"] = str(ticket.id)
    message.set_content(row.body, charset="utf-8")
    return message


def send_email(interaction_id: int) -> str:
    """The rq job the reply endpoint enqueues."""
    job = get_current_job()
    with job_context() as (settings, database):
        return deliver(
            interaction_id,
            settings=settings.email,
            database=database,
            last_attempt=job is None or not job.retries_left,
        )


def _load(database: Database, interaction_id: int, email: EmailSettings) -> _Outgoing | None:
    with database.unit_of_work() as session:
        row = session.get(Interaction, interaction_id)
        if row is None:
            return None
        return _Outgoing(row.id, row.delivery_status, build_message(session, row, email))


def _smtp_send(email: EmailSettings, message: EmailMessage) -> None:
    assert email.smtp_host is not None
    with smtplib.SMTP(email.smtp_host, email.smtp_port, timeout=email.timeout_s) as smtp:
        smtp.ehlo()
        if email.starttls:
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if email.smtp_user:
            password = email.smtp_password.get_secret_value() if email.smtp_password else ""
            smtp.login(email.smtp_user, password)
        smtp.send_message(message)


def deliver(
    interaction_id: int, *, settings: EmailSettings, database: Database, last_attempt: bool = True
) -> str:
    """Send one queued e-mail reply; returns its delivery status."""
    target = _load(database, interaction_id, settings)
    if target is None:
        log.warning("e-mail %s no longer exists; nothing to send", interaction_id)
        return "missing"
    if target.status not in (services.QUEUED, services.RETRYING):
        return target.status or "unknown"
    if not settings.smtp_host:
        return _fail(database, interaction_id, "no SMTP server configured (email.smtp_host)")
    try:
        _smtp_send(settings, target.message)
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = next(iter(exc.recipients.values()))
        reason = f"the SMTP server refused the recipient: {code} {_text(reply)}"
        if 400 <= code < 500:
            return _interrupted(database, interaction_id, reason, last_attempt)
        return _fail(database, interaction_id, reason)
    except smtplib.SMTPResponseException as exc:
        reason = f"the SMTP server answered {exc.smtp_code} {_text(exc.smtp_error)}"
        if 400 <= exc.smtp_code < 500:
            return _interrupted(database, interaction_id, reason, last_attempt)
        return _fail(database, interaction_id, reason)
    except (smtplib.SMTPException, OSError) as exc:
        reason = f"the SMTP connection failed ({type(exc).__name__}: {exc})"
        return _interrupted(database, interaction_id, reason, last_attempt)
    with database.unit_of_work() as session:
        services.apply_delivery_status(session, interaction_id, SENT)
    log.info("e-mail %s handed to %s", interaction_id, settings.smtp_host)
    return SENT


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _fail(database: Database, interaction_id: int, reason: str) -> str:
    with database.unit_of_work() as session:
        services.apply_delivery_status(session, interaction_id, services.FAILED, error=reason)
    log.error("e-mail %s failed: %s", interaction_id, reason)
    return services.FAILED


def _interrupted(database: Database, interaction_id: int, reason: str, last_attempt: bool) -> str:
    if last_attempt:
        return _fail(database, interaction_id, f"gave up after the last retry: {reason}")
    with database.unit_of_work() as session:
        session.execute(
            update(Interaction)
            .where(Interaction.id == interaction_id)
            .values(delivery_status=services.RETRYING, delivery_error=reason[:255])
        )
    raise SmtpInterrupted(reason)
