"""Calls become tickets per `tickets.call_rule`, through the real call-event stream and
projector: idempotent, order-free, and never in the way of the call-detail records."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import pytest
import redis
from sqlalchemy import select

from kokan.config import TicketsSettings
from kokan.db import Database
from tests.twilio_signing import new_sid
from tickets import cdr, services
from tickets.models import Call, Customer, Interaction, Ticket

T0 = dt.datetime(2026, 11, 24, 1, 0, tzinfo=dt.UTC)
CALLER = "+819012345678"
KOKAN = "+81312345678"


def call(caller: str = CALLER, direction: str = "inbound") -> cdr.CallIdentity:
    return cdr.CallIdentity("twilio", new_sid("CA"), caller, KOKAN, direction=direction)


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def finish(client: redis.Redis, identity: cdr.CallIdentity, outcome: str, answered: bool) -> None:
    cdr.append(client, "arrived", identity, at(0))
    if answered:
        cdr.append(client, "answered", identity, at(30))
    cdr.append(client, "outcome", identity, at(200), outcome=outcome)
    cdr.append(client, "ended", identity, at(200))


Rule = Literal["every_answered", "missed_only", "voicemail_only"]


def project(client: redis.Redis, database: Database, rule: Rule = "every_answered") -> None:
    cdr.CdrProjector(client, database, tickets=TicketsSettings(call_rule=rule)).drain()


def rows(database: Database, model: Any) -> list[Any]:
    with database.sessions() as session:
        found = list(session.scalars(select(model).order_by(model.id)))
        session.expunge_all()
        return found


CASES = [
    ("answered", True),
    ("abandoned", False),
    ("voicemail", False),
    ("callback", False),
    ("completed-in-ivr", False),
    ("transferred", True),
]


@pytest.mark.parametrize(
    ("rule", "ticketed"),
    [
        ("every_answered", {"answered", "voicemail"}),
        ("missed_only", {"abandoned", "voicemail", "callback"}),
        ("voicemail_only", {"voicemail"}),
    ],
)
def test_the_call_rule_picks_the_calls_that_become_tickets(
    redis_client: redis.Redis, database: Database, rule: Rule, ticketed: set[str]
) -> None:
    sids = {}
    for n, (outcome, answered) in enumerate(CASES):
        identity = call(caller=f"+8190123400{n:02d}")
        sids[identity.provider_call_id] = outcome
        finish(redis_client, identity, outcome, answered)
    project(redis_client, database, rule)
    assert len(rows(database, Call)) == len(CASES)
    made = {sids[i.provider_message_id] for i in rows(database, Interaction)}
    assert made == ticketed
    for interaction in rows(database, Interaction):
        outcome = sids[interaction.provider_message_id]
        assert interaction.channel == ("voicemail" if outcome == "voicemail" else "voice")
        assert interaction.direction == "inbound"
        assert interaction.created_at == at(0)
        assert outcome in interaction.body
    assert {t.channel for t in rows(database, Ticket)} <= {"voice", "voicemail"}


def test_a_call_is_one_interaction_whatever_the_order_and_repeats(
    redis_client: redis.Redis, database: Database
) -> None:
    identity = call()
    # the end and the outcome arrive first, in their own batch
    cdr.append(redis_client, "ended", identity, at(200))
    project(redis_client, database)
    assert rows(database, Interaction) == []  # not answered yet, as far as anyone knows
    cdr.append(redis_client, "outcome", identity, at(200), outcome="answered")
    cdr.append(redis_client, "arrived", identity, at(0))
    cdr.append(redis_client, "answered", identity, at(30))
    project(redis_client, database)
    finish(redis_client, identity, "answered", answered=True)  # every event again
    project(redis_client, database)
    (interaction,) = rows(database, Interaction)
    assert interaction.provider_message_id == identity.provider_call_id
    (ticket,) = rows(database, Ticket)
    assert ticket.channel == "voice"
    assert ticket.last_activity_at == at(200)
    assert "Inbound call, answered, 3m20s" in interaction.body


def test_calls_and_messages_from_one_number_are_one_customer(
    redis_client: redis.Redis, database: Database
) -> None:
    for _ in range(2):
        finish(redis_client, call(), "answered", answered=True)
    finish(redis_client, call(caller="090-1234-5678"), "voicemail", answered=False)
    project(redis_client, database)
    with database.unit_of_work() as session:
        message = services.InboundMessage(
            channel="sms",
            from_e164=CALLER,
            from_address=CALLER,
            to_address=KOKAN,
            body="following up by SMS",
            provider="twilio",
            provider_message_id=new_sid("SM"),
        )
        services.receive_message(session, TicketsSettings(), message, now=at(400))
    (customer,) = rows(database, Customer)
    tickets = rows(database, Ticket)
    # the two answered calls share the open voice ticket; the voicemail and the SMS have theirs
    assert sorted(t.channel for t in tickets) == ["sms", "voice", "voicemail"]
    with database.sessions() as session:
        page = services.timeline(session, customer.id)
        channels = [i.channel for i in page.items]
        assert channels[0] == "sms"  # the newest; the calls all started at the same moment
        assert sorted(channels[1:]) == ["voice", "voice", "voicemail"]


@pytest.mark.parametrize("party", ["anonymous", "client:ben", "sip:aiko@pbx.example.com", ""])
def test_a_caller_without_a_number_gets_no_ticket(
    redis_client: redis.Redis, database: Database, party: str
) -> None:
    finish(redis_client, call(caller=party), "voicemail", answered=False)
    project(redis_client, database)
    assert len(rows(database, Call)) == 1
    assert rows(database, Ticket) == []


def test_an_outbound_call_is_filed_under_the_number_called(
    redis_client: redis.Redis, database: Database
) -> None:
    identity = cdr.CallIdentity(
        "twilio", new_sid("CA"), KOKAN, CALLER, channel="voice", direction="outbound"
    )
    finish(redis_client, identity, "answered", answered=True)
    project(redis_client, database)
    (interaction,) = rows(database, Interaction)
    assert interaction.direction == "outbound"
    with database.sessions() as session:
        assert services.phones_of(session, interaction.customer_id) == [CALLER]


def test_a_failing_ticket_step_never_holds_up_the_call_records(
    redis_client: redis.Redis, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tickets.call_tickets

    def broken(*_args: Any, **_kwargs: Any) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(tickets.call_tickets, "tickets_for_calls", broken)
    finish(redis_client, call(), "answered", answered=True)
    projector = cdr.CdrProjector(redis_client, database, tickets=TicketsSettings())
    assert projector.drain() == 4
    assert len(rows(database, Call)) == 1
    assert rows(database, Ticket) == []
    assert projector.drain() == 0  # acknowledged, not retried forever
