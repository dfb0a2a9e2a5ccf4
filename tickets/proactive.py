"""Proactive messages: a rule sends a templated SMS or WhatsApp message when an event happens.

`raise_event` runs inside the event's own transaction (an outbox, like tickets.subscriptions):
each active rule for the event renders its text and stores a `ScheduledMessage` with its
send time — the rule's delay or `at` time, or the time the API caller asked for — moved past
quiet hours. A rolled-back event schedules nothing; a committed one is never lost. Messages
due now are enqueued after the commit; `sweep_due` (kokan cron, every minute) enqueues the
rest when their time comes, and whatever a lost enqueue left behind.

The dispatch job turns a due message into an outbound interaction on a ticket (the event's,
the customer's open one on the channel, or a new solved one, so a reply threads as a new
ticket linking it) and hands it to the reply send job (tickets.jobs), which checks the
opt-out once more, sends through Twilio, retries and records the delivery status.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import redis
from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from rq import Queue
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from kokan.config import MessageRule, ProactiveSettings, QuietHours, Settings, TicketsSettings
from kokan.db import Database, utcnow
from kokan.errors import Conflict, KokanError, NotFound
from kokan.job_context import job_context
from kokan.work_queues import MESSAGES_QUEUE
from tickets import jobs, services, subscriptions
from tickets.models import (
    Channel,
    Customer,
    InteractionDirection,
    ScheduledMessage,
    Ticket,
    TicketStatus,
)

TICKET_SOLVED = "ticket.solved"
CALLBACK_SCHEDULED = "callback.scheduled"

SCHEDULED = "scheduled"
SENT = "sent"
"""Handed to the send job as an outbound interaction; its delivery status tells the rest."""
REFUSED = "refused"
"""Not sent: the number opted out of the channel."""
FAILED = "failed"
CANCELLED = "cancelled"
STATUSES = (SCHEDULED, SENT, REFUSED, FAILED, CANCELLED)

DISPATCH_JOB = "tickets.proactive.dispatch_job"
DISPATCH_JOB_TIMEOUT_S = 60
RESULT_TTL_S = 3600
FAILURE_TTL_S = 7 * 24 * 3600
DUE_SOON_S = 5
"""A message due within this many seconds of its commit is enqueued at once, not left to
the sweep: "immediately" should not mean "within the minute"."""
MAX_ERROR = 255
SYSTEM_AUTHOR_PREFIX = "rule:"
"""Outbound messages a rule wrote carry `rule:<name>` as their author on the timeline."""

_DUE_KEY = "kokan.proactive_due"

log = logging.getLogger(__name__)


class ProactiveError(KokanError):
    error_id = "proactive-message-failed"
    status = 422


class NoSender(ProactiveError):
    error_id = "proactive-no-sender"


# ---- the clock ----


def in_quiet_hours(local: dt.time, quiet: QuietHours) -> bool:
    if quiet.start < quiet.end:
        return quiet.start <= local < quiet.end
    return local >= quiet.start or local < quiet.end  # across midnight: 21:00-09:00


def after_quiet_hours(moment: dt.datetime, quiet: QuietHours | None, zone: ZoneInfo) -> dt.datetime:
    """`moment`, or the end of the quiet hours it falls in (UTC in, UTC out)."""
    if quiet is None:
        return moment
    local = moment.astimezone(zone)
    if not in_quiet_hours(local.time(), quiet):
        return moment
    day = local.date()
    if quiet.start > quiet.end and local.time() >= quiet.start:
        day += dt.timedelta(days=1)  # the evening part of an overnight window ends tomorrow
    return dt.datetime.combine(day, quiet.end, tzinfo=zone).astimezone(dt.UTC)


def next_local_time(moment: dt.datetime, at: dt.time, zone: ZoneInfo) -> dt.datetime:
    """The first `at` (local wall clock) at or after `moment`."""
    local = moment.astimezone(zone)
    candidate = dt.datetime.combine(local.date(), at, tzinfo=zone)
    if candidate < local:
        candidate = dt.datetime.combine(local.date() + dt.timedelta(days=1), at, tzinfo=zone)
    return candidate.astimezone(dt.UTC)


def send_time(
    rule: MessageRule,
    settings: ProactiveSettings,
    now: dt.datetime,
    requested: dt.datetime | None = None,
) -> dt.datetime:
    """When a rule's message leaves: the time asked for, or the delay then the next `at`;
    never before now, and never inside quiet hours when the rule respects them."""
    zone = ZoneInfo(settings.timezone)
    if requested is not None:
        moment = max(requested.astimezone(dt.UTC), now)
    else:
        moment = now + dt.timedelta(minutes=rule.delay_minutes)
        if rule.at is not None:
            moment = next_local_time(moment, rule.at, zone)
    if rule.quiet_hours:
        moment = after_quiet_hours(moment, settings.quiet_hours, zone)
    return moment


# ---- the text ----


@functools.lru_cache(maxsize=256)
def _template(text: str) -> Template:
    # sandboxed: rules are written by admins, but their data comes from API callers
    environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    return environment.from_string(text)


def pick_text(texts: Mapping[str, str], language: str | None, default_language: str) -> str:
    """The text in the customer's language, else the configured one, else the first given."""
    for choice in (language, default_language):
        if choice and choice in texts:
            return texts[choice]
    return next(iter(texts.values()))


