"""Proactive messages and the SMS survey: rules on events, the clock (delays, `at` times,
quiet hours), opt-out, idempotency, and the survey conversation, end to end through real
rq workers, the real database and a local stand-in for api.twilio.com."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
import yaml
from flask import Flask
from pydantic import ValidationError
from sqlalchemy import select

from kokan.app import create_app
from kokan.config import (
    MessageRule,
    ProactiveSettings,
    QuietHours,
    Settings,
    TicketsSettings,
)
from kokan.db import Database
from tests.conftest import REPO_ROOT, configure_jobs
from tests.test_messaging_replies import FakeMessaging, twilio_api, work  # noqa: F401
from tests.test_messaging_webhook import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CALLER,
    KOKAN_NUMBER,
    PUBLIC_URL,
    Twilio,
    reply_text,
    sms_params,
)
from tests.test_tickets_api import Api, error, ok
from tests.twilio_signing import new_sid
from tickets import cdr, proactive, sms_survey, subscriptions
from tickets.models import Interaction, ScheduledMessage, SmsSurvey, Ticket

TOKYO = ZoneInfo("Asia/Tokyo")
FULL_WIDTH_FIVE = " \uff15 "
"""What a Japanese keyboard sends for 5, with the spaces a thumb adds."""
OVERNIGHT = QuietHours(start=dt.time(21, 0), end=dt.time(9, 0))


def tokyo(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=TOKYO).astimezone(dt.UTC)


# ---- the clock ----


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (tokyo(5, 12), tokyo(5, 12)),  # daytime: at once
        (tokyo(5, 22, 30), tokyo(6, 9)),  # evening: the next morning
        (tokyo(6, 3), tokyo(6, 9)),  # small hours: the same morning
        (tokyo(5, 21), tokyo(6, 9)),  # the start is inside
        (tokyo(6, 9), tokyo(6, 9)),  # the end is outside
    ],
)
def test_quiet_hours_across_midnight_hold_a_message_until_they_end(
    moment: dt.datetime, expected: dt.datetime
) -> None:
    assert proactive.after_quiet_hours(moment, OVERNIGHT, TOKYO) == expected


def test_quiet_hours_within_one_day_and_none_at_all() -> None:
    lunch = QuietHours(start=dt.time(12, 0), end=dt.time(13, 0))
    assert proactive.after_quiet_hours(tokyo(5, 12, 30), lunch, TOKYO) == tokyo(5, 13)
    assert proactive.after_quiet_hours(tokyo(5, 11, 59), lunch, TOKYO) == tokyo(5, 11, 59)
    assert proactive.after_quiet_hours(tokyo(5, 23), None, TOKYO) == tokyo(5, 23)


def test_quiet_hours_follow_daylight_saving_time_where_it_applies() -> None:
    new_york = ZoneInfo("America/New_York")
    # 2026-03-08: clocks jump from 02:00 to 03:00; 23:00 the night before ends at 09:00 EDT
    before = dt.datetime(2026, 3, 7, 23, 0, tzinfo=new_york).astimezone(dt.UTC)
    ends = proactive.after_quiet_hours(before, OVERNIGHT, new_york)
    assert ends == dt.datetime(2026, 3, 8, 13, 0, tzinfo=dt.UTC)  # 09:00 at UTC-4


def test_a_rule_waits_its_delay_then_its_time_of_day_then_quiet_hours() -> None:
    settings = ProactiveSettings(quiet_hours=OVERNIGHT)
    text = {"ja": "x"}
    delayed = MessageRule(event="ticket.solved", text=text, delay_minutes=30)
    assert proactive.send_time(delayed, settings, tokyo(5, 10)) == tokyo(5, 10, 30)
    assert proactive.send_time(delayed, settings, tokyo(5, 20, 45)) == tokyo(6, 9)
    at_ten = MessageRule(event="ticket.solved", text=text, at=dt.time(10, 0))
    assert proactive.send_time(at_ten, settings, tokyo(5, 9)) == tokyo(5, 10)
    assert proactive.send_time(at_ten, settings, tokyo(5, 10, 1)) == tokyo(6, 10)
    anytime = MessageRule(event="ticket.solved", text=text, quiet_hours=False)
    assert proactive.send_time(anytime, settings, tokyo(5, 23)) == tokyo(5, 23)
    # a time asked for by the API: never in the past, and quiet hours still hold
    assert proactive.send_time(anytime, settings, tokyo(5, 10), tokyo(4, 10)) == tokyo(5, 10)
    assert proactive.send_time(delayed, settings, tokyo(5, 10), tokyo(5, 23)) == tokyo(6, 9)


@pytest.mark.parametrize(
    ("rules", "complaint"),
    [
        ({"a": {"event": "Ticket Solved", "text": {"ja": "x"}}}, "should match pattern"),
        ({"a": {"event": "ticket.solved", "text": {"ja": "{{ oops"}}}, "template line 1"),
        ({"a": {"event": "ticket.solved", "text": {}}}, "at least one language"),
        ({"a": {"event": "ticket.solved", "text": {"日本": "x"}}}, "not a language code"),
        ({"a": {"event": "ticket.solved", "text": {"ja": "x" * 1601}}}, "over 1600"),
        ({"sms-survey": {"event": "ticket.solved", "text": {"ja": "x"}}}, "SMS survey's own"),
        ({"a": {"event": "ticket.solved", "text": {"ja": "x"}, "delay_minutes": -1}}, "greater"),
    ],
)
def test_bad_rules_are_refused_when_the_configuration_loads(
    rules: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        TicketsSettings.model_validate({"proactive": {"rules": rules}})
    assert complaint in str(raised.value)


def test_an_unknown_time_zone_and_an_empty_quiet_window_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown time zone"):
        ProactiveSettings(timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="same time"):
        QuietHours(start=dt.time(9), end=dt.time(9))


# ---- end to end ----

RULES = {
    "solved-thanks": {
        "event": "ticket.solved",
        "text": {
            "ja": "チケット{{ ticket.id }}は解決しました。",
            "en": "Ticket {{ ticket.id }} is solved.",
        },
        "quiet_hours": False,
    },
    "order-status": {
        "event": "order.status_changed",
        "text": {"ja": "ご注文{{ data.order_id }}: {{ data.status }} 📦"},
        "quiet_hours": False,
    },
    "callback-confirm": {
        "event": "callback.scheduled",
        "text": {"ja": "{{ data.number }}へ折り返しお電話します。"},
        "channel": "sms",
        "quiet_hours": False,
    },
}


@pytest.fixture
def configured(
    tmp_path: Path,
    settings: Settings,
    twilio_api: tuple[FakeMessaging, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """config.yaml as the jobs read it under `kokan worker`, with rules and the SMS survey."""
    sections = {
        "public_url": PUBLIC_URL,
        "twilio": {"account_sid": ACCOUNT_SID, "api_base": twilio_api[1]},
        "tickets": {
            "send_retry_intervals_s": [0],
            "proactive": {"from_number": KOKAN_NUMBER, "quiet_hours": None, "rules": RULES},
            "sms_survey": {"delay_minutes": 0},
        },
    }
    return configure_jobs(
        tmp_path, monkeypatch, settings, sections, env={"TWILIO_AUTH_TOKEN": AUTH_TOKEN}
    )


@pytest.fixture
def app(configured: Settings, database: Database, redis_client: redis.Redis) -> Flask:
    return create_app({"TESTING": True, "KOKAN_SETTINGS": configured})


@pytest.fixture
def api(app: Flask, database: Database) -> Api:
    return Api(app.test_client(), database)


@pytest.fixture
def twilio(app: Flask) -> Twilio:
    return Twilio(app.test_client())


def scheduled(database: Database) -> list[ScheduledMessage]:
    with database.sessions() as session:
        found = list(session.scalars(select(ScheduledMessage).order_by(ScheduledMessage.id)))
        session.expunge_all()
        return found


def ticket_interactions(database: Database, ticket_id: int) -> list[Interaction]:
    with database.sessions() as session:
        found = list(
            session.scalars(
                select(Interaction)
                .where(Interaction.ticket_id == ticket_id)
                .order_by(Interaction.id)
            )
        )
        session.expunge_all()
        return found


def sms_ticket(twilio: Twilio, database: Database, body: str = "hello") -> int:
    reply_text(twilio.post(sms_params(body=body)))
    with database.sessions() as session:
        ticket_id = session.scalar(select(Ticket.id).order_by(Ticket.id.desc()))
        assert ticket_id is not None
        return ticket_id


def test_solving_a_ticket_sends_the_rules_message_on_it_once(
    api: Api,
    twilio: Twilio,
    database: Database,
    redis_client: redis.Redis,
    twilio_api: tuple[FakeMessaging, str],  # noqa: F811
) -> None:
    fake, _ = twilio_api
    ticket_id = sms_ticket(twilio, database)
    ok(api.patch(f"/api/tickets/{ticket_id}", {"status": "solved"}))
    ok(api.patch(f"/api/tickets/{ticket_id}", {"status": "solved"}))  # no change: no event
    (message,) = scheduled(database)
    assert (message.rule, message.status, message.ticket_id) == (
        "solved-thanks",
        "scheduled",
        ticket_id,
    )
    work(redis_client)
    (sent,) = fake.sent
    assert sent["Body"] == f"チケット{ticket_id}は解決しました。"
    assert (sent["To"], sent["From"]) == (CALLER, KOKAN_NUMBER)
    (message,) = scheduled(database)
    assert message.status == "sent"
    outbound = [i for i in ticket_interactions(database, ticket_id) if i.direction == "outbound"]
    assert [(i.id, i.author, i.delivery_status) for i in outbound] == [
        (message.interaction_id, "rule:solved-thanks", "queued-at-provider")
    ]
    # the job again, and the sweep: nothing more leaves
    assert proactive.dispatch_job(message.id) == "sent"
    assert proactive.enqueue_due(database, redis_client) == 0
    work(redis_client)
    assert len(fake.sent) == 1


def test_an_api_event_at_a_set_time_waits_for_it_and_a_replay_sends_once(
    api: Api,
    database: Database,
    redis_client: redis.Redis,
    twilio_api: tuple[FakeMessaging, str],  # noqa: F811
) -> None:
    fake, _ = twilio_api
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    event = {
        "type": "order.status_changed",
        "id": "order-A17-shipped",
        "phone": "090-1234-5678",
        "data": {"order_id": "A17", "status": "発送済み"},
        "send_at": later.isoformat(),
    }
    first = ok(api.post("/api/proactive/events", event, user="sato"), 202)
    again = ok(api.post("/api/proactive/events", event, user="sato"), 202)
    assert [m["id"] for m in first["messages"]] == [m["id"] for m in again["messages"]]
    (message,) = first["messages"]
    assert message["to"] == CALLER  # E.164 from the national form
    assert message["body"] == "ご注文A17: 発送済み 📦"
    assert dt.datetime.fromisoformat(message["send_at"]) == later
    work(redis_client)
    assert fake.sent == []
    assert proactive.enqueue_due(database, redis_client) == 0
    # two hours on, the sweep finds it due
    assert proactive.enqueue_due(database, redis_client, now=later + dt.timedelta(seconds=1)) == 1
    with database.unit_of_work() as session:
        row = session.get(ScheduledMessage, message["id"])
        assert row is not None
        row.send_at = dt.datetime.now(dt.UTC)  # the clock the job reads has moved on too
    work(redis_client)
    (sent,) = fake.sent
    assert sent["Body"] == "ご注文A17: 発送済み 📦"
    (row,) = scheduled(database)
    assert row.status == "sent"
    assert row.ticket_id is not None
    with database.sessions() as session:
        ticket = session.get(Ticket, row.ticket_id)
        assert ticket is not None
        assert ticket.status == "solved"  # a notification: a reply opens a new linked ticket


def test_a_message_due_in_quiet_hours_is_held_by_the_job_until_they_end(
    configured: Settings, database: Database, redis_client: redis.Redis
) -> None:
    tickets = configured.tickets.model_copy(
        update={
            "proactive": configured.tickets.proactive.model_copy(
                update={
                    "quiet_hours": OVERNIGHT,
                    "rules": {"late": MessageRule(event="order.status_changed", text={"ja": "x"})},
                }
            )
        }
    )
    night = tokyo(5, 23)
    with database.unit_of_work() as session:
        from tickets.services import find_or_create_by_phone

        customer, _ = find_or_create_by_phone(session, CALLER)
        (row,) = proactive.raise_event(
            session, tickets, "order.status_changed", customer_id=customer.id, key="k", now=night
        )
        assert row.send_at == tokyo(6, 9)
        message_id = row.id
    # a backlog brings the job at night anyway: it puts the message back to the morning
    settings = configured.model_copy(update={"tickets": tickets})
    result = proactive.dispatch(
        message_id, settings=settings, database=database, connection=None, now=tokyo(6, 2)
    )
    assert result.status == "scheduled"
    sent = proactive.dispatch(
        message_id, settings=settings, database=database, connection=None, now=tokyo(6, 9, 1)
    )
    assert sent.status == "sent"


def test_an_opted_out_number_gets_nothing_and_the_ticket_says_so(
    api: Api,
    twilio: Twilio,
    database: Database,
    redis_client: redis.Redis,
    twilio_api: tuple[FakeMessaging, str],  # noqa: F811
) -> None:
    fake, _ = twilio_api
    ticket_id = sms_ticket(twilio, database)
    reply_text(twilio.post(sms_params(body="STOP")))
    ok(api.patch(f"/api/tickets/{ticket_id}", {"status": "solved"}))
    work(redis_client)
    assert fake.sent == []
    (message,) = scheduled(database)
    assert message.status == "refused"
    notes = [i.body for i in ticket_interactions(database, ticket_id) if i.channel == "note"]
    assert len(notes) == 1
    assert "opted out" in notes[0]
    assert f"チケット{ticket_id}" in notes[0]


def test_a_template_missing_its_data_fails_visibly_and_the_event_still_answers(
    api: Api, database: Database, redis_client: redis.Redis
) -> None:
    answer = ok(
        api.post(
            "/api/proactive/events",
            {"type": "order.status_changed", "id": "1", "phone": CALLER, "data": {}},
            user="root",
        ),
        202,
    )
    (message,) = answer["messages"]
    assert message["status"] == "failed"
    assert "order_id" in message["error"]
    listed = ok(api.get("/api/proactive/messages?status=failed", user="sato"))
    assert [m["id"] for m in listed["messages"]] == [message["id"]]


def test_an_event_no_rule_listens_to_schedules_nothing(api: Api) -> None:
    answer = ok(
        api.post(
            "/api/proactive/events",
            {"type": "invoice.paid", "id": "x", "phone": CALLER},
            user="root",
        ),
        202,
    )
    assert answer["messages"] == []


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"type": "order.status_changed", "id": "1"}, "exactly one of customer_id or phone"),
        ({"type": "order.status_changed", "id": "1", "phone": CALLER, "customer_id": 1}, "exactly"),
        ({"type": "Order changed", "id": "1", "phone": CALLER}, "type"),
        ({"type": "order.status_changed", "id": "", "phone": CALLER}, "id"),
        ({"type": "order.status_changed", "id": "1", "phone": "not a number"}, "phone"),
        (
            {"type": "order.status_changed", "id": "1", "phone": CALLER, "send_at": "tomorrow"},
            "ISO",
        ),
        (
            {
                "type": "order.status_changed",
                "id": "1",
                "phone": CALLER,
                "send_at": "2026-12-24T10:00",
            },
            "time zone",
        ),
        ({"type": "order.status_changed", "id": "1", "phone": CALLER, "data": "x" * 10}, "data"),
        (
            {
                "type": "order.status_changed",
                "id": "1",
                "phone": CALLER,
                "data": {"x": "y" * 20_000},
            },
            "at most",
        ),
        ({"type": "order.status_changed", "id": 1, "phone": CALLER}, "id"),
        ([], "JSON object"),
    ],
)
def test_bad_events_are_a_400_that_names_the_field(
    api: Api, database: Database, body: Any, complaint: str
) -> None:
    response = api.post("/api/proactive/events", body, user="root")
    assert error(response, 400)
    assert complaint in response.get_json()["message"]
    assert scheduled(database) == []


def test_agents_cannot_raise_events_or_cancel_and_strangers_are_asked_to_sign_in(
    api: Api,
) -> None:
    event = {"type": "order.status_changed", "id": "1", "phone": CALLER}
    assert error(api.post("/api/proactive/events", event, user="aiko"), 403) == "role-forbidden"
    assert error(api.post("/api/proactive/events", event, user=None), 401)
    assert error(api.get("/api/proactive/messages", user="aiko"), 403) == "role-forbidden"


def test_a_scheduled_message_can_be_cancelled_once_and_then_never_leaves(
    api: Api,
    database: Database,
    redis_client: redis.Redis,
    twilio_api: tuple[FakeMessaging, str],  # noqa: F811
) -> None:
    fake, _ = twilio_api
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat()
    event = {
        "type": "order.status_changed",
        "id": "c1",
        "phone": CALLER,
        "data": {"order_id": "B2", "status": "x"},
        "send_at": later,
    }
    (message,) = ok(api.post("/api/proactive/events", event, user="sato"), 202)["messages"]
    cancelled = ok(api.post(f"/api/proactive/messages/{message['id']}/cancel", {}, user="sato"))
    assert cancelled["status"] == "cancelled"
    again = api.post(f"/api/proactive/messages/{message['id']}/cancel", {}, user="sato")
    assert error(again, 409) == "scheduled-message-not-cancellable"
    assert error(api.post("/api/proactive/messages/999999/cancel", {}, user="sato"), 404)
    proactive.enqueue_dispatch(redis_client, message["id"])
    work(redis_client)
    assert fake.sent == []


def test_a_caller_who_asks_for_a_callback_is_told_by_sms(
    configured: Settings,
    database: Database,
    redis_client: redis.Redis,
    twilio_api: tuple[FakeMessaging, str],  # noqa: F811
) -> None:
    fake, _ = twilio_api
    identity = cdr.CallIdentity("twilio", new_sid("CA"), CALLER, KOKAN_NUMBER)
    now = dt.datetime.now(dt.UTC)
    cdr.append(redis_client, "arrived", identity, now)
    cdr.append(redis_client, "queued", identity, now, queue="support")
    cdr.append(redis_client, "outcome", identity, now, outcome="callback")
    cdr.append(redis_client, "ended", identity, now)
    subscriptions.use_redis(redis_client, configured.outbound_webhooks)  # as `kokan worker`
    projector = cdr.CdrProjector(redis_client, database, tickets=configured.tickets)
    projector.drain()
    projector.drain()
    (message,) = scheduled(database)
    assert (message.rule, message.event) == ("callback-confirm", "callback.scheduled")
    work(redis_client)
    (sent,) = fake.sent
    assert sent["Body"] == f"{CALLER}へ折り返しお電話します。"


# ---- the SMS survey ----


def answered_call(
    client: redis.Redis, survey: str | None = "survey", caller: str = CALLER
) -> cdr.CallIdentity:
    identity = cdr.CallIdentity("twilio", new_sid("CA"), caller, KOKAN_NUMBER)
    now = dt.datetime.now(dt.UTC)
    cdr.append(client, "arrived", identity, now)
    cdr.append(client, "queued", identity, now, queue="support", survey=survey)
    cdr.append(client, "answered", identity, now)
    cdr.append(client, "outcome", identity, now, outcome="answered")
    return identity


def hang_up(client: redis.Redis, identity: cdr.CallIdentity) -> None:
    cdr.append(client, "ended", identity, dt.datetime.now(dt.UTC))


def survey_interaction(database: Database, call_sid: str) -> Interaction | None:
    with database.sessions() as session:
        found = session.scalar(
            select(Interaction).where(Interaction.provider_message_id == call_sid + ":survey")
        )
        if found is not None:
            session.expunge(found)
        return found


def test_a_caller_who_hung_up_before_the_voice_survey_answers_it_by_sms(
    configured: Settings,
    twilio: Twilio,
    database: Database,
    redis_client: redis.Redis,
    twilio_api: tuple[FakeMessaging, str],  # noqa: F811
) -> None:
    fake, _ = twilio_api
    subscriptions.use_redis(redis_client, configured.outbound_webhooks)  # as `kokan worker`
    identity = answered_call(redis_client)
    hang_up(redis_client, identity)
    cdr.CdrProjector(redis_client, database, tickets=configured.tickets).drain()
    work(redis_client)
    (question,) = fake.sent
    assert question["To"] == CALLER
    assert "1（不満）から5（満足）" in question["Body"]  # noqa: RUF001 - Japanese text

    # an answer out of range is an ordinary message, the survey keeps waiting
    assert reply_text(twilio.post(sms_params(body="9"))) == []
    sid = new_sid("SM")
    nps = reply_text(twilio.post(sms_params(sid=sid, body=FULL_WIDTH_FIVE)))
    assert len(nps) == 1
    assert "0から10" in nps[0]
    assert reply_text(twilio.post(sms_params(sid=sid, body=FULL_WIDTH_FIVE))) == nps  # a redelivery
    ces = reply_text(twilio.post(sms_params(body="10")))
    assert "1（とても難しい）" in ces[0]  # noqa: RUF001 - Japanese text
    thanks = reply_text(twilio.post(sms_params(body="7。")))
    assert thanks == ["ご回答ありがとうございました。"]
    # the survey is over: a number now is just a message
    assert reply_text(twilio.post(sms_params(body="3"))) == []

    answers = survey_interaction(database, identity.provider_call_id)
    assert answers is not None
    assert answers.answers == {"csat": "5", "nps": "10", "ces": "7"}
    with database.sessions() as session:
        (survey,) = session.scalars(select(SmsSurvey)).all()
        assert survey.status == "done"
        call_ticket = session.scalar(
            select(Interaction.ticket_id).where(
                Interaction.provider_message_id == identity.provider_call_id
            )
        )
        assert call_ticket is not None
        assert answers.ticket_id == call_ticket == survey.ticket_id
        # the answers and the questions asked in reply are on the call's ticket
        on_ticket = session.scalars(
            select(Interaction.body).where(
                Interaction.ticket_id == call_ticket, Interaction.channel == "sms"
            )
        ).all()
        assert FULL_WIDTH_FIVE in on_ticket
        assert "ご回答ありがとうございました。" in on_ticket


def test_a_caller_who_answered_by_voice_gets_no_sms_survey(
    configured: Settings,
    database: Database,
    redis_client: redis.Redis,
    twilio_api: tuple[FakeMessaging, str],  # noqa: F811
) -> None:
    fake, _ = twilio_api
    identity = answered_call(redis_client)
    cdr.append(redis_client, "survey", identity, dt.datetime.now(dt.UTC), answers='{"csat": "4"}')
    hang_up(redis_client, identity)
    no_survey = answered_call(redis_client, survey=None, caller="+819099990000")
    hang_up(redis_client, no_survey)
    projector = cdr.CdrProjector(redis_client, database, tickets=configured.tickets)
    projector.drain()
    work(redis_client)
    assert fake.sent == []
    assert scheduled(database) == []


def test_always_mode_sends_the_sms_survey_even_after_voice_answers(
    configured: Settings, database: Database, redis_client: redis.Redis
) -> None:
    tickets = configured.tickets.model_copy(
        update={"sms_survey": configured.tickets.sms_survey.model_copy(update={"mode": "always"})}
    )
    identity = answered_call(redis_client)
    cdr.append(redis_client, "survey", identity, dt.datetime.now(dt.UTC), answers='{"csat": "4"}')
    hang_up(redis_client, identity)
    cdr.CdrProjector(redis_client, database, tickets=tickets).drain()
    (message,) = scheduled(database)
    assert message.rule == sms_survey.RULE
    with database.sessions() as session:
        assert session.scalars(select(SmsSurvey.status)).all() == ["scheduled"]


def test_the_commented_tickets_example_in_config_yaml_loads() -> None:
    """The example a user uncomments must be valid as written."""
    text = (REPO_ROOT / "config.yaml").read_text(encoding="utf-8")
    block = []
    for line in text[text.index("# tickets:") :].splitlines():
        if not line.startswith("#"):
            break
        block.append(line[2:])
    tickets = TicketsSettings.model_validate(yaml.safe_load("\n".join(block))["tickets"])
    assert set(tickets.proactive.rules) == {"solved-thanks", "callback-confirm", "order-status"}
    assert tickets.sms_survey.mode == "fallback"
