"""E-mail and chat arriving as signed JSON (from a mail gateway, a chat widget's backend):
the payloads, and how each becomes one interaction on one customer, in one ticket.

A message is stored once: its id is digested with the channel into the interaction's
provider id, so a redelivery hits the unique constraint (or is found first) and changes
nothing. Threading follows the messaging rules (tickets.services.thread), with what each
channel knows better: an e-mail that answers one Kokan already has (In-Reply-To /
References) joins that ticket; a chat message joins its conversation's ticket.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from kokan.config import TicketsSettings
from kokan.db import utcnow
from tickets import services
from tickets.models import (
    ACTIVE_STATUSES,
    Channel,
    Customer,
    CustomerEmail,
    CustomerPhone,
    Interaction,
    InteractionDirection,
    Ticket,
    TicketStatus,
)
from tickets.phones import to_e164

PROVIDER_EMAIL = "email"
PROVIDER_CHAT = "chat"
MAX_MESSAGE_ID = 998
"""RFC 5322's line limit: no real Message-ID is longer."""
MAX_EMAIL_TEXT = 100_000
"""A long e-mail thread quoted in full fits; a mailbox dumped into one message does not."""
MAX_CHAT_TEXT = 20_000
MAX_SUBJECT = 998
MAX_REFERENCES = 100
"""Mail programs trim References long before this."""
MAX_ATTACHMENTS = 20
MAX_URL = 2048
MAX_NAME = 200
DEFAULT_CONTENT_TYPE = "application/octet-stream"
"""What an attachment announced without a type is: bytes, as HTTP says."""


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


class Attachment(BaseModel):
    """A file the gateway keeps; Kokan stores its URL, never the bytes."""

    model_config = ConfigDict(extra="ignore", strict=True)

    url: Text = Field(min_length=1, max_length=MAX_URL, pattern=r"^https?://[^\s/]+\S*$")
    content_type: Text = Field(default=DEFAULT_CONTENT_TYPE, max_length=128)
    filename: Text | None = Field(default=None, max_length=255)
    size: int | None = Field(default=None, ge=0)

    def as_media(self) -> dict[str, Any]:
        # a type Kokan has never heard of is kept as announced, never refused
        content_type = self.content_type.strip() or DEFAULT_CONTENT_TYPE
        item: dict[str, Any] = {"url": self.url, "content_type": content_type}
        if self.filename is not None:
            item["filename"] = self.filename
        if self.size is not None:
            item["size"] = self.size
        return item


class Sender(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    address: Text = Field(min_length=3, max_length=320)
    name: Text | None = Field(default=None, max_length=MAX_NAME)


class EmailPayload(BaseModel):
    """POST /webhooks/intake/email."""

    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)

    message_id: Text = Field(min_length=1, max_length=MAX_MESSAGE_ID)
    sender: Sender = Field(alias="from")
    to: Text | None = Field(default=None, max_length=320)
    subject: Text = Field(default="", max_length=MAX_SUBJECT)
    text: Text = Field(default="", max_length=MAX_EMAIL_TEXT)
    in_reply_to: Text | None = Field(default=None, max_length=MAX_MESSAGE_ID)
    references: list[Text] = Field(default_factory=list, max_length=MAX_REFERENCES)
    attachments: list[Attachment] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)


class Visitor(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    id: Text | None = Field(default=None, max_length=128)
    email: Text | None = Field(default=None, max_length=320)
    phone: Text | None = Field(default=None, max_length=64)
    name: Text | None = Field(default=None, max_length=MAX_NAME)

    @model_validator(mode="after")
    def _reachable(self) -> Visitor:
        if not self.email and not self.phone:
            raise ValueError("a chat visitor needs an email or a phone to be one customer")
        return self


class ChatPayload(BaseModel):
    """POST /webhooks/intake/chat."""

    model_config = ConfigDict(extra="ignore", strict=True)

    message_id: Text = Field(min_length=1, max_length=MAX_MESSAGE_ID)
    conversation_id: Text = Field(min_length=1, max_length=MAX_MESSAGE_ID)
    visitor: Visitor
    text: Text = Field(default="", max_length=MAX_CHAT_TEXT)
    attachments: list[Attachment] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)

    @model_validator(mode="after")
    def _says_something(self) -> ChatPayload:
        if not self.text.strip() and not self.attachments:
            raise ValueError("a chat message needs a text or an attachment")
        return self


def digest(kind: str, raw: str) -> str:
    """64 hex characters: fits the provider id column whatever the sender's id looks like."""
    return hashlib.sha256(f"{kind}\x00{raw.strip()}".encode()).hexdigest()


def message_key(channel: str, message_id: str) -> str:
    return digest(channel, message_id)


@dataclass(frozen=True)
class IntakeResult:
    interaction_id: int
    customer_id: int
    ticket_id: int | None
    duplicate: bool
    ticket_created: bool = False


def _add_identity(
    session: Session, customer: Customer, email: str | None, e164: str | None
) -> None:
    """Remember the customer's other address when nobody else has it yet."""
    if email is not None and services.customer_by_email(session, email) is None:
        session.add(CustomerEmail(customer_id=customer.id, email=services.normalize_email(email)))
    if e164 is not None and services.customer_by_phone(session, e164) is None:
        session.add(CustomerPhone(customer_id=customer.id, e164=e164))
    session.flush()