def render(text: str, context: Mapping[str, Any]) -> str:
    return _template(text).render(**context).strip()


def customer_context(customer: Customer) -> dict[str, Any]:
    return {"id": customer.id, "name": customer.display_name or ""}


def ticket_context(ticket: Ticket | None) -> dict[str, Any] | None:
    if ticket is None:
        return None
    return {
        "id": ticket.id,
        "subject": ticket.subject,
        "status": ticket.status,
        "channel": ticket.channel,
        "priority": ticket.priority,
    }


# ---- raising events ----


@dataclass(frozen=True)
class Recipient:
    e164: str
    channel: str
    address: str
    """As Twilio wants it: `whatsapp:+8190…` on WhatsApp."""


def address_for(e164: str, channel: str) -> str:
    return f"whatsapp:{e164}" if channel == Channel.WHATSAPP else e164


def customer_number(session: Session, customer_id: int) -> str | None:
    phones = services.phones_of(session, customer_id)
    return phones[0] if phones else None


def raise_event(
    session: Session,
    settings: TicketsSettings,
    event_type: str,
    *,
    customer_id: int,
    key: str,
    ticket: Ticket | None = None,
    e164: str | None = None,
    data: Mapping[str, Any] | None = None,
    send_at: dt.datetime | None = None,
    language: str | None = None,
    now: dt.datetime | None = None,
) -> list[ScheduledMessage]:
    """Schedule every active rule's message for this event, once per (rule, key).

    Never raises for a rule's own trouble (a template that needs data the event lacks, a
    customer with no number): the message is stored as failed with the reason, and the
    event that raised it (a ticket solved, an API call) goes through."""
    proactive = settings.proactive
    rules = [
        (name, rule)
        for name, rule in proactive.rules.items()
        if rule.active and rule.event == event_type
    ]
    if not rules:
        return []
    now = now or utcnow()
    customer = services.resolve(session, customer_id)
    number = e164 or customer_number(session, customer.id)
    context = {
        "event": event_type,
        "customer": customer_context(customer),
        "ticket": ticket_context(ticket),
        "data": dict(data or {}),
    }
    scheduled: list[ScheduledMessage] = []
    for name, rule in rules:
        existing = session.scalar(
            select(ScheduledMessage).where(
                ScheduledMessage.rule == name, ScheduledMessage.event_key == key[:128]
            )
        )
        if existing is not None:
            scheduled.append(existing)
            continue
        row = ScheduledMessage(
            rule=name,
            event=event_type,
            event_key=key[:128],
            customer_id=customer.id,
            ticket_id=ticket.id if ticket is not None else None,
            channel=rule.channel,
            to_address=address_for(number, rule.channel) if number else "",
            from_address="",
            send_at=send_time(rule, proactive, now, send_at),
            status=SCHEDULED,
            created_at=now,
            updated_at=now,
        )
        text = pick_text(rule.text, language, proactive.language)
        try:
            row.body = render(text, context)
        except TemplateError as exc:
            row.status, row.error = FAILED, f"template: {exc}"[:MAX_ERROR]
        if not number and row.status == SCHEDULED:
            row.status, row.error = FAILED, "the customer has no phone number"
        if row.status == SCHEDULED and not row.body:
            row.status, row.error = FAILED, "the template rendered an empty message"
        if row.status == FAILED:
            log.warning("rule %s for %s not scheduled: %s", name, event_type, row.error)
        session.add(row)
        session.flush()
        if row.status == SCHEDULED:
            schedule_after_commit(session, row)
        scheduled.append(row)
    return scheduled


