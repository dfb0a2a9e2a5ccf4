"""Twilio's Messaging webhook end to end: signed SMS and WhatsApp in, TwiML out, one record.

Twilio's cloud is the one stand-in: requests carry the parameters Twilio sends to a
messaging webhook and are signed with Twilio's documented algorithm
(tests/twilio_signing.py). Behind the webhook everything is real: the test database
(SQLite, or PostgreSQL when TEST_DATABASE_URL names one) and Redis.
"""

from __future__ import annotations

import datetime as dt
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from werkzeug.test import TestResponse

from kokan.app import create_app
from kokan.config import Settings, TicketsSettings, TwilioSettings
from kokan.db import Database
from tests.twilio_signing import SIGNATURE_HEADER, new_sid, twilio_signature
from tickets import services
from tickets.models import (
    AuditEntry,
    Customer,
    CustomerPhone,
    Interaction,
    OptOut,
    Ticket,
    TicketStatus,
)

AUTH_TOKEN = "7a1e5c3b9d2f4a6c8e0b1d3f5a7c9e2b"
ACCOUNT_SID = "AC" + "4d" * 16
PUBLIC_URL = "https://kokan.example.com"
MESSAGING = "/webhooks/twilio/messaging"
CALLER = "+819012345678"
KOKAN_NUMBER = "+81345678901"
OPT_OUT_WORDS = ["STOP", "UNSUBSCRIBE", "END", "QUIT", "STOPALL", "REVOKE", "OPTOUT", "CANCEL"]
OPT_IN_WORDS = ["START", "YES", "UNSTOP"]
HELP_WORDS = ["HELP", "INFO"]
REFUSED_DATABASE = "postgresql://kokan@127.0.0.1:1/kokan"
"""Nothing listens on port 1: every connection is refused at once."""
MIXED_SCRIPTS = "こんにちは 👋🏽 مرحبا بالعالم ‏שלום‎ 👨‍👩‍👧 é"


def sms_params(
    sid: str | None = None,
    body: str = "注文した商品がまだ届きません",
    sender: str = CALLER,
    to: str = KOKAN_NUMBER,
    media: list[tuple[str, str]] | None = None,
    **extra: str,
) -> dict[str, str]:
    """The form Twilio posts for an inbound message (fields from Twilio's webhook docs)."""
    sid = sid or new_sid("SM")
    media = media or []
    params = {
        "ToCountry": "JP",
        "ToState": "",
        "SmsMessageSid": sid,
        "NumMedia": str(len(media)),
        "ToCity": "",
        "FromZip": "",
        "SmsSid": sid,
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": "JP",
        "To": to,
        "MessagingServiceSid": "MG" + "1f" * 16,
        "ToZip": "",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "ApiVersion": "2010-04-01",
    }
    for index, (url, content_type) in enumerate(media):
        params[f"MediaUrl{index}"] = url
        params[f"MediaContentType{index}"] = content_type
    params.update(extra)
    return params


def whatsapp_params(sid: str | None = None, body: str = "Hello", **extra: str) -> dict[str, str]:
    params = sms_params(sid, body, sender=f"whatsapp:{CALLER}", to=f"whatsapp:{KOKAN_NUMBER}")
    params.update(extra)
    params.update({"ProfileName": "Taro", "WaId": CALLER.lstrip("+")})
    return params


