"""SLA breaches: the sweep flags late first responses and resolutions once, with an audit
entry and a webhook event; the API lists flagged tickets. Real database, Redis, rq worker."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
import redis
from flask import Flask
from rq import Queue
from sqlalchemy import func, select

from kokan.app import create_app
from kokan.config import Settings, TicketsSettings
from kokan.db import Database, utcnow
from kokan.work_queues import DEFAULT_QUEUE
from tests.conftest import configure_jobs
from tests.test_messaging_replies import work
from tests.test_subscriptions_webhooks import Inbox, receiver, subscribe  # noqa: F401
from tests.test_tickets_api import Api, error, ok
from tickets import services, sla
from tickets.models import AuditEntry, Ticket

TICKETS = TicketsSettings()


def open_at(
    database: Database, hours_ago: float, priority: str = "normal", phone: str = "+819011110000"
) -> int:
    opened = utcnow() - dt.timedelta(hours=hours_ago)
    with database.unit_of_work() as session:
        customer, _ = services.find_or_create_by_phone(session, phone)
        ticket = services.open_ticket(
            session, TICKETS, customer.id, "sms", "help", opened, priority=priority
        )
        return ticket.id


def change(database: Database, ticket_id: int, **values: object) -> None:
    with database.unit_of_work() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        for name, value in values.items():
            setattr(ticket, name, value)


def flags(database: Database) -> dict[int, tuple[bool, bool]]:
    with database.sessions() as session:
        return {
            row.id: (
                row.first_response_breached_at is not None,
                row.resolution_breached_at is not None,
            )
            for row in session.scalars(select(Ticket))
        }


def audits(database: Database) -> int:
    with database.sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "ticket.sla_breached")
            )
            or 0
        )


def test_the_sweep_flags_each_late_target_once(database: Database) -> None:
    waiting = open_at(database, 5)  # normal: a reply was due after 4 h
    on_time = open_at(database, 5, phone="+819011110001")
    late = open_at(database, 5, phone="+819011110002")
    unanswered_but_solved = open_at(database, 5, phone="+819011110003")
    urgent = open_at(database, 5, priority="urgent", phone="+819011110004")  # 15 min / 4 h
    fresh = open_at(database, 1, phone="+819011110005")
    opened = utcnow() - dt.timedelta(hours=5)
    change(database, on_time, first_responded_at=opened + dt.timedelta(minutes=30))
    change(database, late, first_responded_at=opened + dt.timedelta(hours=4, minutes=1))
    change(database, unanswered_but_solved, status="solved", solved_at=opened)

    with database.unit_of_work() as session:
        found = sla.flag_breaches(session)
    assert sorted((b.ticket_id, b.target) for b in found) == sorted(
        [
            (waiting, sla.FIRST_RESPONSE),
            (late, sla.FIRST_RESPONSE),
            (urgent, sla.FIRST_RESPONSE),
            (urgent, sla.RESOLUTION),
        ]
    )
    assert flags(database) == {
        waiting: (True, False),
        on_time: (False, False),
        late: (True, False),
        unanswered_but_solved: (False, False),
        urgent: (True, True),
        fresh: (False, False),
    }
    assert audits(database) == 4
    with database.unit_of_work() as session:
        assert sla.flag_breaches(session) == []
    assert audits(database) == 4


def test_two_sweeps_at_once_flag_a_ticket_once(database: Database) -> None:
    open_at(database, 5)
    barrier = threading.Barrier(2)
    counts: list[int] = []

    def sweep() -> None:
        barrier.wait()
        counts.append(len(services.run_with_retry(database, sla.flag_breaches)))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(counts) == [0, 1]
    assert audits(database) == 1


@pytest.fixture
def configured(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    sections = {
        "outbound_webhooks": {"retry_intervals_s": [0], "timeout_s": 5},
    }
    return configure_jobs(tmp_path, monkeypatch, settings, sections)


@pytest.fixture
def sla_app(configured: Settings, database: Database, redis_client: redis.Redis) -> Flask:
    return create_app({"TESTING": True, "KOKAN_SETTINGS": configured})


def test_the_periodic_job_flags_sends_the_event_and_the_api_lists_breaches(
    sla_app: Flask,
    database: Database,
    redis_client: redis.Redis,
    receiver: tuple[Inbox, str],  # noqa: F811
) -> None:
    api = Api(sla_app.test_client(), database)
    inbox, url = receiver
    subscribe(api, url, ["ticket.sla_breached"])
    late = open_at(database, 5)
    solved_late = open_at(database, 30, phone="+819011110009")
    change(database, solved_late, status="solved", solved_at=utcnow(), first_responded_at=utcnow())
    assert ok(api.get("/api/tickets?breached=1")) == {"tickets": []}

    Queue(DEFAULT_QUEUE, connection=redis_client).enqueue("tickets.sla.sweep_sla")
    work(redis_client)  # the sweep, then the deliveries its commit enqueued

    listed = ok(api.get("/api/tickets?breached=1"))["tickets"]
    assert [item["id"] for item in listed] == [solved_late, late]
    assert listed[1]["first_response_breached_at"] is not None
    assert listed[1]["resolution_breached_at"] is None
    assert [
        item["id"] for item in ok(api.get("/api/tickets?breached=1&status=solved"))["tickets"]
    ] == [solved_late]
    events = sorted(
        (event["data"]["ticket"]["id"], event["data"]["breach"]["target"]) for event in inbox.events
    )
    assert events == sorted(
        [(late, "first_response"), (solved_late, "first_response"), (solved_late, "resolution")]
    )
    shown = ok(api.get(f"/api/tickets/{late}"))
    assert [entry["action"] for entry in shown["audit"]] == ["ticket.sla_breached"]

    assert error(api.get("/api/tickets"), 400) == "invalid-input"
    assert error(api.get("/api/tickets?breached=0"), 400) == "invalid-input"
    assert error(api.get("/api/tickets?breached=1&status=lost"), 400) == "invalid-input"
    assert error(api.get("/api/tickets?breached=1&limit=x"), 400) == "invalid-input"
    assert error(api.get("/api/tickets?breached=1", user=None), 401) == "authentication-required"
