"""Outbound webhooks: ticket and call events POSTed to subscribers as signed JSON.

An event is written as one delivery row per interested subscriber in the same transaction
as the change it reports (an outbox): a change that rolls back sends nothing, a committed
one is never lost. After the commit the deliveries are enqueued on rq (when this process
has a Redis connection registered, see `use_redis`); `sweep_deliveries`, run by `kokan
cron`, enqueues whatever no job took in time (a Redis blip, an event raised by the worker's
call projector). Each POST is signed like the intake (tickets.signing), logged as an
attempt, and retried with the configured exponential backoff; the delivery row claims
each attempt so two jobs for one delivery never POST at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import requests
from rq import Queue, Retry
from sqlalchemy import event, or_, select, update
from sqlalchemy.orm import Session

from kokan import config
from kokan.config import OutboundWebhookSettings
from kokan.db import Database, utcnow
from kokan.errors import KokanError, NotFound
from kokan.job_context import job_context
from kokan.work_queues import WEBHOOKS_QUEUE
from tickets import signing
from tickets.models import (
    Call,
    Interaction,
    Ticket,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)

TICKET_CREATED = "ticket.created"
TICKET_UPDATED = "ticket.updated"
TICKET_SOLVED = "ticket.solved"
TICKET_SLA_BREACHED = "ticket.sla_breached"
INTERACTION_ADDED = "interaction.added"
CALL_ENDED = "call.ended"
EVENT_TYPES = (
    TICKET_CREATED,
    TICKET_UPDATED,
    TICKET_SOLVED,
    TICKET_SLA_BREACHED,
    INTERACTION_ADDED,
    CALL_ENDED,
)
ALL_EVENTS = "*"

PENDING = "pending"
SENDING = "sending"
RETRYING = "retrying"
DELIVERED = "delivered"
FAILED = "failed"
WAITING_STATUSES = (PENDING, SENDING, RETRYING)

DELIVER_JOB = "tickets.subscriptions.deliver_job"
SWEEP_GRACE_S = 60
"""A delivery no job has taken this long after it was due is enqueued again by the sweep:
long enough for a busy queue, short enough that a lost enqueue is barely noticed."""
RESULT_TTL_S = 3600
FAILURE_TTL_S = 7 * 24 * 3600
MAX_ERROR = 255
MAX_RESPONSE_SHOWN = 200
USER_AGENT = "Kokan-Webhooks/1"
EVENT_HEADER = "X-Kokan-Event"
DELIVERY_HEADER = "X-Kokan-Delivery"
SECRET_BYTES = 32

_SUBSCRIBERS_KEY = "kokan.webhook_subscribers"
_ENQUEUE_KEY = "kokan.webhook_deliveries"
_redis: redis.Redis | None = None
_retry_intervals: list[int] = list(config.WEBHOOK_RETRY_INTERVALS_S)

log = logging.getLogger(__name__)


class SubscriptionNotFound(NotFound):
    error_id = "webhook-subscription-not-found"


class DeliveryInterrupted(KokanError):
    """The subscriber did not take the event this time; rq tries again."""

    error_id = "webhook-delivery-interrupted"
    status = 503


def use_redis(connection: redis.Redis | None, settings: OutboundWebhookSettings) -> None:
    """Let commits in this process enqueue their deliveries (and proactive messages) at once
    (the web app and jobs call this; without it, the periodic sweeps pick them up)."""
    global _redis, _retry_intervals
    _redis = connection
    _retry_intervals = list(settings.retry_intervals_s)


def current_redis() -> redis.Redis | None:
    """The connection `use_redis` registered for after-commit enqueues in this process."""
    return _redis


# ---- emitting events ----


def _subscribers(session: Session) -> list[tuple[int, frozenset[str]]]:
    """Active subscriptions, read once per unit of work."""
    cached = session.info.get(_SUBSCRIBERS_KEY)
    if cached is None:
        rows = session.execute(
            select(WebhookSubscription.id, WebhookSubscription.event_types).where(
                WebhookSubscription.active.is_(True)
            )
        ).all()
        cached = [(row.id, frozenset(row.event_types or ())) for row in rows]
        session.info[_SUBSCRIBERS_KEY] = cached
    result: list[tuple[int, frozenset[str]]] = cached
    return result


def emit(
    session: Session,
    event_type: str,
    data: dict[str, Any],
    key: str | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Write the event's deliveries; how many subscribers get it. With `key`, the event is
    made once whatever number of times it is emitted (a call projected twice)."""
    interested = [
        sub_id
        for sub_id, types in _subscribers(session)
        if event_type in types or ALL_EVENTS in types
    ]
    if not interested:
        return 0
    now = now or utcnow()
    event_id = hashlib.sha256(key.encode()).hexdigest()[:32] if key else uuid.uuid4().hex
    if key is not None:
        done = set(
            session.scalars(
                select(WebhookDelivery.subscription_id).where(WebhookDelivery.event_id == event_id)
            )
        )
        interested = [sub_id for sub_id in interested if sub_id not in done]
    payload = {"id": event_id, "type": event_type, "created_at": now.isoformat(), "data": data}
    rows = [
        WebhookDelivery(
            subscription_id=sub_id,
            event_id=event_id,
            event_type=event_type,
            payload=payload,
            status=PENDING,
            attempts=0,
            next_attempt_at=now + dt.timedelta(seconds=SWEEP_GRACE_S),
            created_at=now,
        )
        for sub_id in interested
    ]
    session.add_all(rows)
    session.flush()
    session.info.setdefault(_ENQUEUE_KEY, []).extend(row.id for row in rows)
    return len(rows)


