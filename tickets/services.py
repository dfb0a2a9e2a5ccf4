"""Rules of the one customer record: customers, tickets, interactions, opt-outs, merges.

Services take a `Session` and never commit; the caller owns the unit of work. Writes that
race another process (two webhooks for one unknown number, the same MessageSid delivered
twice at once) are settled by the database's unique constraints: the loser's transaction
fails with IntegrityError and `run_with_retry` runs the whole unit of work again, which
then finds what the winner committed. Nothing is ever half-written.

Merging keeps the merged customer as a tombstone (`merged_into_id` names the survivor)
rather than deleting it: links that name the old id (another system's CRM, an old
e-mail) still lead somewhere, and the audit entry can always name both.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kokan.config import TICKET_PRIORITIES, TicketsSettings
from kokan.db import Database, utcnow
from kokan.errors import Conflict, InvalidInput, NotFound
from tickets import subscriptions
from tickets.models import (
    ACTIVE_STATUSES,
    AuditEntry,
    Channel,
    Customer,
    CustomerEmail,
    CustomerPhone,
    Interaction,
    InteractionDirection,
    OptOut,
    Ticket,
    TicketStatus,
)

PROVIDER_TWILIO = "twilio"
SYSTEM_ACTOR = "system"
"""The actor of audit entries Kokan makes itself (a customer's STOP, a webhook)."""
RETRY_ATTEMPTS = 4
"""Unit-of-work attempts when a unique constraint says another process got there first."""
MAX_EMAIL = 320
SUBJECT_CHARS = 80
"""A new ticket's subject is the start of its first message."""
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

T = TypeVar("T")
log = logging.getLogger(__name__)


class CustomerNotFound(NotFound):
    error_id = "customer-not-found"


class TicketNotFound(NotFound):
    error_id = "ticket-not-found"


class MergeRefused(Conflict):
    error_id = "merge-refused"


class TicketClosed(Conflict):
    error_id = "ticket-closed"


class InvalidEmail(InvalidInput):
    error_id = "invalid-email"


# ---- units of work that race other processes ----


def run_with_retry(
    database: Database, work: Callable[[Session], T], attempts: int = RETRY_ATTEMPTS
) -> T:
    """Run `work` in a unit of work; when a unique constraint refuses it (another process
    committed the same customer or message first), roll back and run it again."""
    for attempt in range(1, attempts + 1):
        try:
            with database.unit_of_work() as session:
                return work(session)
        except IntegrityError:
            if attempt == attempts:
                raise
            log.info("unique constraint hit (attempt %s of %s); running again", attempt, attempts)
    raise AssertionError("unreachable")  # pragma: no cover


# ---- customers ----


def normalize_email(raw: str) -> str:
    email = raw.strip().lower()
    if len(email) > MAX_EMAIL or not EMAIL_PATTERN.fullmatch(email):
        raise InvalidEmail("not an e-mail address")
    return email


def resolve(session: Session, customer_id: int) -> Customer:
    """The customer, or the survivor a tombstone points to."""
    customer = session.get(Customer, customer_id)
    seen: set[int] = set()
    while customer is not None and customer.merged_into_id is not None:
        if customer.id in seen:  # pragma: no cover - merges refuse to make a loop
            break
        seen.add(customer.id)
        customer = session.get(Customer, customer.merged_into_id)
    if customer is None:
        raise CustomerNotFound(f"no customer {customer_id}")
    return customer


def get_customer(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise CustomerNotFound(f"no customer {customer_id}")
    return customer


def customer_by_phone(session: Session, e164: str) -> Customer | None:
    return session.scalar(
        select(Customer)
        .join(CustomerPhone, CustomerPhone.customer_id == Customer.id)
        .where(CustomerPhone.e164 == e164)
    )


def customer_by_email(session: Session, email: str) -> Customer | None:
    return session.scalar(
        select(Customer)
        .join(CustomerEmail, CustomerEmail.customer_id == Customer.id)
        .where(CustomerEmail.email == normalize_email(email))
    )


def find_or_create_by_phone(
    session: Session, e164: str, display_name: str | None = None
) -> tuple[Customer, bool]:
    """(customer, created). Racing a twin raises IntegrityError: run under run_with_retry."""
    existing = customer_by_phone(session, e164)
    if existing is not None:
        return existing, False
    customer = Customer(display_name=display_name)
    session.add(customer)
    session.flush()
    session.add(CustomerPhone(customer_id=customer.id, e164=e164))
    session.flush()
    return customer, True


def find_or_create_by_email(
    session: Session, raw_email: str, display_name: str | None = None
) -> tuple[Customer, bool]:
    email = normalize_email(raw_email)
    existing = customer_by_email(session, email)
    if existing is not None:
        return existing, False
    customer = Customer(display_name=display_name)
    session.add(customer)
    session.flush()
    session.add(CustomerEmail(customer_id=customer.id, email=email))
    session.flush()
    return customer, True


def phones_of(session: Session, customer_id: int) -> list[str]:
    return list(
        session.scalars(
            select(CustomerPhone.e164)
            .where(CustomerPhone.customer_id == customer_id)
            .order_by(CustomerPhone.id)
        )
    )


def emails_of(session: Session, customer_id: int) -> list[str]:
    return list(
        session.scalars(
            select(CustomerEmail.email)
            .where(CustomerEmail.customer_id == customer_id)
            .order_by(CustomerEmail.id)
        )
    )


def audit(
    session: Session,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: int,
    detail: dict[str, Any] | None = None,
    at: dt.datetime | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        detail=detail or {},
        at=at or utcnow(),
    )
    session.add(entry)
    return entry


def audit_log(session: Session, subject_type: str, subject_id: int) -> list[AuditEntry]:
    return list(
        session.scalars(
            select(AuditEntry)
            .where(AuditEntry.subject_type == subject_type, AuditEntry.subject_id == subject_id)
            .order_by(AuditEntry.at, AuditEntry.id)
        )
    )


@dataclass(frozen=True)
class MergeResult:
    survivor_id: int
    merged_id: int
    phones: list[str]
    emails: list[str]
    tickets: list[int]
    interactions: int


def merge_customers(session: Session, survivor_id: int, merged_id: int, actor: str) -> MergeResult:
    """Move everything of `merged_id` onto `survivor_id`; the merged one stays as a tombstone."""
    if survivor_id == merged_id:
        raise MergeRefused("a customer cannot be merged into itself")
    # lock both rows (PostgreSQL: FOR UPDATE; SQLite: the first write takes the file's lock)
    rows = {
        row.id: row
        for row in session.scalars(
            select(Customer)
            .where(Customer.id.in_([survivor_id, merged_id]))
            .order_by(Customer.id)
            .with_for_update()
        )
    }
    survivor, merged = rows.get(survivor_id), rows.get(merged_id)
    if survivor is None:
        raise CustomerNotFound(f"no customer {survivor_id}")
    if merged is None:
        raise CustomerNotFound(f"no customer {merged_id}")
    if survivor.merged_into_id is not None:
        raise MergeRefused(
            f"customer {survivor_id} was merged into {survivor.merged_into_id}; merge into that one"
        )
    if merged.merged_into_id is not None:
        raise MergeRefused(f"customer {merged_id} was already merged into {merged.merged_into_id}")
    now = utcnow()
    phones = phones_of(session, merged_id)
    emails = emails_of(session, merged_id)
    tickets = list(
        session.scalars(
            select(Ticket.id).where(Ticket.customer_id == merged_id).order_by(Ticket.id)
        )
    )
    for model in (CustomerPhone, CustomerEmail, Ticket):
        session.execute(
            update(model).where(model.customer_id == merged_id).values(customer_id=survivor_id)
        )
    moved = session.execute(
        update(Interaction)
        .where(Interaction.customer_id == merged_id)
        .values(customer_id=survivor_id)
    )
    # older tombstones of the merged customer now lead straight to the survivor
    session.execute(
        update(Customer)
        .where(Customer.merged_into_id == merged_id)
        .values(merged_into_id=survivor_id)
    )
    if survivor.display_name is None and merged.display_name is not None:
        survivor.display_name = merged.display_name
    survivor.updated_at = now
    merged.merged_into_id = survivor_id
    merged.merged_at = now
    merged.updated_at = now
    result = MergeResult(
        survivor_id=survivor_id,
        merged_id=merged_id,
        phones=phones,
        emails=emails,
        tickets=tickets,
        interactions=int(getattr(moved, "rowcount", 0) or 0),
    )
    detail = {
        "survivor": survivor_id,
        "merged": merged_id,
        "phones": phones,
        "emails": emails,
        "tickets": tickets,
        "interactions": result.interactions,
    }
    audit(session, actor, "customer.merged", "customer", survivor_id, detail, now)
    audit(session, actor, "customer.merged_away", "customer", merged_id, detail, now)
    session.flush()
    return result


# ---- tickets ----


def sla_due(
    settings: TicketsSettings, priority: str, since: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    target = settings.sla[priority]
    return (
        since + dt.timedelta(minutes=target.first_response_minutes),
        since + dt.timedelta(hours=target.resolution_hours),
    )


def subject_from(body: str) -> str:
    line = " ".join(body.split())
    return line if len(line) <= SUBJECT_CHARS else line[: SUBJECT_CHARS - 1] + "…"


def open_ticket(
    session: Session,
    settings: TicketsSettings,
    customer_id: int,
    channel: str,
    subject: str,
    now: dt.datetime,
    previous_ticket_id: int | None = None,
    priority: str = "normal",
) -> Ticket:
    first_due, resolution_due = sla_due(settings, priority, now)
    ticket = Ticket(
        customer_id=customer_id,
        channel=channel,
        status=TicketStatus.NEW,
        priority=priority,
        tags=[],
        subject=subject[:200],
        previous_ticket_id=previous_ticket_id,
        first_response_due_at=first_due,
        resolution_due_at=resolution_due,
        created_at=now,
        updated_at=now,
        last_activity_at=now,
    )
    session.add(ticket)
    session.flush()
    subscriptions.emit(
        session, subscriptions.TICKET_CREATED, subscriptions.ticket_data(ticket), now=now
    )
    return ticket


def get_ticket(session: Session, ticket_id: int) -> Ticket:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise TicketNotFound(f"no ticket {ticket_id}")
    return ticket


def lock_customer(session: Session, customer_id: int, now: dt.datetime) -> None:
    """Serialise threading per customer: two messages at once must not open two tickets.

    An UPDATE row-locks on PostgreSQL and takes SQLite's write lock, so what is read next
    includes whatever a concurrent transaction for this customer committed."""
    session.execute(update(Customer).where(Customer.id == customer_id).values(updated_at=now))


def joinable_ticket(
    session: Session, settings: TicketsSettings, customer_id: int, channel: str, now: dt.datetime
) -> Ticket | None:
    """The customer's newest active ticket on the channel, if it saw activity within the window."""
    ticket = session.scalar(
        select(Ticket)
        .where(
            Ticket.customer_id == customer_id,
            Ticket.channel == channel,
            Ticket.status.in_([status.value for status in ACTIVE_STATUSES]),
        )
        .order_by(Ticket.last_activity_at.desc(), Ticket.id.desc())
        .limit(1)
    )
    window = dt.timedelta(hours=settings.reopen_window_hours)
    if ticket is None or ticket.last_activity_at < now - window:
        return None
    return ticket


def thread(
    session: Session,
    settings: TicketsSettings,
    customer_id: int,
    channel: str,
    subject: str,
    now: dt.datetime,
) -> tuple[Ticket, bool]:
    """(ticket, created): join the open ticket on the channel, or open one linking the last."""
    lock_customer(session, customer_id, now)
    ticket = joinable_ticket(session, settings, customer_id, channel, now)
    if ticket is not None:
        if ticket.status == TicketStatus.PENDING:
            ticket.status = TicketStatus.OPEN  # the customer answered what we waited for
        return ticket, False
    previous = session.scalar(
        select(Ticket.id)
        .where(Ticket.customer_id == customer_id, Ticket.channel == channel)
        .order_by(Ticket.created_at.desc(), Ticket.id.desc())
        .limit(1)
    )
    return open_ticket(session, settings, customer_id, channel, subject, now, previous), True


@dataclass(frozen=True)
class TicketChanges:
    status: str | None = None
    priority: str | None = None
    assignee: str | None = None
    assignee_given: bool = False
    """assignee None means "leave it" unless this says it was sent (null unassigns)."""
    tags: list[str] | None = None


def update_ticket(
    session: Session,
    settings: TicketsSettings,
    ticket_id: int,
    changes: TicketChanges,
    actor: str,
    now: dt.datetime | None = None,
) -> Ticket:
    now = now or utcnow()
    ticket = get_ticket(session, ticket_id)
    if ticket.status == TicketStatus.CLOSED:
        raise TicketClosed(
            f"ticket {ticket_id} is closed; a new message opens a new ticket linking it"
        )
    diff: dict[str, list[Any]] = {}
    if changes.status is not None and changes.status != ticket.status:
        status = TicketStatus(changes.status)
        diff["status"] = [ticket.status, status.value]
        ticket.status = status
        if status == TicketStatus.SOLVED:
            ticket.solved_at = now
        elif status == TicketStatus.CLOSED:
            ticket.closed_at = now
            ticket.solved_at = ticket.solved_at or now
        else:
            ticket.solved_at = None
    if changes.priority is not None and changes.priority != ticket.priority:
        if changes.priority not in TICKET_PRIORITIES:
            raise InvalidInput(f"priority must be one of {', '.join(TICKET_PRIORITIES)}")
        diff["priority"] = [ticket.priority, changes.priority]
        ticket.priority = changes.priority
        ticket.first_response_due_at, ticket.resolution_due_at = sla_due(
            settings, changes.priority, ticket.created_at
        )
    if changes.assignee_given and changes.assignee != ticket.assignee:
        diff["assignee"] = [ticket.assignee, changes.assignee]
        ticket.assignee = changes.assignee
    if changes.tags is not None and changes.tags != list(ticket.tags):
        diff["tags"] = [list(ticket.tags), changes.tags]
        ticket.tags = changes.tags
    if diff:
        ticket.updated_at = now
        audit(session, actor, "ticket.updated", "ticket", ticket.id, {"changes": diff}, now)
        session.flush()
        data = {**subscriptions.ticket_data(ticket), "changes": diff, "actor": actor}
        subscriptions.emit(session, subscriptions.TICKET_UPDATED, data, now=now)
        if diff.get("status", [None, None])[1] == TicketStatus.SOLVED:
            subscriptions.emit(session, subscriptions.TICKET_SOLVED, data, now=now)
            from tickets import proactive

            proactive.raise_event(
                session,
                settings,
                proactive.TICKET_SOLVED,
                customer_id=ticket.customer_id,
                ticket=ticket,
                key=f"{proactive.TICKET_SOLVED}:{ticket.id}:{now.isoformat()}",
                now=now,
            )
    session.flush()
    return ticket


def add_note(session: Session, ticket_id: int, body: str, author: str) -> Interaction:
    ticket = get_ticket(session, ticket_id)
    now = utcnow()
    note = Interaction(
        ticket_id=ticket.id,
        customer_id=ticket.customer_id,
        channel=Channel.NOTE,
        direction=InteractionDirection.INTERNAL,
        author=author,
        body=body,
        media=[],
        created_at=now,
        updated_at=now,
    )
    session.add(note)
    ticket.updated_at = now
    session.flush()
    subscriptions.emit(
        session, subscriptions.INTERACTION_ADDED, subscriptions.interaction_data(note), now=now
    )
    return note


def is_breached(due: dt.datetime | None, done: dt.datetime | None, now: dt.datetime) -> bool:
    if due is None:
        return False
    return (done or now) > due


# ---- interactions ----


def find_interaction(
    session: Session, provider: str, provider_message_id: str
) -> Interaction | None:
    return session.scalar(
        select(Interaction).where(
            Interaction.provider == provider,
            Interaction.provider_message_id == provider_message_id,
        )
    )


def record_interaction(
    session: Session,
    *,
    customer_id: int,
    ticket: Ticket | None,
    channel: str,
    direction: str,
    body: str = "",
    provider: str | None = None,
    provider_message_id: str | None = None,
    from_address: str | None = None,
    to_address: str | None = None,
    author: str | None = None,
    media: Sequence[dict[str, Any]] = (),
    delivery_status: str | None = None,
    at: dt.datetime | None = None,
) -> Interaction:
    """Store one interaction (once: a provider id already stored raises IntegrityError)."""
    now = at or utcnow()
    interaction = Interaction(
        ticket_id=ticket.id if ticket is not None else None,
        customer_id=customer_id,
        channel=channel,
        direction=direction,
        provider=provider,
        provider_message_id=provider_message_id,
        from_address=from_address,
        to_address=to_address,
        author=author,
        body=body,
        media=list(media),
        delivery_status=delivery_status,
        created_at=now,
        updated_at=now,
    )
    session.add(interaction)
    if ticket is not None and ticket.last_activity_at < now:
        ticket.last_activity_at = now
        ticket.updated_at = now
    session.flush()
    subscriptions.emit(
        session, subscriptions.INTERACTION_ADDED, subscriptions.interaction_data(interaction)
    )
    return interaction


@dataclass(frozen=True)
class TimelineCursor:
    """Where the previous page stopped: newest first by (created_at, id)."""

    created_at: dt.datetime
    interaction_id: int

    def encode(self) -> str:
        micros = int(self.created_at.timestamp() * 1_000_000)
        return f"{micros}-{self.interaction_id}"

    @classmethod
    def decode(cls, raw: str) -> TimelineCursor:
        micros, sep, ident = raw.partition("-")
        if not sep or not micros.isascii() or not micros.isdigit() or not ident.isascii():
            raise InvalidInput("before: not a cursor this API handed out")
        if not ident.isdigit() or len(micros) > 20 or len(ident) > 20:
            raise InvalidInput("before: not a cursor this API handed out")
        try:
            moment = dt.datetime.fromtimestamp(int(micros) / 1_000_000, dt.UTC)
        except (OverflowError, ValueError, OSError):
            raise InvalidInput("before: not a cursor this API handed out") from None
        return cls(moment, int(ident))


@dataclass(frozen=True)
class TimelinePage:
    customer_id: int
    items: list[Interaction]
    next_cursor: str | None


def timeline(
    session: Session, customer_id: int, limit: int = 50, before: TimelineCursor | None = None
) -> TimelinePage:
    """Every interaction of the customer across tickets and channels, newest first."""
    customer = resolve(session, customer_id)
    query = select(Interaction).where(Interaction.customer_id == customer.id)
    if before is not None:
        query = query.where(
            or_(
                Interaction.created_at < before.created_at,
                (Interaction.created_at == before.created_at)
                & (Interaction.id < before.interaction_id),
            )
        )
    rows = list(
        session.scalars(
            query.order_by(Interaction.created_at.desc(), Interaction.id.desc()).limit(limit + 1)
        )
    )
    more = len(rows) > limit
    items = rows[:limit]
    cursor = TimelineCursor(items[-1].created_at, items[-1].id).encode() if more and items else None
    return TimelinePage(customer.id, items, cursor)


# ---- opt-out ----


class Keyword(enum.StrEnum):
    OPT_OUT = "opt-out"
    OPT_IN = "opt-in"
    HELP = "help"


OPT_OUT_WORDS = frozenset(
    {"STOP", "UNSUBSCRIBE", "END", "QUIT", "STOPALL", "REVOKE", "OPTOUT", "CANCEL"}
)
OPT_IN_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})


def keyword_of(body: str) -> Keyword | None:
    """A message that is exactly one keyword (any case, spaces around it ignored).

    NFKC first, so a Japanese keyboard's full-width STOP (U+FF33…) counts as STOP: treating more
    messages as an opt-out than the carrier does only ever sends less."""
    word = unicodedata.normalize("NFKC", body).strip().upper()
    if word in OPT_OUT_WORDS:
        return Keyword.OPT_OUT
    if word in OPT_IN_WORDS:
        return Keyword.OPT_IN
    if word in HELP_WORDS:
        return Keyword.HELP
    return None


def is_opted_out(session: Session, e164: str, channel: str) -> bool:
    return (
        session.scalar(select(OptOut.id).where(OptOut.e164 == e164, OptOut.channel == channel))
        is not None
    )


def set_opt_out(
    session: Session,
    e164: str,
    channel: str,
    opted_out: bool,
    actor: str,
    customer_id: int,
    now: dt.datetime,
) -> bool:
    """Record the number's choice; True when it changed anything."""
    row = session.scalar(select(OptOut).where(OptOut.e164 == e164, OptOut.channel == channel))
    if opted_out and row is None:
        session.add(OptOut(e164=e164, channel=channel, opted_out_at=now))
    elif not opted_out and row is not None:
        session.delete(row)
    else:
        return False
    action = "customer.opted_out" if opted_out else "customer.opted_in"
    audit(
        session, actor, action, "customer", customer_id, {"number": e164, "channel": channel}, now
    )
    session.flush()
    return True


# ---- inbound messages ----

REPLY_SUFFIX = ":reply"
"""A reply given in the webhook's TwiML is stored under the inbound MessageSid plus this."""


@dataclass(frozen=True)
class InboundMessage:
    channel: str
    from_e164: str
    from_address: str
    to_address: str
    body: str
    provider: str
    provider_message_id: str
    media: tuple[dict[str, str], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class InboundResult:
    interaction_id: int
    customer_id: int
    ticket_id: int | None
    duplicate: bool
    keyword: Keyword | None
    customer_created: bool = False
    ticket_created: bool = False
    reply: str | None = None
    """An answer Kokan gives in the webhook's own TwiML (the SMS survey's next question)."""


def receive_message(
    session: Session,
    settings: TicketsSettings,
    message: InboundMessage,
    now: dt.datetime | None = None,
) -> InboundResult:
    """Store an inbound SMS/WhatsApp message once, on its customer, in its ticket.

    A single keyword (STOP, START, HELP…) changes the opt-out state and is recorded on the
    customer, joining an open ticket when there is one but never opening a new one."""
    keyword = keyword_of(message.body)
    existing = find_interaction(session, message.provider, message.provider_message_id)
    if existing is not None:
        given = find_interaction(
            session, message.provider, message.provider_message_id + REPLY_SUFFIX
        )
        return InboundResult(
            existing.id,
            existing.customer_id,
            existing.ticket_id,
            duplicate=True,
            keyword=keyword,
            reply=given.body if given is not None else None,
        )
    now = now or utcnow()
    customer, customer_created = find_or_create_by_phone(session, message.from_e164)
    ticket: Ticket | None
    ticket_created = False
    survey = None
    if keyword is None and message.channel == Channel.SMS:
        from tickets import sms_survey

        survey = sms_survey.answer(session, settings, message.from_e164, message.body, now)
    if survey is not None:  # an answer joins the survey's call ticket, opening nothing
        ticket = session.get(Ticket, survey.ticket_id) if survey.ticket_id else None
    elif keyword is None:
        subject = subject_from(message.body) or f"{message.channel} from {message.from_e164}"
        ticket, ticket_created = thread(
            session, settings, customer.id, message.channel, subject, now
        )
    else:
        lock_customer(session, customer.id, now)
        ticket = joinable_ticket(session, settings, customer.id, message.channel, now)
        if keyword in (Keyword.OPT_OUT, Keyword.OPT_IN):
            set_opt_out(
                session,
                message.from_e164,
                message.channel,
                keyword == Keyword.OPT_OUT,
                SYSTEM_ACTOR,
                customer.id,
                now,
            )
    interaction = record_interaction(
        session,
        customer_id=customer.id,
        ticket=ticket,
        channel=message.channel,
        direction=InteractionDirection.INBOUND,
        body=message.body,
        provider=message.provider,
        provider_message_id=message.provider_message_id,
        from_address=message.from_address,
        to_address=message.to_address,
        media=message.media,
        delivery_status="received",
        at=now,
    )
    if survey is not None:
        record_interaction(  # the webhook's TwiML says it; kept so a redelivery says it again
            session,
            customer_id=customer.id,
            ticket=ticket,
            channel=message.channel,
            direction=InteractionDirection.OUTBOUND,
            body=survey.reply,
            provider=message.provider,
            provider_message_id=message.provider_message_id + REPLY_SUFFIX,
            from_address=message.to_address,
            to_address=message.from_address,
            author=SYSTEM_ACTOR,
            delivery_status="accepted",
            at=now,
        )
    return InboundResult(
        interaction.id,
        customer.id,
        ticket.id if ticket is not None else None,
        duplicate=False,
        keyword=keyword,
        customer_created=customer_created,
        ticket_created=ticket_created,
        reply=survey.reply if survey is not None else None,
    )


def keyword_reply(settings: TicketsSettings, keyword: Keyword | None) -> str | None:
    """What to answer a keyword with (None: answer nothing)."""
    if keyword == Keyword.HELP:
        return settings.help_reply or None
    if keyword == Keyword.OPT_OUT:
        return settings.opt_out_reply or None
    if keyword == Keyword.OPT_IN:
        return settings.opt_in_reply or None
    return None


# ---- outbound replies ----

MESSAGING_CHANNELS = (Channel.SMS.value, Channel.WHATSAPP.value)
MAX_MESSAGE_CHARS = {Channel.SMS.value: 1600, Channel.WHATSAPP.value: 4096}
"""Twilio's limits: 1 600 characters for an SMS (10 segments), 4 096 for WhatsApp."""
QUEUED = "queued"
"""Stored, waiting for the send job; the provider's own statuses follow."""
RETRYING = "retrying"
REFUSED = "refused"
"""Never sent: the number opted out (Kokan's record or the carrier's)."""
FAILED = "failed"
STATUS_RANK = {
    QUEUED: 0,
    RETRYING: 0,
    "accepted": 1,
    "scheduled": 1,
    "queued-at-provider": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    FAILED: 4,
    "read": 5,
    REFUSED: 9,
}
"""Statuses only move forward: a "sent" callback arriving after "delivered" changes nothing."""


def statuses_before(status: str) -> list[str]:
    rank = STATUS_RANK.get(status, 0)
    return [name for name, other in STATUS_RANK.items() if other < rank]


class ReplyChannelUnsupported(Conflict):
    error_id = "reply-channel-unsupported"


class NoRecipient(Conflict):
    error_id = "no-recipient"


class RecipientOptedOut(Conflict):
    error_id = "recipient-opted-out"


@dataclass(frozen=True)
class Recipient:
    e164: str
    to_address: str
    """As the provider wants it: `whatsapp:+8190…` on WhatsApp."""
    from_address: str
    """Kokan's number the customer wrote to."""


def reply_recipient(session: Session, ticket: Ticket, default_region: str) -> Recipient:
    """Answer from the number the customer last wrote to, to the address they wrote from."""
    from tickets.phones import to_e164

    last = session.scalar(
        select(Interaction)
        .where(
            Interaction.ticket_id == ticket.id,
            Interaction.direction == InteractionDirection.INBOUND,
            Interaction.from_address.is_not(None),
            Interaction.to_address.is_not(None),
        )
        .order_by(Interaction.created_at.desc(), Interaction.id.desc())
        .limit(1)
    )
    if last is None or not last.from_address or not last.to_address:
        raise NoRecipient(f"ticket {ticket.id} has no message from the customer to answer")
    return Recipient(
        e164=to_e164(last.from_address, default_region),
        to_address=last.from_address,
        from_address=last.to_address,
    )


def refusal_note(
    session: Session, ticket: Ticket, e164: str, channel: str, body: str, now: dt.datetime
) -> Interaction:
    """Say on the ticket that a message was not sent because the number opted out."""
    return record_interaction(
        session,
        customer_id=ticket.customer_id,
        ticket=ticket,
        channel=Channel.NOTE,
        direction=InteractionDirection.INTERNAL,
        author=SYSTEM_ACTOR,
        body=(
            f"Not sent: {e164} has opted out of {channel} messages "
            f"(they can send START to opt back in). The message was:\n{body}"
        ),
        at=now,
    )


@dataclass(frozen=True)
class ReplyOutcome:
    interaction: Interaction
    refused: bool
    recipient: Recipient


def queue_reply(
    session: Session,
    settings: TicketsSettings,
    ticket_id: int,
    body: str,
    author: str,
    now: dt.datetime | None = None,
) -> ReplyOutcome:
    """Store an agent's reply as a queued outbound message (the send job takes it from
    there), or, when the number opted out, a note on the ticket saying it was not sent."""
    now = now or utcnow()
    ticket = get_ticket(session, ticket_id)
    if ticket.status == TicketStatus.CLOSED:
        raise TicketClosed(f"ticket {ticket_id} is closed")
    if ticket.channel not in MESSAGING_CHANNELS:
        raise ReplyChannelUnsupported(
            f"replies go out by SMS or WhatsApp; ticket {ticket_id} is on {ticket.channel}"
        )
    limit = MAX_MESSAGE_CHARS[ticket.channel]
    if len(body) > limit:
        raise InvalidInput(f"a {ticket.channel} message has at most {limit} characters")
    recipient = reply_recipient(session, ticket, settings.default_region)
    if is_opted_out(session, recipient.e164, ticket.channel):
        note = refusal_note(session, ticket, recipient.e164, ticket.channel, body, now)
        return ReplyOutcome(note, refused=True, recipient=recipient)
    message = record_interaction(
        session,
        customer_id=ticket.customer_id,
        ticket=ticket,
        channel=ticket.channel,
        direction=InteractionDirection.OUTBOUND,
        body=body,
        from_address=recipient.from_address,
        to_address=recipient.to_address,
        author=author,
        delivery_status=QUEUED,
        at=now,
    )
    if ticket.first_responded_at is None:
        ticket.first_responded_at = now
    if ticket.status == TicketStatus.NEW:
        ticket.status = TicketStatus.OPEN
    session.flush()
    return ReplyOutcome(message, refused=False, recipient=recipient)


def apply_delivery_status(
    session: Session,
    interaction_id: int,
    status: str,
    provider_message_id: str | None = None,
    error: str | None = None,
) -> bool:
    """Move an outbound message's status forward (never back); True when it moved."""
    match = [Interaction.id == interaction_id]
    if provider_message_id is not None:
        match.append(
            or_(
                Interaction.provider_message_id.is_(None),
                Interaction.provider_message_id == provider_message_id,
            )
        )
    values: dict[str, Any] = {"delivery_status": status, "updated_at": utcnow()}
    if error is not None:
        values["delivery_error"] = error[:255]
    moved = session.execute(
        update(Interaction)
        .where(*match, Interaction.delivery_status.in_(statuses_before(status)))
        .values(**values)
    )
    return bool(getattr(moved, "rowcount", 0))


def record_provider_id(
    session: Session, interaction_id: int, provider: str, provider_message_id: str
) -> None:
    """Remember the provider's id of a sent message (once; a later id never replaces it)."""
    session.execute(
        update(Interaction)
        .where(Interaction.id == interaction_id, Interaction.provider_message_id.is_(None))
        .values(provider=provider, provider_message_id=provider_message_id)
    )
