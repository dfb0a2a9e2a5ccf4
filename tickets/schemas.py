"""Request bodies of the tickets API, and the JSON shapes it answers with."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kokan.config import LANGUAGE_CODE, PROACTIVE_EVENT_PATTERN, TICKET_PRIORITIES
from kokan.errors import InvalidInput
from tickets.models import AuditEntry, Customer, Interaction, Ticket
from tickets.services import is_breached

MAX_TAGS = 50
MAX_TAG = 64
MAX_NOTE = 20_000
MAX_PAGE = 200

M = TypeVar("M", bound=BaseModel)


class TicketPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    status: Literal["new", "open", "pending", "solved", "closed"] | None = None
    priority: str | None = None
    assignee: str | None = Field(default=None, max_length=64)
    tags: list[str] | None = Field(default=None, max_length=MAX_TAGS)

    @field_validator("priority")
    @classmethod
    def _known_priority(cls, value: str | None) -> str | None:
        if value is not None and value not in TICKET_PRIORITIES:
            raise ValueError(f"must be one of {', '.join(TICKET_PRIORITIES)}")
        return value

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        tags: list[str] = []
        for raw in value:
            tag = raw.strip()
            if not tag or len(tag) > MAX_TAG or any(ch.isspace() for ch in tag):
                raise ValueError(f"a tag is 1-{MAX_TAG} characters without spaces")
            if tag not in tags:
                tags.append(tag)
        return tags


class NoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    body: str = Field(min_length=1, max_length=MAX_NOTE)


class ReplyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    body: str = Field(min_length=1, max_length=4096)


class EmailReplyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    body: str = Field(min_length=1, max_length=100_000)


class MergeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    from_id: int = Field(alias="from", ge=1)


def parse(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise InvalidInput("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']}") from None


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def customer_json(
    customer: Customer, phones: list[str], emails: list[str], tickets: list[Ticket]
) -> dict[str, Any]:
    return {
        "id": customer.id,
        "display_name": customer.display_name,
        "phones": phones,
        "emails": emails,
        "created_at": _time(customer.created_at),
        "merged_into": customer.merged_into_id,
        "merged_at": _time(customer.merged_at),
        "tickets": [ticket_summary(ticket) for ticket in tickets],
    }


def ticket_summary(ticket: Ticket) -> dict[str, Any]:
    return {
        "id": ticket.id,
        "channel": ticket.channel,
        "status": ticket.status,
        "priority": ticket.priority,
        "subject": ticket.subject,
        "assignee": ticket.assignee,
        "created_at": _time(ticket.created_at),
        "last_activity_at": _time(ticket.last_activity_at),
    }


def ticket_json(ticket: Ticket, now: dt.datetime) -> dict[str, Any]:
    return {
        **ticket_summary(ticket),
        "customer_id": ticket.customer_id,
        "tags": list(ticket.tags),
        "previous_ticket_id": ticket.previous_ticket_id,
        "first_response_due_at": _time(ticket.first_response_due_at),
        "resolution_due_at": _time(ticket.resolution_due_at),
        "first_responded_at": _time(ticket.first_responded_at),
        "solved_at": _time(ticket.solved_at),
        "closed_at": _time(ticket.closed_at),
        "updated_at": _time(ticket.updated_at),
        "first_response_breached": is_breached(
            ticket.first_response_due_at, ticket.first_responded_at, now
        ),
        "resolution_breached": is_breached(ticket.resolution_due_at, ticket.solved_at, now),
        "first_response_breached_at": _time(ticket.first_response_breached_at),
        "resolution_breached_at": _time(ticket.resolution_breached_at),
    }


def interaction_json(interaction: Interaction) -> dict[str, Any]:
    return {
        "id": interaction.id,
        "ticket_id": interaction.ticket_id,
        "customer_id": interaction.customer_id,
        "channel": interaction.channel,
        "direction": interaction.direction,
        "internal": interaction.direction == "internal",
        "from": interaction.from_address,
        "to": interaction.to_address,
        "author": interaction.author,
        "body": interaction.body,
        "media": list(interaction.media),
        "provider": interaction.provider,
        "provider_message_id": interaction.provider_message_id,
        "delivery_status": interaction.delivery_status,
        "delivery_error": interaction.delivery_error,
        "created_at": _time(interaction.created_at),
    }


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "actor": entry.actor,
        "action": entry.action,
        "detail": entry.detail,
        "at": _time(entry.at),
    }


# ---- outbound webhook subscriptions (tickets.subscriptions_http) ----

MAX_WEBHOOK_URL = 2048
WEBHOOK_SECRET_CHARS = (16, 128)
"""A subscriber's own secret: long enough not to be guessed, short enough for its column."""


