"""The customer record's JSON API with real tokens: customers, search, timeline, merge,
tickets, notes; fed through the signed Messaging webhook as Twilio would feed it."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from admin.models import Role
from admin.services import create_user, issue_token
from kokan.app import create_app
from kokan.config import Settings
from kokan.db import Database
from tests.test_messaging_webhook import (
    CALLER,
    MIXED_SCRIPTS,
    Twilio,
    messaging_settings,
    reply_text,
    sms_params,
    whatsapp_params,
)
from tickets.models import AuditEntry, Customer, Ticket


@pytest.fixture
def api_app(settings: Settings, database: Database, redis_client: redis.Redis) -> Flask:
    return create_app({"TESTING": True, "KOKAN_SETTINGS": messaging_settings(settings)})


class Api:
    def __init__(self, client: FlaskClient, database: Database) -> None:
        self.client = client
        self.tokens: dict[str, str] = {}
        with database.unit_of_work() as session:
            for name, role in (
                ("aiko", Role.AGENT),
                ("sato", Role.SUPERVISOR),
                ("root", Role.ADMIN),
            ):
                self.tokens[name] = issue_token(session, create_user(session, name, role).user)

    def _headers(self, user: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}

    def get(self, path: str, user: str | None = "aiko") -> TestResponse:
        return self.client.get(path, headers=self._headers(user))

    def post(self, path: str, body: Any, user: str | None = "aiko") -> TestResponse:
        return self.client.post(path, json=body, headers=self._headers(user))

    def patch(self, path: str, body: Any, user: str | None = "aiko") -> TestResponse:
        return self.client.patch(path, json=body, headers=self._headers(user))


@pytest.fixture
def api(api_app: Flask, database: Database) -> Api:
    return Api(api_app.test_client(), database)


@pytest.fixture
def twilio(api_app: Flask) -> Twilio:
    return Twilio(api_app.test_client())


def ok(response: TestResponse, status: int = 200) -> Any:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def error(response: TestResponse, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["message"]
    return str(body["error_id"])


def only_customer(database: Database) -> int:
    with database.sessions() as session:
        (customer_id,) = session.scalars(
            select(Customer.id).where(Customer.merged_into_id.is_(None))
        )
        return customer_id


def test_every_route_needs_a_token(api: Api) -> None:
    for path in ("/api/customers/1", "/api/customers?phone=1", "/api/tickets/1"):
        assert error(api.get(path, user=None), 401) == "authentication-required"
    assert error(api.post("/api/customers/1/merge", {"from": 2}, user=None), 401)
    assert error(api.patch("/api/tickets/1", {"status": "open"}, user=None), 401)
    assert error(api.post("/api/tickets/1/notes", {"body": "x"}, user=None), 401)


def test_the_customer_view_and_its_timeline_across_channels(
    api: Api, twilio: Twilio, database: Database
) -> None:
    reply_text(twilio.post(sms_params(body="first by sms")))
    reply_text(twilio.post(whatsapp_params(body=MIXED_SCRIPTS)))
    customer_id = only_customer(database)
    for user in ("aiko", "sato", "root"):
        customer = ok(api.get(f"/api/customers/{customer_id}", user=user))
        assert customer["phones"] == [CALLER]
        assert {t["channel"] for t in customer["tickets"]} == {"sms", "whatsapp"}
        assert customer["merged_into"] is None
    timeline = ok(api.get(f"/api/customers/{customer_id}/timeline"))
    assert [item["body"] for item in timeline["items"]] == [MIXED_SCRIPTS, "first by sms"]
    assert [item["channel"] for item in timeline["items"]] == ["whatsapp", "sms"]
    assert timeline["next_before"] is None
    assert error(api.get("/api/customers/999999"), 404) == "customer-not-found"


def test_the_timeline_pages_with_a_cursor(api: Api, twilio: Twilio, database: Database) -> None:
    for n in range(5):
        reply_text(twilio.post(sms_params(body=f"m{n}")))
    customer_id = only_customer(database)
    seen: list[str] = []
    path = f"/api/customers/{customer_id}/timeline?limit=2"
    while True:
        page = ok(api.get(path))
        seen.extend(item["body"] for item in page["items"])
        if page["next_before"] is None:
            break
        path = f"/api/customers/{customer_id}/timeline?limit=2&before={page['next_before']}"
    assert seen == ["m4", "m3", "m2", "m1", "m0"]
    for bad in ("limit=0", "limit=201", "limit=x", "before=nonsense"):
        assert error(api.get(f"/api/customers/{customer_id}/timeline?{bad}"), 400)


def test_search_by_phone_in_any_format_and_by_email_in_any_case(
    api: Api, twilio: Twilio, database: Database
) -> None:
    reply_text(twilio.post(sms_params()))
    customer_id = only_customer(database)
    for phone in ("090-1234-5678", "%2B81%2090%201234%205678", "whatsapp:%2B819012345678"):
        found = ok(api.get(f"/api/customers?phone={phone}"))["customers"]
        assert [c["id"] for c in found] == [customer_id]
    assert ok(api.get("/api/customers?phone=03-0000-0000"))["customers"] == []
    assert error(api.get("/api/customers?phone=abc"), 400) == "invalid-phone-number"
    assert error(api.get("/api/customers"), 400) == "invalid-input"
    assert error(api.get("/api/customers?phone=1&email=a@b.c"), 400) == "invalid-input"
    assert ok(api.get("/api/customers?email=Nobody@Example.com"))["customers"] == []
    assert error(api.get("/api/customers?email=not-an-email"), 400) == "invalid-email"


def test_merge_needs_a_supervisor_and_moves_everything(
    api: Api, twilio: Twilio, database: Database
) -> None:
    reply_text(twilio.post(sms_params(body="from the mobile")))
    reply_text(twilio.post(sms_params(sender="+81312345678", body="from the office")))
    with database.sessions() as session:
        mobile, office = session.scalars(select(Customer.id).order_by(Customer.id))
    path = f"/api/customers/{mobile}/merge"
    assert error(api.post(path, {"from": office}, user="aiko"), 403) == "role-forbidden"
    merged = ok(api.post(path, {"from": office}, user="sato"))
    assert merged["customer"]["phones"] == [CALLER, "+81312345678"]
    assert len(merged["customer"]["tickets"]) == 2
    assert merged["merged"]["interactions"] == 1
    tombstone = ok(api.get(f"/api/customers/{office}"))
    assert tombstone["merged_into"] == mobile
    assert tombstone["phones"] == []
    timeline = ok(api.get(f"/api/customers/{office}/timeline"))
    assert timeline["customer_id"] == mobile
    assert len(timeline["items"]) == 2
    assert error(api.post(path, {"from": office}, user="root"), 409) == "merge-refused"
    assert error(api.post(path, {"from": mobile}, user="root"), 409) == "merge-refused"
    assert error(api.post(path, {"from": 999999}, user="root"), 404) == "customer-not-found"
    for bad in ({}, {"from": "2"}, {"from": True}, {"from": 0}, {"from": 2, "x": 1}, [1]):
        assert error(api.post(path, bad, user="root"), 400) == "invalid-input"
    with database.sessions() as session:
        actions = list(
            session.scalars(select(AuditEntry.actor).where(AuditEntry.action == "customer.merged"))
        )
        assert actions == ["sato"]
    # the next message from the merged number lands on the survivor
    reply_text(twilio.post(sms_params(sender="+81312345678", body="again")))
    assert ok(api.get(f"/api/customers/{mobile}/timeline"))["items"][0]["body"] == "again"


def test_tickets_are_read_changed_with_an_audit_and_annotated(
    api: Api, twilio: Twilio, database: Database
) -> None:
    reply_text(twilio.post(sms_params(body="help me")))
    with database.sessions() as session:
        ticket_id = session.scalar(select(Ticket.id))
    path = f"/api/tickets/{ticket_id}"
    ticket = ok(api.get(path))
    assert ticket["status"] == "new"
    assert ticket["priority"] == "normal"
    assert ticket["first_response_breached"] is False
    assert [i["body"] for i in ticket["interactions"]] == ["help me"]

    changed = ok(
        api.patch(
            path,
            {
                "status": "open",
                "priority": "high",
                "assignee": "aiko",
                "tags": ["vip", "vip", " billing "],
            },
        )
    )
    assert (changed["status"], changed["priority"], changed["assignee"]) == ("open", "high", "aiko")
    assert changed["tags"] == ["vip", "billing"]
    unassigned = ok(api.patch(path, {"assignee": None}, user="sato"))
    assert unassigned["assignee"] is None
    assert unassigned["priority"] == "high"

    note = ok(api.post(f"{path}/notes", {"body": "顧客は VIP です 🙂"}), 201)
    assert note["internal"] is True
    assert note["author"] == "aiko"
    assert note["channel"] == "note"
    ticket = ok(api.get(path))
    assert [i["channel"] for i in ticket["interactions"]] == ["sms", "note"]
    assert [(a["actor"], a["detail"]["changes"]) for a in ticket["audit"]] == [
        (
            "aiko",
            {
                "status": ["new", "open"],
                "priority": ["normal", "high"],
                "assignee": [None, "aiko"],
                "tags": [[], ["vip", "billing"]],
            },
        ),
        ("sato", {"assignee": ["aiko", None]}),
    ]
    ok(api.patch(path, {"status": "closed"}))
    assert error(api.patch(path, {"status": "open"}), 409) == "ticket-closed"


@pytest.mark.parametrize(
    "body",
    [
        {"status": "reopened"},
        {"priority": "critical"},
        {"tags": "vip"},
        {"tags": ["has space"]},
        {"tags": [""]},
        {"assignee": 5},
        {"subject": "not patchable"},
        ["status", "open"],
    ],
)
def test_bad_ticket_changes_are_400(
    api: Api, twilio: Twilio, database: Database, body: Any
) -> None:
    reply_text(twilio.post(sms_params()))
    with database.sessions() as session:
        ticket_id = session.scalar(select(Ticket.id))
    assert error(api.patch(f"/api/tickets/{ticket_id}", body), 400) == "invalid-input"


def test_unknown_tickets_assignees_and_bad_notes(
    api: Api, twilio: Twilio, database: Database
) -> None:
    reply_text(twilio.post(sms_params()))
    with database.sessions() as session:
        ticket_id = session.scalar(select(Ticket.id))
    assert error(api.get("/api/tickets/999999"), 404) == "ticket-not-found"
    assert error(api.patch("/api/tickets/999999", {"status": "open"}), 404) == "ticket-not-found"
    assert error(api.post("/api/tickets/999999/notes", {"body": "x"}), 404) == "ticket-not-found"
    path = f"/api/tickets/{ticket_id}"
    assert error(api.patch(path, {"assignee": "nobody"}), 400) == "unknown-assignee"
    assert error(api.post(f"{path}/notes", {"body": ""}), 400) == "invalid-input"
    assert error(api.post(f"{path}/notes", {"body": "x" * 20_001}), 400) == "invalid-input"
    response = api.client.post(
        f"{path}/notes",
        data="not json",
        headers={**api._headers("aiko"), "Content-Type": "application/json"},
    )
    assert error(response, 400) == "invalid-input"
