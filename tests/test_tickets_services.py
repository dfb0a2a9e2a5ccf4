"""The customer record's rules on the real test database (SQLite, or PostgreSQL when
TEST_DATABASE_URL names one): numbers, find-or-create under concurrency, merges,
threading, timelines, ticket changes and opt-out keywords."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kokan.config import TicketsSettings
from kokan.db import Database
from kokan.errors import InvalidInput
from tickets import services
from tickets.models import (
    AuditEntry,
    Customer,
    CustomerEmail,
    Interaction,
    Ticket,
)
from tickets.phones import InvalidPhoneNumber, to_e164
from tickets.services import (
    InboundMessage,
    Keyword,
    MergeRefused,
    TicketChanges,
    TicketClosed,
    TimelineCursor,
)

SETTINGS = TicketsSettings()
T0 = dt.datetime(2026, 11, 24, 1, 0, tzinfo=dt.UTC)


# ---- numbers ----


@pytest.mark.parametrize(
    "raw",
    [
        "090-1234-5678",
        "09012345678",
        "+81 90 1234 5678",
        "+819012345678",
        "whatsapp:+819012345678",
        "WhatsApp:+81 90-1234-5678",
        "tel:+81-90-1234-5678",
        "(090) 1234-5678",
        "\uff10\uff19\uff10\u2212\uff11\uff12\uff13\uff14\u2212\uff15\uff16\uff17\uff18",  # full-width
    ],
)
def test_every_way_of_writing_a_japanese_mobile_is_one_e164_number(raw: str) -> None:
    assert to_e164(raw, "JP") == "+819012345678"


def test_the_default_region_reads_national_numbers() -> None:
    assert to_e164("(415) 555-0100", "US") == "+14155550100"
    assert to_e164("+14155550100", "JP") == "+14155550100"
    assert to_e164("03-4567-8901", "JP") == "+81345678901"


@pytest.mark.parametrize("raw", ["", "   ", "abc", "12", "+", "+999999", "1" * 65, "whatsapp:"])
def test_what_is_not_a_number_is_refused(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        to_e164(raw, "JP")


def test_an_unknown_default_region_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="default_region"):
        TicketsSettings(default_region="XX")
    assert TicketsSettings(default_region="us").default_region == "US"


def test_sla_settings_fill_the_priorities_not_given() -> None:
    settings = TicketsSettings.model_validate(
        {"sla": {"urgent": {"first_response_minutes": 5, "resolution_hours": 1}}}
    )
    assert settings.sla["urgent"].first_response_minutes == 5
    assert settings.sla["low"].resolution_hours == 72
    with pytest.raises(ValueError, match="unknown priorities"):
        TicketsSettings.model_validate(
            {"sla": {"critical": {"first_response_minutes": 5, "resolution_hours": 1}}}
        )


# ---- keywords ----


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        ("STOP", Keyword.OPT_OUT),
        (" stopall ", Keyword.OPT_OUT),
        ("Cancel", Keyword.OPT_OUT),
        ("revoke\n", Keyword.OPT_OUT),
        ("optout", Keyword.OPT_OUT),
        ("start", Keyword.OPT_IN),
        ("Yes", Keyword.OPT_IN),
        ("UNSTOP", Keyword.OPT_IN),
        ("help", Keyword.HELP),
        ("INFO ", Keyword.HELP),
        ("opt out", None),
        ("STOP STOP", None),
        ("yes please", None),
        ("", None),
        ("停止", None),
    ],
)
def test_keywords_are_single_words_in_any_case(body: str, keyword: Keyword | None) -> None:
    assert services.keyword_of(body) == keyword


# ---- find or create ----


def _count(database: Database, model: Any) -> int:
    with database.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_find_or_create_by_phone_and_email(database: Database) -> None:
    with database.unit_of_work() as session:
        first, created = services.find_or_create_by_phone(session, "+819012345678")
        again, created_again = services.find_or_create_by_phone(session, "+819012345678")
        assert created
        assert not created_again
        assert first.id == again.id
        by_mail, made = services.find_or_create_by_email(session, " Taro.Yamada@Example.JP ")
        same, made_again = services.find_or_create_by_email(session, "taro.yamada@example.jp")
        assert made
        assert not made_again
        assert by_mail.id == same.id
    with database.sessions() as session:
        assert session.scalar(select(CustomerEmail.email)) == "taro.yamada@example.jp"


@pytest.mark.parametrize("raw", ["", "no-at-sign", "a@b", "two@@example.com", "sp ace@example.com"])
def test_an_email_that_is_not_one_is_refused(database: Database, raw: str) -> None:
    with pytest.raises(services.InvalidEmail), database.unit_of_work() as session:
        services.find_or_create_by_email(session, raw)


@pytest.mark.parametrize("kind", ["phone", "email"])
def test_concurrent_find_or_create_makes_one_customer(database: Database, kind: str) -> None:
    workers = 8
    barrier = threading.Barrier(workers)
    found: list[int] = []
    errors: list[BaseException] = []

    def work(session: Session) -> int:
        if kind == "phone":
            customer, _ = services.find_or_create_by_phone(session, "+819087654321")
        else:
            customer, _ = services.find_or_create_by_email(session, "Race@Example.com")
        barrier_wait()
        return customer.id

    waited = threading.local()

    def barrier_wait() -> None:
        # everyone inserts before anyone commits, the first time round only
        if not getattr(waited, "done", False):
            waited.done = True
            # SQLite: writers queue for the file lock, so the barrier breaks after a second
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=1)

    def run() -> None:
        try:
            found.append(services.run_with_retry(database, work))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(found) == workers
    assert len(set(found)) == 1
    assert _count(database, Customer) == 1


# ---- threading and the timeline ----


def _inbound(sid: str, body: str = "hello", channel: str = "sms") -> InboundMessage:
    return InboundMessage(
        channel=channel,
        from_e164="+819012345678",
        from_address="+819012345678",
        to_address="+81345678901",
        body=body,
        provider="twilio",
        provider_message_id=sid,
    )


def _receive(database: Database, message: InboundMessage, at: dt.datetime, **settings: Any):
    config = TicketsSettings(**settings)
    return services.run_with_retry(
        database, lambda session: services.receive_message(session, config, message, now=at)
    )


def test_threading_follows_the_window_from_the_last_activity(database: Database) -> None:
    first = _receive(database, _inbound("SM1"), T0, reopen_window_hours=2)
    joined = _receive(database, _inbound("SM2"), T0 + dt.timedelta(hours=1), reopen_window_hours=2)
    # two hours after the last message (not the first): still inside
    still = _receive(database, _inbound("SM3"), T0 + dt.timedelta(hours=3), reopen_window_hours=2)
    later = _receive(
        database, _inbound("SM4"), T0 + dt.timedelta(hours=5, seconds=1), reopen_window_hours=2
    )
    assert first.ticket_created
    assert first.customer_created
    assert joined.ticket_id == still.ticket_id == first.ticket_id
    assert later.ticket_created
    assert later.ticket_id != first.ticket_id
    with database.sessions() as session:
        ticket = session.get(Ticket, later.ticket_id)
        assert ticket is not None
        assert ticket.previous_ticket_id == first.ticket_id


def test_a_zero_window_opens_a_ticket_per_message(database: Database) -> None:
    a = _receive(database, _inbound("SM1"), T0, reopen_window_hours=0)
    b = _receive(database, _inbound("SM2"), T0 + dt.timedelta(seconds=1), reopen_window_hours=0)
    assert a.ticket_id != b.ticket_id


def test_the_timeline_spans_tickets_and_channels_newest_first_in_pages(
    database: Database,
) -> None:
    for n in range(7):
        channel = "whatsapp" if n % 2 else "sms"
        _receive(database, _inbound(f"SM{n}", f"m{n}", channel), T0 + dt.timedelta(minutes=n))
    # two interactions at the same instant are ordered by id
    _receive(database, _inbound("SM7", "m7"), T0 + dt.timedelta(minutes=6))
    with database.sessions() as session:
        customer_id = session.scalar(select(Customer.id))
        assert customer_id is not None
        seen: list[str] = []
        cursor: TimelineCursor | None = None
        pages = 0
        while True:
            page = services.timeline(session, customer_id, limit=3, before=cursor)
            seen.extend(item.body for item in page.items)
            pages += 1
            if page.next_cursor is None:
                break
            cursor = TimelineCursor.decode(page.next_cursor)
        assert seen == ["m7", "m6", "m5", "m4", "m3", "m2", "m1", "m0"]
        assert pages == 3
        tickets = {item.ticket_id for item in services.timeline(session, customer_id, 50).items}
        assert len(tickets) == 2


@pytest.mark.parametrize(
    "raw", ["", "abc", "12", "-1", "1-", "99999999999999999999999-1", "\uff11-1"]
)
def test_a_cursor_the_api_did_not_hand_out_is_refused(raw: str) -> None:
    with pytest.raises(InvalidInput):
        TimelineCursor.decode(raw)


# ---- merge ----


def _customer_with(session: Session, phone: str, email: str, sid: str) -> int:
    customer, _ = services.find_or_create_by_phone(session, phone, display_name=None)
    session.add(CustomerEmail(customer_id=customer.id, email=email))
    ticket = services.open_ticket(session, SETTINGS, customer.id, "sms", "subject", T0)
    services.record_interaction(
        session,
        customer_id=customer.id,
        ticket=ticket,
        channel="sms",
        direction="inbound",
        body=sid,
        provider="twilio",
        provider_message_id=sid,
        at=T0,
    )
    return customer.id


def test_merge_moves_everything_and_leaves_a_tombstone_with_an_audit_entry(
    database: Database,
) -> None:
    with database.unit_of_work() as session:
        keep = _customer_with(session, "+819011112222", "keep@example.com", "SM1")
        gone = _customer_with(session, "+819033334444", "gone@example.com", "SM2")
        session.get(Customer, gone).display_name = "山田 太郎"  # type: ignore[union-attr]
    with database.unit_of_work() as session:
        result = services.merge_customers(session, keep, gone, "sato")
    assert result.phones == ["+819033334444"]
    assert result.emails == ["gone@example.com"]
    assert result.interactions == 1
    assert len(result.tickets) == 1
    with database.sessions() as session:
        assert services.phones_of(session, keep) == ["+819011112222", "+819033334444"]
        assert services.emails_of(session, keep) == ["keep@example.com", "gone@example.com"]
        assert set(session.scalars(select(Ticket.customer_id))) == {keep}
        assert set(session.scalars(select(Interaction.customer_id))) == {keep}
        survivor = session.get(Customer, keep)
        tombstone = session.get(Customer, gone)
        assert survivor is not None
        assert tombstone is not None
        assert survivor.display_name == "山田 太郎"
        assert tombstone.merged_into_id == keep
        assert tombstone.merged_at is not None
        assert services.resolve(session, gone).id == keep
        assert services.customer_by_phone(session, "+819033334444").id == keep  # type: ignore[union-attr]
        entries = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
        assert [(e.action, e.subject_id, e.actor) for e in entries] == [
            ("customer.merged", keep, "sato"),
            ("customer.merged_away", gone, "sato"),
        ]
        assert entries[0].detail["tickets"] == result.tickets
        timeline = services.timeline(session, gone)
        assert timeline.customer_id == keep
        assert len(timeline.items) == 2


def test_merges_that_make_no_sense_are_refused(database: Database) -> None:
    with database.unit_of_work() as session:
        a = _customer_with(session, "+819011112222", "a@example.com", "SM1")
        b = _customer_with(session, "+819033334444", "b@example.com", "SM2")
        c = _customer_with(session, "+819055556666", "c@example.com", "SM3")
    with pytest.raises(MergeRefused), database.unit_of_work() as session:
        services.merge_customers(session, a, a, "sato")
    with pytest.raises(services.CustomerNotFound), database.unit_of_work() as session:
        services.merge_customers(session, a, 999_999, "sato")
    with database.unit_of_work() as session:
        services.merge_customers(session, a, b, "sato")
    with pytest.raises(MergeRefused), database.unit_of_work() as session:
        services.merge_customers(session, c, b, "sato")  # b is a tombstone now
    with pytest.raises(MergeRefused), database.unit_of_work() as session:
        services.merge_customers(session, b, c, "sato")
    # merging the survivor onward keeps every tombstone one step from the end
    with database.unit_of_work() as session:
        services.merge_customers(session, c, a, "sato")
    with database.sessions() as session:
        assert session.get(Customer, b).merged_into_id == c  # type: ignore[union-attr]


# ---- ticket changes ----


def test_ticket_changes_are_audited_and_priority_moves_the_due_times(database: Database) -> None:
    with database.unit_of_work() as session:
        customer, _ = services.find_or_create_by_phone(session, "+819012345678")
        ticket_id = services.open_ticket(session, SETTINGS, customer.id, "sms", "s", T0).id
    with database.unit_of_work() as session:
        ticket = services.update_ticket(
            session,
            SETTINGS,
            ticket_id,
            TicketChanges(priority="urgent", assignee="aiko", assignee_given=True, tags=["vip"]),
            "sato",
            now=T0 + dt.timedelta(minutes=1),
        )
        assert ticket.first_response_due_at == T0 + dt.timedelta(minutes=15)
        assert ticket.resolution_due_at == T0 + dt.timedelta(hours=4)
    with database.unit_of_work() as session:
        # the same values again change nothing and write no audit entry
        services.update_ticket(
            session, SETTINGS, ticket_id, TicketChanges(priority="urgent", tags=["vip"]), "sato"
        )
        ticket = services.update_ticket(
            session,
            SETTINGS,
            ticket_id,
            TicketChanges(status="solved"),
            "sato",
            now=T0 + dt.timedelta(minutes=2),
        )
        assert ticket.solved_at == T0 + dt.timedelta(minutes=2)
    with database.sessions() as session:
        entries = services.audit_log(session, "ticket", ticket_id)
        assert [e.detail["changes"] for e in entries] == [
            {
                "priority": ["normal", "urgent"],
                "assignee": [None, "aiko"],
                "tags": [[], ["vip"]],
            },
            {"status": ["new", "solved"]},
        ]
    with database.unit_of_work() as session:
        services.update_ticket(session, SETTINGS, ticket_id, TicketChanges(status="closed"), "s")
    with pytest.raises(TicketClosed), database.unit_of_work() as session:
        services.update_ticket(session, SETTINGS, ticket_id, TicketChanges(status="open"), "s")


def test_breaches_compare_the_due_time_with_when_it_was_done() -> None:
    due = T0
    assert not services.is_breached(None, None, T0)
    assert not services.is_breached(due, None, T0 - dt.timedelta(seconds=1))
    assert services.is_breached(due, None, T0 + dt.timedelta(seconds=1))
    assert not services.is_breached(due, T0, T0 + dt.timedelta(days=1))
    assert services.is_breached(due, T0 + dt.timedelta(seconds=1), T0)