def schedule_after_commit(session: Session, row: ScheduledMessage) -> None:
    """Remember a message due now, to enqueue it once the transaction has committed."""
    if row.send_at <= utcnow() + dt.timedelta(seconds=DUE_SOON_S):
        session.info.setdefault(_DUE_KEY, []).append(row.id)


@event.listens_for(Session, "after_commit")
def _enqueue_due(session: Session) -> None:
    ids: list[int] = session.info.pop(_DUE_KEY, [])
    connection = subscriptions.current_redis()
    if not ids or connection is None:
        return
    try:
        for message_id in ids:
            enqueue_dispatch(connection, message_id)
    except redis.RedisError:
        log.warning("proactive messages %s not enqueued (Redis); the sweep will send them", ids)


@event.listens_for(Session, "after_soft_rollback")
def _forget_due(session: Session, _previous: Any) -> None:
    session.info.pop(_DUE_KEY, None)


def dispatch_job_id(message_id: int) -> str:
    return f"proactive-{message_id}"


def enqueue_dispatch(connection: redis.Redis, message_id: int) -> None:
    Queue(MESSAGES_QUEUE, connection=connection).enqueue(
        DISPATCH_JOB,
        message_id,
        job_id=dispatch_job_id(message_id),
        job_timeout=DISPATCH_JOB_TIMEOUT_S,
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        description=f"proactive message {message_id}",
    )


# ---- sending ----


def sender_address(settings: Settings, channel: str) -> str:
    number = settings.tickets.proactive.from_number or settings.twilio.caller_id
    if not number:
        raise NoSender(
            "no number to send from: set tickets.proactive.from_number or twilio.caller_id"
        )
    return address_for(number, channel)


def _ticket_for(
    session: Session, settings: TicketsSettings, row: ScheduledMessage, now: dt.datetime
) -> Ticket:
    """The event's ticket; else the customer's open one on the channel; else a new one,
    solved at once: a notification needs no answer, and a reply opens a ticket linking it."""
    if row.ticket_id is not None:
        ticket = session.get(Ticket, row.ticket_id)
        if ticket is not None:
            return ticket
    services.lock_customer(session, row.customer_id, now)
    ticket = services.joinable_ticket(session, settings, row.customer_id, row.channel, now)
    if ticket is not None:
        return ticket
    subject = services.subject_from(row.body) or row.rule
    ticket = services.open_ticket(session, settings, row.customer_id, row.channel, subject, now)
    ticket.status = TicketStatus.SOLVED
    ticket.solved_at = now
    ticket.first_responded_at = now
    return ticket


@dataclass(frozen=True)
class Dispatched:
    status: str
    interaction_id: int | None = None