@event.listens_for(Session, "after_commit")
def _enqueue_committed(session: Session) -> None:
    ids: list[int] = session.info.pop(_ENQUEUE_KEY, [])
    session.info.pop(_SUBSCRIBERS_KEY, None)
    if not ids or _redis is None:
        return
    try:
        for delivery_id in ids:
            enqueue_delivery(_redis, delivery_id, _retry_intervals)
    except redis.RedisError:
        log.warning("deliveries %s not enqueued (Redis); the sweep will send them", ids)


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, _previous: Any) -> None:
    session.info.pop(_ENQUEUE_KEY, None)
    session.info.pop(_SUBSCRIBERS_KEY, None)


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def ticket_data(ticket: Ticket) -> dict[str, Any]:
    return {
        "ticket": {
            "id": ticket.id,
            "customer_id": ticket.customer_id,
            "channel": ticket.channel,
            "status": ticket.status,
            "priority": ticket.priority,
            "assignee": ticket.assignee,
            "tags": list(ticket.tags or []),
            "subject": ticket.subject,
            "previous_ticket_id": ticket.previous_ticket_id,
            "first_response_due_at": _time(ticket.first_response_due_at),
            "resolution_due_at": _time(ticket.resolution_due_at),
            "first_responded_at": _time(ticket.first_responded_at),
            "solved_at": _time(ticket.solved_at),
            "created_at": _time(ticket.created_at),
        }
    }


def interaction_data(interaction: Interaction) -> dict[str, Any]:
    return {
        "interaction": {
            "id": interaction.id,
            "ticket_id": interaction.ticket_id,
            "customer_id": interaction.customer_id,
            "channel": interaction.channel,
            "direction": interaction.direction,
            "from": interaction.from_address,
            "to": interaction.to_address,
            "author": interaction.author,
            "body": interaction.body,
            "media": list(interaction.media or []),
            "created_at": _time(interaction.created_at),
        }
    }


def call_data(call: Call) -> dict[str, Any]:
    return {
        "call": {
            "call_id": call.call_id,
            "provider": call.provider,
            "provider_call_id": call.provider_call_id,
            "from": call.from_number,
            "to": call.to_number,
            "direction": call.direction,
            "queue": call.queue,
            "outcome": call.outcome,
            "arrived_at": _time(call.arrived_at),
            "answered_at": _time(call.answered_at),
            "ended_at": _time(call.ended_at),
        }
    }