class Twilio:
    """Posts to the webhook as Twilio does: signed for the public URL."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def post(
        self,
        params: Mapping[str, str],
        *,
        sign: bool = True,
        token: str = AUTH_TOKEN,
    ) -> TestResponse:
        headers = {}
        if sign:
            headers[SIGNATURE_HEADER] = twilio_signature(token, PUBLIC_URL + MESSAGING, params)
        return self.client.post(MESSAGING, data=dict(params), headers=headers)


def reply_text(response: TestResponse) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("application/xml")
    root = ET.fromstring(response.get_data())  # noqa: S314 - our own app's TwiML
    assert root.tag == "Response"
    return [message.text or "" for message in root.iter("Message")]


def messaging_settings(settings: Settings, **tickets: Any) -> Settings:
    return settings.model_copy(
        update={
            "twilio": TwilioSettings(account_sid=ACCOUNT_SID, auth_token=SecretStr(AUTH_TOKEN)),
            "public_url": PUBLIC_URL,
            "tickets": TicketsSettings(**tickets),
        }
    )


AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(settings: Settings, database: Database, redis_client: redis.Redis) -> AppFactory:
    def factory(database_url: str | None = None, **tickets: Any) -> Flask:
        configured = messaging_settings(settings, **tickets)
        if database_url is not None:
            configured = configured.model_copy(update={"database_url": database_url})
        return create_app({"TESTING": True, "KOKAN_SETTINGS": configured})

    return factory


@pytest.fixture
def twilio(make_app: AppFactory) -> Twilio:
    return Twilio(make_app().test_client())


def count(database: Database, model: Any) -> int:
    with database.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def rows(database: Database, model: Any, *where: Any) -> list[Any]:
    with database.sessions() as session:
        found = list(session.scalars(select(model).where(*where).order_by(model.id)))
        session.expunge_all()
        return found


# ---- the happy path ----


def test_an_sms_from_a_new_number_makes_one_customer_ticket_and_interaction(
    twilio: Twilio, database: Database
) -> None:
    sid = new_sid("SM")
    assert reply_text(twilio.post(sms_params(sid))) == []
    (customer,) = rows(database, Customer)
    (phone,) = rows(database, CustomerPhone)
    (ticket,) = rows(database, Ticket)
    (message,) = rows(database, Interaction)
    assert phone.customer_id == customer.id
    assert phone.e164 == CALLER
    assert ticket.customer_id == customer.id
    assert (ticket.channel, ticket.status, ticket.priority) == ("sms", "new", "normal")
    assert ticket.subject == "注文した商品がまだ届きません"
    assert ticket.first_response_due_at == ticket.created_at + dt.timedelta(minutes=240)
    assert ticket.resolution_due_at == ticket.created_at + dt.timedelta(hours=24)
    assert (message.ticket_id, message.customer_id) == (ticket.id, customer.id)
    assert (message.channel, message.direction) == ("sms", "inbound")
    assert (message.provider, message.provider_message_id) == ("twilio", sid)
    assert (message.from_address, message.to_address) == (CALLER, KOKAN_NUMBER)
    assert message.delivery_status == "received"


def test_the_same_message_sid_twice_changes_nothing(twilio: Twilio, database: Database) -> None:
    params = sms_params()
    first = twilio.post(params)
    second = twilio.post(params)
    assert first.get_data() == second.get_data()
    assert [count(database, m) for m in (Customer, Ticket, Interaction)] == [1, 1, 1]
    help_params = sms_params(body="HELP")
    assert reply_text(twilio.post(help_params)) == reply_text(twilio.post(help_params))
    assert count(database, Interaction) == 2


def test_redeliveries_out_of_order_store_each_message_once_in_one_ticket(
    twilio: Twilio, database: Database
) -> None:
    first, second, third = (sms_params(body=f"part {n}") for n in (1, 2, 3))
    for params in (second, third, first, second, first, third):
        reply_text(twilio.post(params))
    messages = rows(database, Interaction)
    assert sorted(m.body for m in messages) == ["part 1", "part 2", "part 3"]
    assert len({m.ticket_id for m in messages}) == 1
    assert count(database, Ticket) == 1
    # the ticket is named after the message that arrived first
    assert rows(database, Ticket)[0].subject == "part 2"


def test_whatsapp_and_sms_from_one_number_are_one_customer(
    twilio: Twilio, database: Database
) -> None:
    reply_text(twilio.post(sms_params(body="by sms")))
    reply_text(twilio.post(whatsapp_params(body="by whatsapp")))
    # a national-format From (as some carriers hand it over) is the same person too
    reply_text(twilio.post(sms_params(sender="090-1234-5678", body="national")))
    assert count(database, Customer) == 1
    assert [p.e164 for p in rows(database, CustomerPhone)] == [CALLER]
    by_channel = {t.channel: t for t in rows(database, Ticket)}
    assert set(by_channel) == {"sms", "whatsapp"}
    whatsapp = rows(database, Interaction, Interaction.channel == "whatsapp")[0]
    assert whatsapp.from_address == f"whatsapp:{CALLER}"
    assert whatsapp.ticket_id == by_channel["whatsapp"].id


def test_media_urls_are_kept_with_their_announced_types(twilio: Twilio, database: Database) -> None:
    media = [
        (
            f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM1/Media/ME1",
            "image/jpeg",
        ),
        (
            f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM1/Media/ME2",
            "application/x-never-heard-of",
        ),
    ]
    reply_text(twilio.post(sms_params(new_sid("MM"), body="", media=media)))
    (message,) = rows(database, Interaction)
    assert message.media == [{"url": url, "content_type": kind} for url, kind in media]
    assert rows(database, Ticket)[0].subject == "sms from +819012345678"


@pytest.mark.parametrize("body", [MIXED_SCRIPTS, "x" * 1600])
def test_emoji_right_to_left_and_the_longest_sms_are_stored_as_sent(
    twilio: Twilio, database: Database, body: str
) -> None:
    reply_text(twilio.post(sms_params(body=body)))
    (message,) = rows(database, Interaction)
    assert message.body == body


def test_a_whatsapp_message_may_be_longer_than_an_sms(twilio: Twilio, database: Database) -> None:
    reply_text(twilio.post(whatsapp_params(body="長" * 4096)))
    assert len(rows(database, Interaction)[0].body) == 4096


# ---- threading ----


def test_messages_join_the_open_ticket_and_a_solved_one_opens_a_new_linked_ticket(
    twilio: Twilio, database: Database
) -> None:
    reply_text(twilio.post(sms_params(body="one")))
    reply_text(twilio.post(sms_params(body="two")))
    (first,) = rows(database, Ticket)
    with database.unit_of_work() as session:
        session.execute(update(Ticket).values(status=TicketStatus.SOLVED))
    reply_text(twilio.post(sms_params(body="three")))
    tickets = rows(database, Ticket)
    assert len(tickets) == 2
    assert tickets[1].previous_ticket_id == first.id
    assert tickets[1].status == "new"
    assert [m.ticket_id for m in rows(database, Interaction)] == [first.id, first.id, tickets[1].id]


def test_a_pending_ticket_reopens_when_the_customer_answers(
    twilio: Twilio, database: Database
) -> None:
    reply_text(twilio.post(sms_params(body="one")))
    with database.unit_of_work() as session:
        session.execute(update(Ticket).values(status=TicketStatus.PENDING))
    reply_text(twilio.post(sms_params(body="the answer")))
    (ticket,) = rows(database, Ticket)
    assert ticket.status == "open"


def test_an_open_ticket_idle_longer_than_the_window_is_not_joined(
    make_app: AppFactory, database: Database
) -> None:
    twilio = Twilio(make_app(reopen_window_hours=24).test_client())
    reply_text(twilio.post(sms_params(body="old")))
    with database.unit_of_work() as session:
        stale = dt.datetime.now(dt.UTC) - dt.timedelta(hours=25)
        session.execute(update(Ticket).values(last_activity_at=stale))
    reply_text(twilio.post(sms_params(body="new")))
    old, new = rows(database, Ticket)
    assert old.status == "new"  # left as it was, for an agent to close
    assert new.previous_ticket_id == old.id
    with database.unit_of_work() as session:
        recent = dt.datetime.now(dt.UTC) - dt.timedelta(hours=23)
        session.execute(update(Ticket).where(Ticket.id == new.id).values(last_activity_at=recent))
    reply_text(twilio.post(sms_params(body="newer")))
    assert count(database, Ticket) == 2


# ---- opt-out, opt-in, help ----


@pytest.mark.parametrize("word", OPT_OUT_WORDS)
def test_each_opt_out_word_opts_the_number_out(
    twilio: Twilio, database: Database, word: str
) -> None:
    replies = reply_text(twilio.post(sms_params(body=word)))
    assert replies == [TicketsSettings().opt_out_reply]
    (opt_out,) = rows(database, OptOut)
    assert (opt_out.e164, opt_out.channel) == (CALLER, "sms")
    # recorded on the customer, but a keyword opens no ticket
    (message,) = rows(database, Interaction)
    assert message.ticket_id is None
    assert message.body == word
    assert count(database, Ticket) == 0
    (entry,) = rows(database, AuditEntry)
    assert entry.action == "customer.opted_out"


@pytest.mark.parametrize(
    "body", ["  stop ", "Stop", "\tUnsubscribe\n", "\uff33\uff34\uff2f\uff30"]
)  # full-width STOP
def test_opt_out_words_match_in_any_case_with_spaces_around(
    twilio: Twilio, database: Database, body: str
) -> None:
    reply_text(twilio.post(sms_params(body=body)))
    assert count(database, OptOut) == 1


@pytest.mark.parametrize("body", ["STOP please", "stop it now", "STOP!", "S T O P", "STOPS"])
def test_a_sentence_with_stop_in_it_is_an_ordinary_message(
    twilio: Twilio, database: Database, body: str
) -> None:
    assert reply_text(twilio.post(sms_params(body=body))) == []
    assert count(database, OptOut) == 0
    assert count(database, Ticket) == 1


@pytest.mark.parametrize("word", OPT_IN_WORDS)
def test_each_opt_in_word_opts_back_in(twilio: Twilio, database: Database, word: str) -> None:
    reply_text(twilio.post(sms_params(body="STOP")))
    assert count(database, OptOut) == 1
    assert reply_text(twilio.post(sms_params(body=word.lower()))) == [
        TicketsSettings().opt_in_reply
    ]
    assert count(database, OptOut) == 0
    assert [e.action for e in rows(database, AuditEntry)] == [
        "customer.opted_out",
        "customer.opted_in",
    ]


def test_opting_out_on_whatsapp_leaves_sms_alone(twilio: Twilio, database: Database) -> None:
    reply_text(twilio.post(whatsapp_params(body="STOP")))
    assert [(o.e164, o.channel) for o in rows(database, OptOut)] == [(CALLER, "whatsapp")]


@pytest.mark.parametrize("word", HELP_WORDS)
def test_help_and_info_get_the_configured_reply(
    make_app: AppFactory, database: Database, word: str
) -> None:
    twilio = Twilio(make_app(help_reply="サポート: 03-1234-5678 (平日 9-18時)").test_client())
    assert reply_text(twilio.post(sms_params(body=word))) == [
        "サポート: 03-1234-5678 (平日 9-18時)"
    ]
    assert count(database, OptOut) == 0


def test_a_keyword_joins_an_open_ticket(twilio: Twilio, database: Database) -> None:
    reply_text(twilio.post(sms_params(body="where is my order")))
    reply_text(twilio.post(sms_params(body="STOP")))
    (ticket,) = rows(database, Ticket)
    assert [m.ticket_id for m in rows(database, Interaction)] == [ticket.id, ticket.id]


def test_empty_replies_are_configurable(make_app: AppFactory, database: Database) -> None:
    twilio = Twilio(make_app(opt_out_reply="", opt_in_reply="").test_client())
    assert reply_text(twilio.post(sms_params(body="STOP"))) == []
    assert reply_text(twilio.post(sms_params(body="START"))) == []


# ---- bad input ----


def test_an_unsigned_request_is_refused_and_stores_nothing(
    twilio: Twilio, database: Database
) -> None:
    response = twilio.post(sms_params(), sign=False)
    assert response.status_code == 403
    assert response.get_json()["error_id"] == "twilio-signature-invalid"
    assert count(database, Interaction) == 0


def test_a_request_signed_with_another_token_is_refused(twilio: Twilio, database: Database) -> None:
    response = twilio.post(sms_params(), token="0" * 32)
    assert response.status_code == 403
    assert response.get_json()["error_id"] == "twilio-signature-invalid"
    assert count(database, Customer) == 0


def test_a_signed_request_altered_in_transit_is_refused(twilio: Twilio) -> None:
    params = sms_params(body="hello")
    signature = twilio_signature(AUTH_TOKEN, PUBLIC_URL + MESSAGING, params)
    altered = {**params, "Body": "STOP"}
    response = twilio.client.post(MESSAGING, data=altered, headers={SIGNATURE_HEADER: signature})
    assert response.status_code == 403


def _without(params: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in params.items() if k not in names}


@pytest.mark.parametrize(
    ("params", "says"),
    [
        (_without(sms_params(), "MessageSid", "SmsMessageSid"), "MessageSid"),
        (sms_params(sid="SM123"), "MessageSid"),
        (sms_params(sid="CA" + "0" * 32), "MessageSid"),
        (_without(sms_params(), "From"), "From is missing"),
        (sms_params(sender="not a number"), "From"),
        (sms_params(sender="12"), "From"),
        (sms_params(sender="+81" + "9" * 70), "From"),
        (sms_params(sender="sip:alice@example.com"), "From"),
        (sms_params(body="x" * 10_000), "at most 1600"),
        (whatsapp_params(body="x" * 10_000), "at most 4096"),
        (sms_params(NumMedia="x"), "NumMedia"),
        (sms_params(NumMedia="11"), "NumMedia"),
        (sms_params(NumMedia="2", MediaUrl0="https://api.twilio.com/m/ME1"), "MediaUrl1"),
        (sms_params(NumMedia="1", MediaUrl0="ftp://example.com/x.jpg"), "MediaUrl0"),
        (sms_params(body="nul\x00inside"), "NUL"),
    ],
)
def test_malformed_fields_are_a_400_with_an_error_id(
    twilio: Twilio, database: Database, params: dict[str, str], says: str
) -> None:
    response = twilio.post(params)
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error_id"] == "twilio-webhook-malformed"
    assert says in body["message"]
    assert count(database, Interaction) == 0
    assert count(database, Customer) == 0


# ---- the database ----


def test_a_database_that_refuses_connections_is_a_503_so_twilio_retries(
    make_app: AppFactory,
) -> None:
    twilio = Twilio(make_app(database_url=REFUSED_DATABASE).test_client())
    response = twilio.post(sms_params())
    assert response.status_code == 503
    assert response.get_json()["error_id"] == "database-unavailable"
    assert response.headers["Retry-After"].isdigit()


def test_a_database_failing_mid_message_leaves_nothing_half_written(
    twilio: Twilio, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = services.record_interaction

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("INSERT INTO interactions", {}, Exception("server closed"))

    monkeypatch.setattr(services, "record_interaction", broken)
    response = twilio.post(sms_params())
    assert response.status_code == 503
    assert [count(database, m) for m in (Customer, CustomerPhone, Ticket, Interaction)] == [0] * 4
    monkeypatch.setattr(services, "record_interaction", real)
    reply_text(twilio.post(sms_params()))
    assert [count(database, m) for m in (Customer, CustomerPhone, Ticket, Interaction)] == [1] * 4


# ---- concurrency ----


def _post_together(app: Flask, payloads: list[dict[str, str]]) -> list[int]:
    barrier = threading.Barrier(len(payloads))
    statuses: list[int] = []
    lock = threading.Lock()

    def send(params: dict[str, str]) -> None:
        client = Twilio(app.test_client())
        barrier.wait()
        status = client.post(params).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=send, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


@pytest.fixture
def shared_app(make_app: AppFactory) -> Flask:
    app = make_app()
    return app


def test_concurrent_first_messages_from_an_unknown_number_make_one_customer(
    shared_app: Flask, database: Database
) -> None:
    payloads = [sms_params(body=f"message {n}") for n in range(8)]
    assert _post_together(shared_app, payloads) == [200] * 8
    assert count(database, Customer) == 1
    assert count(database, CustomerPhone) == 1
    assert count(database, Ticket) == 1
    assert count(database, Interaction) == 8


def test_the_same_message_delivered_concurrently_is_stored_once(
    shared_app: Flask, database: Database
) -> None:
    params = sms_params()
    assert _post_together(shared_app, [params] * 6) == [200] * 6
    assert [count(database, m) for m in (Customer, Ticket, Interaction)] == [1, 1, 1]