def dispatch(
    message_id: int,
    *,
    settings: Settings,
    database: Database,
    connection: redis.Redis | None,
    now: dt.datetime | None = None,
) -> Dispatched:
    """Turn one due message into an outbound interaction and enqueue its send; safe to run
    twice (only a message still scheduled is taken, in the same transaction that takes it)."""
    now = now or utcnow()
    tickets_settings = settings.tickets

    def work(session: Session) -> Dispatched:
        row = session.get(ScheduledMessage, message_id)
        if row is None:
            return Dispatched("missing")
        if row.status != SCHEDULED:
            return Dispatched(row.status, row.interaction_id)
        if row.send_at > now + dt.timedelta(seconds=DUE_SOON_S):
            return Dispatched(SCHEDULED)  # early: the sweep brings it back when due
        rule = tickets_settings.proactive.rules.get(row.rule)
        respects_quiet = rule.quiet_hours if rule is not None else True
        if respects_quiet:  # a backlog or a late worker can reach it inside quiet hours
            later = after_quiet_hours(
                now,
                tickets_settings.proactive.quiet_hours,
                ZoneInfo(tickets_settings.proactive.timezone),
            )
            if later > now:
                row.send_at, row.updated_at = later, now
                return Dispatched(SCHEDULED)
        taken = session.execute(
            update(ScheduledMessage)
            .where(ScheduledMessage.id == message_id, ScheduledMessage.status == SCHEDULED)
            .values(updated_at=now)
        )
        if not getattr(taken, "rowcount", 0):
            return Dispatched("taken")
        try:
            row.from_address = sender_address(settings, row.channel)
        except NoSender as exc:
            row.status, row.error = FAILED, exc.message[:MAX_ERROR]
            log.error("proactive message %s not sent: %s", row.id, exc.message)
            return Dispatched(FAILED)
        e164 = row.to_address.removeprefix("whatsapp:")
        ticket = _ticket_for(session, tickets_settings, row, now)
        row.ticket_id = ticket.id
        if services.is_opted_out(session, e164, row.channel):
            services.refusal_note(session, ticket, e164, row.channel, row.body, now)
            row.status, row.error = REFUSED, f"{e164} opted out of {row.channel}"
            return Dispatched(REFUSED)
        interaction = services.record_interaction(
            session,
            customer_id=row.customer_id,
            ticket=ticket,
            channel=row.channel,
            direction=InteractionDirection.OUTBOUND,
            body=row.body,
            from_address=row.from_address,
            to_address=row.to_address,
            author=(SYSTEM_AUTHOR_PREFIX + row.rule)[:64],
            delivery_status=services.QUEUED,
            at=now,
        )
        row.status, row.interaction_id, row.updated_at = SENT, interaction.id, now
        after_sent(session, row, now)
        return Dispatched(SENT, interaction.id)

    result = services.run_with_retry(database, work)
    if result.status == SENT and result.interaction_id is not None and connection is not None:
        jobs.enqueue_send(
            connection, result.interaction_id, tickets_settings.send_retry_intervals_s
        )
    return result


def after_sent(session: Session, row: ScheduledMessage, now: dt.datetime) -> None:
    """What a sent message starts: an SMS survey's first question opens it for answers."""
    from tickets import sms_survey

    if row.rule == sms_survey.RULE:
        sms_survey.opened(session, row, now)


def dispatch_job(message_id: int) -> str:
    """The rq job: one due message."""
    from rq import get_current_job

    job = get_current_job()
    with job_context() as (settings, database):
        connection = job.connection if job is not None else None
        subscriptions.use_redis(connection, settings.outbound_webhooks)
        return dispatch(
            message_id, settings=settings, database=database, connection=connection
        ).status


def sweep_due() -> int:
    """The periodic job: enqueue every scheduled message whose time has come."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        return 0
    with job_context() as (_settings, database):
        return enqueue_due(database, job.connection)


def enqueue_due(database: Database, connection: redis.Redis, now: dt.datetime | None = None) -> int:
    now = now or utcnow()
    with database.unit_of_work() as session:
        due = list(
            session.scalars(
                select(ScheduledMessage.id).where(
                    ScheduledMessage.status == SCHEDULED, ScheduledMessage.send_at <= now
                )
            )
        )
    for message_id in due:
        enqueue_dispatch(connection, message_id)
    if due:
        log.info("proactive sweep: %s messages due", len(due))
    return len(due)


# ---- the API's side ----


def cancel(session: Session, message_id: int, actor: str) -> ScheduledMessage:
    row = session.get(ScheduledMessage, message_id)
    if row is None:
        raise ScheduledMessageNotFound(f"no scheduled message {message_id}")
    if row.status != SCHEDULED:
        raise MessageNotCancellable(f"message {message_id} is {row.status}, not scheduled")
    row.status, row.updated_at = CANCELLED, utcnow()
    services.audit(
        session, actor, "proactive.cancelled", "customer", row.customer_id, {"message": row.id}
    )
    return row


class ScheduledMessageNotFound(NotFound):
    error_id = "scheduled-message-not-found"


class MessageNotCancellable(Conflict):
    error_id = "scheduled-message-not-cancellable"