# ---- subscriptions (admins, through /api/webhooks/subscriptions) ----


@dataclass(frozen=True)
class SubscriptionInput:
    url: str | None = None
    event_types: list[str] | None = None
    active: bool | None = None
    description: str | None = None
    secret: str | None = None


def create_subscription(session: Session, given: SubscriptionInput) -> WebhookSubscription:
    now = utcnow()
    row = WebhookSubscription(
        url=given.url,
        secret=given.secret or secrets.token_urlsafe(SECRET_BYTES),
        event_types=list(given.event_types or []),
        active=True if given.active is None else given.active,
        description=given.description or "",
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def get_subscription(session: Session, subscription_id: int) -> WebhookSubscription:
    row = session.get(WebhookSubscription, subscription_id)
    if row is None:
        raise SubscriptionNotFound(f"no webhook subscription {subscription_id}")
    return row


def update_subscription(
    session: Session, subscription_id: int, given: SubscriptionInput
) -> WebhookSubscription:
    row = get_subscription(session, subscription_id)
    if given.url is not None:
        row.url = given.url
    if given.event_types is not None:
        row.event_types = list(given.event_types)
    if given.active is not None:
        row.active = given.active
    if given.description is not None:
        row.description = given.description
    if given.secret is not None:
        row.secret = given.secret
    row.updated_at = utcnow()
    session.flush()
    return row


def delete_subscription(session: Session, subscription_id: int) -> None:
    session.delete(get_subscription(session, subscription_id))
    session.flush()


def list_subscriptions(session: Session) -> Sequence[WebhookSubscription]:
    return session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id)).all()


def list_deliveries(
    session: Session, subscription_id: int | None, status: str | None, limit: int
) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
    query = select(WebhookDelivery)
    if subscription_id is not None:
        query = query.where(WebhookDelivery.subscription_id == subscription_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    rows = list(
        session.scalars(
            query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(
                limit
            )
        )
    )
    attempts: dict[int, list[WebhookAttempt]] = {row.id: [] for row in rows}
    if rows:
        for attempt in session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(list(attempts)))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt)
        ):
            attempts[attempt.delivery_id].append(attempt)
    return [(row, attempts[row.id]) for row in rows]


# ---- delivering ----


def deliver_job_id(delivery_id: int) -> str:
    return f"webhook-delivery-{delivery_id}"


def enqueue_delivery(connection: redis.Redis, delivery_id: int, intervals: list[int]) -> None:
    """`intervals`: the pauses before the retries still allowed."""
    Queue(WEBHOOKS_QUEUE, connection=connection).enqueue(
        DELIVER_JOB,
        delivery_id,
        job_id=deliver_job_id(delivery_id),
        retry=Retry(max=len(intervals), interval=intervals) if intervals else None,
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        description=f"webhook delivery {delivery_id}",
    )


def _job_redis() -> redis.Redis | None:
    from rq import get_current_job

    job = get_current_job()
    return job.connection if job is not None else None


def deliver_job(delivery_id: int) -> str:
    """The rq job: one attempt at one delivery."""
    with job_context() as (settings, database):
        use_redis(_job_redis(), settings.outbound_webhooks)
        return deliver(delivery_id, settings=settings.outbound_webhooks, database=database)


@dataclass(frozen=True)
class _Claim:
    url: str
    secret: str
    body: bytes
    event_type: str
    attempt: int


