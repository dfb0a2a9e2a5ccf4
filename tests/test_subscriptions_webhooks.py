"""Outbound webhooks end to end: admins subscribe a real HTTP receiver on 127.0.0.1, ticket
and call events are delivered by real rq workers, signed, retried with backoff when the
receiver fails, and every attempt is in the delivery log."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis
from flask import Flask
from sqlalchemy import func, select, update

from kokan.app import create_app
from kokan.config import Settings
from kokan.db import Database, utcnow
from tests.conftest import configure_jobs
from tests.local_http import serving
from tests.test_intake_webhook import EMAIL, SECRET, Sender, stored
from tests.test_intake_webhook import email as email_payload
from tests.test_messaging_replies import work
from tests.test_tickets_api import Api, error, ok
from tickets import signing, subscriptions
from tickets.call_tickets import tickets_for_calls
from tickets.models import Call, WebhookDelivery

SUBSCRIBER_SECRET = "subscriber-secret-0123456789"


@dataclass
class Inbox:
    events: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    """Status codes to answer with before answering 204."""
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Receiver(BaseHTTPRequestHandler):
    inbox: ClassVar[Inbox]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            signing.verify(
                SUBSCRIBER_SECRET,
                self.headers.get(signing.TIMESTAMP_HEADER),
                self.headers.get(signing.SIGNATURE_HEADER),
                body,
            )
        except signing.SignatureInvalid:
            with self.inbox.lock:
                self.inbox.bad_signatures += 1
            self.send_response(401)
            self.end_headers()
            return
        with self.inbox.lock:
            status = self.inbox.failures.pop(0) if self.inbox.failures else 204
            if status == 204:
                self.inbox.events.append(json.loads(body))
                self.inbox.headers.append(dict(self.headers))
        self.send_response(status)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"nope!" if status != 204 else b"")


@pytest.fixture
def receiver() -> Iterator[tuple[Inbox, str]]:
    inbox = Inbox()
    handler = type("BoundReceiver", (Receiver,), {"inbox": inbox})
    with serving(handler) as url:
        yield inbox, url + "/hooks/kokan"


@pytest.fixture
def configured(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    sections = {
        "outbound_webhooks": {"retry_intervals_s": [0, 0], "timeout_s": 5},
    }
    return configure_jobs(
        tmp_path, monkeypatch, settings, sections, env={"KOKAN_INTAKE__SECRET": SECRET}
    )


@pytest.fixture
def hook_app(configured: Settings, database: Database, redis_client: redis.Redis) -> Flask:
    return create_app({"TESTING": True, "KOKAN_SETTINGS": configured})


@pytest.fixture
def api(hook_app: Flask, database: Database) -> Api:
    return Api(hook_app.test_client(), database)


@pytest.fixture
def sender(hook_app: Flask) -> Sender:
    return Sender(hook_app.test_client())


def subscribe(api: Api, url: str, events: list[str]) -> dict[str, Any]:
    body = {"url": url, "event_types": events, "secret": SUBSCRIBER_SECRET}
    created: dict[str, Any] = ok(api.post("/api/webhooks/subscriptions", body, user="root"), 201)
    return created


def deliveries(api: Api, query: str = "") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ok(api.get(f"/api/webhooks/deliveries{query}", user="root"))[
        "deliveries"
    ]
    return found


def test_ticket_events_arrive_signed_and_are_logged(
    api: Api,
    sender: Sender,
    redis_client: redis.Redis,
    receiver: tuple[Inbox, str],
) -> None:
    inbox, url = receiver
    created = subscribe(api, url, ["ticket.created", "interaction.added", "ticket.solved"])
    assert created["secret"] == SUBSCRIBER_SECRET
    listed = ok(api.get("/api/webhooks/subscriptions", user="root"))["subscriptions"]
    assert [item["id"] for item in listed] == [created["id"]]
    assert "secret" not in listed[0]

    ticket_id = stored(sender.post(EMAIL, email_payload()))["ticket_id"]
    work(redis_client)
    assert inbox.bad_signatures == 0
    assert sorted(event["type"] for event in inbox.events) == [
        "interaction.added",
        "ticket.created",
    ]
    by_type = {event["type"]: event for event in inbox.events}
    assert by_type["ticket.created"]["data"]["ticket"]["id"] == ticket_id
    assert by_type["interaction.added"]["data"]["interaction"]["body"] == (
        "注文した商品がまだ届きません。"
    )
    assert {h[subscriptions.EVENT_HEADER] for h in inbox.headers} == {
        "ticket.created",
        "interaction.added",
    }

    ok(api.patch(f"/api/tickets/{ticket_id}", {"status": "solved"}))
    work(redis_client)
    assert [event["type"] for event in inbox.events][-1] == "ticket.solved"
    solved = inbox.events[-1]["data"]
    assert solved["changes"] == {"status": ["new", "solved"]}
    assert solved["actor"] == "aiko"

    log = deliveries(api)
    assert [item["status"] for item in log] == ["delivered"] * 3
    assert all(item["log"][0]["status_code"] == 204 for item in log)
    assert all(item["log"][0]["duration_ms"] >= 0 for item in log)


def test_a_failing_receiver_is_retried_with_each_attempt_logged(
    api: Api,
    sender: Sender,
    redis_client: redis.Redis,
    receiver: tuple[Inbox, str],
    database: Database,
) -> None:
    inbox, url = receiver
    subscribe(api, url, ["ticket.created"])
    inbox.failures = [500, 503]
    stored(sender.post(EMAIL, email_payload("<a@x>")))
    work(redis_client)
    (delivered,) = deliveries(api)
    assert delivered["status"] == "delivered"
    assert [attempt["status_code"] for attempt in delivered["log"]] == [500, 503, 204]
    assert delivered["log"][0]["error"] == "HTTP 500: nope!"
    assert len(inbox.events) == 1

    inbox.failures = [500, 500, 500]
    stored(sender.post(EMAIL, email_payload("<b@x>", **{"from": {"address": "b@x.example"}})))
    work(redis_client)
    failed = deliveries(api, "?status=failed")
    assert len(failed) == 1
    assert failed[0]["attempts"] == 3
    assert len(inbox.events) == 1
    # running the job again after it gave up sends nothing
    assert subscriptions.deliver_job(failed[0]["id"]) == "skipped"


def test_a_lost_enqueue_is_found_by_the_sweep_and_a_deactivated_subscriber_gets_nothing(
    api: Api,
    sender: Sender,
    configured: Settings,
    redis_client: redis.Redis,
    receiver: tuple[Inbox, str],
    database: Database,
) -> None:
    inbox, url = receiver
    created = subscribe(api, url, ["*"])
    subscriptions.use_redis(None, configured.outbound_webhooks)  # as in the call projector
    stored(sender.post(EMAIL, email_payload()))
    assert redis_client.llen("rq:queue:webhooks") == 0
    assert subscriptions.requeue_due(database, redis_client, configured.outbound_webhooks) == 0
    with database.unit_of_work() as session:
        session.execute(update(WebhookDelivery).values(next_attempt_at=utcnow()))
    assert subscriptions.requeue_due(database, redis_client, configured.outbound_webhooks) == 2
    work(redis_client)
    assert sorted(event["type"] for event in inbox.events) == [
        "interaction.added",
        "ticket.created",
    ]

    ok(api.patch(f"/api/webhooks/subscriptions/{created['id']}", {"active": False}, user="root"))
    stored(sender.post(EMAIL, email_payload("<later@x>")))
    work(redis_client)
    assert len(inbox.events) == 2


def test_a_call_that_ended_is_one_event_however_often_it_is_projected(
    api: Api,
    configured: Settings,
    redis_client: redis.Redis,
    receiver: tuple[Inbox, str],
    database: Database,
) -> None:
    inbox, url = receiver
    subscribe(api, url, ["call.ended"])
    now = utcnow()
    with database.unit_of_work() as session:
        session.add(
            Call(
                provider="twilio",
                provider_call_id="CA" + "1" * 32,
                from_number="+819012345678",
                to_number="+81345678901",
                arrived_at=now,
                answered_at=now,
                ended_at=now,
                outcome="answered",
            )
        )
    for _ in range(2):
        tickets_for_calls(database, configured.tickets, [("twilio", "CA" + "1" * 32)])
    with database.sessions() as session:
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
    with database.unit_of_work() as session:
        session.execute(update(WebhookDelivery).values(next_attempt_at=utcnow()))
    subscriptions.requeue_due(database, redis_client, configured.outbound_webhooks)
    work(redis_client)
    (event,) = inbox.events
    assert event["type"] == "call.ended"
    assert event["data"]["call"]["outcome"] == "answered"


def test_subscriptions_are_for_admins_and_checked(api: Api, receiver: tuple[Inbox, str]) -> None:
    _, url = receiver
    path = "/api/webhooks/subscriptions"
    good = {"url": url, "event_types": ["ticket.created"]}
    assert error(api.post(path, good), 403) == "role-forbidden"
    assert error(api.post(path, good, user="sato"), 403) == "role-forbidden"
    assert error(api.get("/api/webhooks/deliveries"), 403) == "role-forbidden"
    assert error(api.post(path, good, user=None), 401) == "authentication-required"
    for bad in (
        {**good, "url": "ftp://example.com/x"},
        {**good, "url": "http://example.com:99999/x"},
        {**good, "event_types": ["ticket.exploded"]},
        {**good, "event_types": []},
        {**good, "secret": "short"},
        {**good, "active": "yes"},
        {"event_types": ["ticket.created"]},
    ):
        assert error(api.post(path, bad, user="root"), 400) == "invalid-input"
    created = ok(api.post(path, good, user="root"), 201)
    assert len(created["secret"]) >= 32  # made by Kokan when none was given
    one = f"{path}/{created['id']}"
    assert "secret" not in ok(api.get(one, user="root"))
    rotated = ok(api.patch(one, {"secret": "x" * 40}, user="root"))
    assert rotated["secret"] == "x" * 40
    assert api.client.delete(one, headers=api._headers("root")).status_code == 204
    assert error(api.get(one, user="root"), 404) == "webhook-subscription-not-found"
    bad_query = "/api/webhooks/deliveries?status=bogus"
    assert error(api.get(bad_query, user="root"), 400) == "invalid-input"
    assert error(api.get("/api/webhooks/deliveries?limit=0", user="root"), 400) == ("invalid-input")