def _join_or_follow(
    session: Session,
    settings: TicketsSettings,
    customer_id: int,
    channel: str,
    subject: str,
    known: Ticket | None,
    now: dt.datetime,
) -> tuple[Ticket, bool]:
    """(ticket, created): the ticket the message answers when it is still active; after it
    was solved or closed, a new one linking it; otherwise the channel's usual threading."""
    if known is None or known.customer_id != customer_id:
        return services.thread(session, settings, customer_id, channel, subject, now)
    services.lock_customer(session, customer_id, now)
    session.refresh(known)
    if known.status in [status.value for status in ACTIVE_STATUSES]:
        if known.status == TicketStatus.PENDING:
            known.status = TicketStatus.OPEN
        return known, False
    ticket = services.open_ticket(session, settings, customer_id, channel, subject, now, known.id)
    return ticket, True


def _ticket_of(session: Session, query: Any) -> Ticket | None:
    ticket_id = session.scalar(query.order_by(Interaction.id.desc()).limit(1))
    return session.get(Ticket, ticket_id) if ticket_id is not None else None


def _duplicate(session: Session, provider: str, key: str) -> IntakeResult | None:
    existing = services.find_interaction(session, provider, key)
    if existing is None:
        return None
    return IntakeResult(existing.id, existing.customer_id, existing.ticket_id, duplicate=True)


def receive_email(
    session: Session,
    settings: TicketsSettings,
    payload: EmailPayload,
    now: dt.datetime | None = None,
) -> IntakeResult:
    key = message_key(Channel.EMAIL, payload.message_id)
    found = _duplicate(session, PROVIDER_EMAIL, key)
    if found is not None:
        return found
    now = now or utcnow()
    customer, _ = services.find_or_create_by_email(
        session, payload.sender.address, payload.sender.name or None
    )
    if customer.display_name is None and payload.sender.name:
        customer.display_name = payload.sender.name
    answered = [ref for ref in [payload.in_reply_to, *reversed(payload.references)] if ref]
    known = None
    if answered:
        keys = [message_key(Channel.EMAIL, ref) for ref in answered]
        known = _ticket_of(
            session,
            select(Interaction.ticket_id).where(
                Interaction.provider == PROVIDER_EMAIL,
                Interaction.provider_message_id.in_(keys),
                Interaction.ticket_id.is_not(None),
            ),
        )
    subject = services.subject_from(payload.subject) or services.subject_from(payload.text)
    ticket, created = _join_or_follow(
        session,
        settings,
        customer.id,
        Channel.EMAIL,
        subject or f"e-mail from {payload.sender.address}",
        known,
        now,
    )
    interaction = services.record_interaction(
        session,
        customer_id=customer.id,
        ticket=ticket,
        channel=Channel.EMAIL,
        direction=InteractionDirection.INBOUND,
        body=payload.text,
        provider=PROVIDER_EMAIL,
        provider_message_id=key,
        from_address=services.normalize_email(payload.sender.address),
        to_address=payload.to,
        media=[item.as_media() for item in payload.attachments],
        delivery_status="received",
        at=now,
    )
    interaction.message_ref = payload.message_id.strip()
    session.flush()
    return IntakeResult(interaction.id, customer.id, ticket.id, False, created)


def receive_chat(
    session: Session,
    settings: TicketsSettings,
    payload: ChatPayload,
    now: dt.datetime | None = None,
) -> IntakeResult:
    key = message_key(Channel.CHAT, payload.message_id)
    found = _duplicate(session, PROVIDER_CHAT, key)
    if found is not None:
        return found
    now = now or utcnow()
    visitor = payload.visitor
    email = services.normalize_email(visitor.email) if visitor.email else None
    e164 = to_e164(visitor.phone, settings.default_region) if visitor.phone else None
    customer = services.customer_by_email(session, email) if email else None
    if customer is None and e164 is not None:
        customer = services.customer_by_phone(session, e164)
    if customer is None:
        if email is not None:
            customer, _ = services.find_or_create_by_email(session, email, visitor.name)
        else:
            assert e164 is not None  # the payload needs one of the two
            customer, _ = services.find_or_create_by_phone(session, e164, visitor.name)
    _add_identity(session, customer, email, e164)
    if customer.display_name is None and visitor.name:
        customer.display_name = visitor.name
    conversation = digest("conversation", payload.conversation_id)
    known = _ticket_of(
        session,
        select(Interaction.ticket_id).where(
            Interaction.thread_key == conversation,
            Interaction.channel == Channel.CHAT,
            Interaction.ticket_id.is_not(None),
        ),
    )
    subject = services.subject_from(payload.text) or "chat"
    ticket, created = _join_or_follow(
        session, settings, customer.id, Channel.CHAT, subject, known, now
    )
    interaction = services.record_interaction(
        session,
        customer_id=customer.id,
        ticket=ticket,
        channel=Channel.CHAT,
        direction=InteractionDirection.INBOUND,
        body=payload.text,
        provider=PROVIDER_CHAT,
        provider_message_id=key,
        from_address=email or e164 or (f"visitor:{visitor.id}" if visitor.id else None),
        media=[item.as_media() for item in payload.attachments],
        delivery_status="received",
        at=now,
    )
    interaction.thread_key = conversation
    session.flush()
    return IntakeResult(interaction.id, customer.id, ticket.id, False, created)


INTAKE_CHANNELS: dict[str, type[EmailPayload] | type[ChatPayload]] = {
    "email": EmailPayload,
    "chat": ChatPayload,
}