def _claim(
    database: Database, delivery_id: int, settings: OutboundWebhookSettings
) -> _Claim | None:
    now = utcnow()
    lease = now + dt.timedelta(seconds=settings.timeout_s + SWEEP_GRACE_S)
    with database.unit_of_work() as session:
        claimed = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                or_(
                    WebhookDelivery.status.in_([PENDING, RETRYING]),
                    (WebhookDelivery.status == SENDING) & (WebhookDelivery.next_attempt_at <= now),
                ),
            )
            .values(status=SENDING, next_attempt_at=lease)
        )
        if not getattr(claimed, "rowcount", 0):
            return None
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        subscription = session.get(WebhookSubscription, row.subscription_id)
        if subscription is None or not subscription.active:
            row.status = FAILED
            row.last_error = "the subscription was deactivated"
            return None
        body = json.dumps(row.payload, ensure_ascii=False, separators=(",", ":")).encode()
        return _Claim(subscription.url, subscription.secret, body, row.event_type, row.attempts + 1)


def _post(claim: _Claim, delivery_id: int, timeout_s: int) -> tuple[int | None, str | None]:
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: claim.event_type,
        DELIVERY_HEADER: str(delivery_id),
        **signing.signed_headers(claim.secret, claim.body),
    }
    try:
        response = requests.post(
            claim.url, data=claim.body, headers=headers, timeout=timeout_s, allow_redirects=False
        )
    except requests.RequestException as exc:
        return None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
    if 200 <= response.status_code < 300:
        return response.status_code, None
    shown = response.text[:MAX_RESPONSE_SHOWN].strip()
    return response.status_code, f"HTTP {response.status_code}: {shown}"[:MAX_ERROR]


def deliver(delivery_id: int, *, settings: OutboundWebhookSettings, database: Database) -> str:
    """POST one delivery once; raise DeliveryInterrupted for rq to retry while attempts
    remain. Returns the delivery's status."""
    claim = _claim(database, delivery_id, settings)
    if claim is None:
        return "skipped"
    started = time.perf_counter()
    status_code, error = _post(claim, delivery_id, settings.timeout_s)
    duration_ms = int((time.perf_counter() - started) * 1000)
    now = utcnow()
    last = claim.attempt > len(settings.retry_intervals_s)
    with database.unit_of_work() as session:
        session.add(
            WebhookAttempt(
                delivery_id=delivery_id,
                attempt=claim.attempt,
                at=now,
                status_code=status_code,
                error=error,
                duration_ms=duration_ms,
            )
        )
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        row.attempts = claim.attempt
        row.last_error = error
        if error is None:
            row.status, row.delivered_at, row.next_attempt_at = DELIVERED, now, None
        elif last:
            row.status, row.next_attempt_at = FAILED, None
        else:
            pause = settings.retry_intervals_s[claim.attempt - 1]
            row.status = RETRYING
            row.next_attempt_at = now + dt.timedelta(seconds=pause + SWEEP_GRACE_S)
    if error is None:
        log.info("webhook delivery %s: %s in %s ms", delivery_id, status_code, duration_ms)
        return DELIVERED
    if last:
        log.error("webhook delivery %s failed for good: %s", delivery_id, error)
        return FAILED
    raise DeliveryInterrupted(f"delivery {delivery_id}, attempt {claim.attempt}: {error}")


def sweep_deliveries() -> int:
    """The periodic job: enqueue deliveries that are due and that no job is working on."""
    from rq import get_current_job

    with job_context() as (settings, database):
        job = get_current_job()
        connection = job.connection if job is not None else None
        if connection is None:
            return 0
        use_redis(connection, settings.outbound_webhooks)
        return requeue_due(database, connection, settings.outbound_webhooks)


def requeue_due(
    database: Database, connection: redis.Redis, settings: OutboundWebhookSettings
) -> int:
    now = utcnow()
    with database.unit_of_work() as session:
        due = session.execute(
            select(WebhookDelivery.id, WebhookDelivery.attempts).where(
                WebhookDelivery.status.in_(WAITING_STATUSES),
                WebhookDelivery.next_attempt_at <= now,
            )
        ).all()
    for delivery_id, attempts in due:
        enqueue_delivery(connection, delivery_id, settings.retry_intervals_s[attempts:])
    if due:
        log.info("webhook sweep: %s deliveries enqueued again", len(due))
    return len(due)