def _check_webhook_url(value: str | None) -> str | None:
    from urllib.parse import urlsplit

    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ValueError("the port in the URL must be a number from 0 to 65535") from None
    return value


def _check_event_types(value: list[str] | None) -> list[str] | None:
    from tickets.subscriptions import ALL_EVENTS, EVENT_TYPES

    if value is None:
        return None
    unknown = sorted(set(value) - {*EVENT_TYPES, ALL_EVENTS})
    if unknown:
        raise ValueError(
            f"unknown event types {', '.join(unknown)}; use {', '.join(EVENT_TYPES)} or *"
        )
    return sorted(set(value))


class SubscriptionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str | None = Field(default=None, max_length=MAX_WEBHOOK_URL)
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=20)
    active: bool | None = None
    description: str | None = Field(default=None, max_length=200)
    secret: str | None = Field(
        default=None, min_length=WEBHOOK_SECRET_CHARS[0], max_length=WEBHOOK_SECRET_CHARS[1]
    )

    _url = field_validator("url")(_check_webhook_url)
    _events = field_validator("event_types")(_check_event_types)


class SubscriptionBody(SubscriptionPatch):
    url: str = Field(max_length=MAX_WEBHOOK_URL)
    event_types: list[str] = Field(min_length=1, max_length=20)


def subscription_json(row: Any, with_secret: bool = False) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": row.id,
        "url": row.url,
        "event_types": list(row.event_types),
        "active": row.active,
        "description": row.description,
        "created_at": _time(row.created_at),
        "updated_at": _time(row.updated_at),
    }
    if with_secret:
        shown["secret"] = row.secret
    return shown


def delivery_json(row: Any, attempts: list[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "subscription_id": row.subscription_id,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "next_attempt_at": _time(row.next_attempt_at),
        "created_at": _time(row.created_at),
        "delivered_at": _time(row.delivered_at),
        "payload": row.payload,
        "log": [
            {
                "attempt": attempt.attempt,
                "at": _time(attempt.at),
                "status_code": attempt.status_code,
                "error": attempt.error,
                "duration_ms": attempt.duration_ms,
            }
            for attempt in attempts
        ],
    }


# ---- proactive messages (tickets.proactive_http) ----

MAX_EVENT_DATA_CHARS = 10_000
"""An event's data is for a template or two: a few fields, not a document."""


class ProactiveEventBody(BaseModel):
    """An event from another system (an order shipped): the rules for it send their messages."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: str = Field(pattern=PROACTIVE_EVENT_PATTERN, max_length=64)
    id: str = Field(min_length=1, max_length=100, description="the caller's idempotency key")
    customer_id: int | None = Field(default=None, ge=1)
    phone: str | None = Field(default=None, min_length=1, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)
    send_at: dt.datetime | None = None
    language: str | None = Field(default=None, pattern=LANGUAGE_CODE)

    @field_validator("send_at", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> Any:
        # strict mode takes no strings for datetimes; JSON has no other way to send one
        if isinstance(value, str):
            try:
                parsed = dt.datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("must be an ISO 8601 time like 2026-12-24T10:00+09:00") from None
            if parsed.tzinfo is None:
                raise ValueError("needs a time zone offset, like +09:00 or Z")
            return parsed
        return value

    @field_validator("data")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, ensure_ascii=False)) > MAX_EVENT_DATA_CHARS:
            raise ValueError(f"at most {MAX_EVENT_DATA_CHARS} characters of JSON")
        return value


def scheduled_message_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "rule": row.rule,
        "event": row.event,
        "customer_id": row.customer_id,
        "ticket_id": row.ticket_id,
        "channel": row.channel,
        "to": row.to_address,
        "body": row.body,
        "send_at": _time(row.send_at),
        "status": row.status,
        "interaction_id": row.interaction_id,
        "error": row.error,
        "created_at": _time(row.created_at),
    }
