"""The Twilio voice driver end to end: signed webhooks in, TwiML out, state in Redis, CDR in SQL.

Twilio's cloud is the one stand-in: requests are built with the parameters Twilio sends and
signed with Twilio's documented algorithm (tests/twilio_signing.py). Everything behind the
webhook is real: the published flows in the test database, Redis, and an order-status API
served over HTTP on 127.0.0.1 for the flow's `http` node.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

import flask
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator
from werkzeug.test import Client, TestResponse

from acd.runtime import apply_config
from acd.services import AcdService
from acd.twilio_runtime import queue_voice
from ivr.engine import CallState, Environment
from ivr.http_fetch import fetch_json
from ivr.model import Flow
from ivr.publishing import ACTIVE_VERSION_REFRESH_S, PublishedFlows, publish, rollback
from ivr.twilio_calls import VoiceService
from ivr.validator import CheckContext
from kokan.app import create_app
from kokan.config import QueueSettings, Settings, TwilioSettings
from kokan.db import Database
from tests.conftest import REPO_ROOT
from tests.http_metrics import requests_counted
from tests.local_http import serving
from tests.twilio_signing import SIGNATURE_HEADER, new_sid, twilio_signature
from tickets.cdr import CdrProjector
from tickets.models import Call
from webhooks.voice_wsgi import SKIPPED_HOOKS, flask_hooks

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

FLOWS_DIR = REPO_ROOT / "flows"
AUTH_TOKEN = "5f1c0b2e9a7d4c3b8e6f0a1d2c3b4a59"
ACCOUNT_SID = "AC3f2a9c8b7d6e5f4a3b2c1d0e9f8a7b6c"
PUBLIC_URL = "https://kokan.example.com"
CALLER = "+819012345678"
KOKAN_NUMBER = "+81345678901"
QUEUES = ("billing", "support", "sales")
ORDER_URL_IN_EXAMPLE = "https://orders.example.com"
STATE_TTL_LIMIT_S = 4 * 3600

TOKYO = ZoneInfo("Asia/Tokyo")
OFFICE_HOURS = dt.datetime(2026, 11, 24, 10, 0, tzinfo=TOKYO)  # a Tuesday
AFTER_HOURS = dt.datetime(2026, 11, 24, 20, 0, tzinfo=TOKYO)

VOICE = "/webhooks/twilio/voice"
VOICEMAIL_SAVED = "/webhooks/twilio/voice/voicemail-saved"
QUEUE_WAIT = f"{PUBLIC_URL}/webhooks/twilio/queue/wait"
CHIME_URL = f"{PUBLIC_URL}/media/flows/prompts/chime.wav"

LANGUAGE_PROMPT_JA = "お電話ありがとうございます。日本語は1を押してください。"
LANGUAGE_PROMPT_EN = "For English, press 2."
MAIN_MENU_JA = (
    "ご請求については1を、技術サポートは2を、営業は3を、ご注文状況の確認は4を押してください。"
)
MAIN_MENU_JA_V2 = "新しいメニューです。ご請求は1を、サポートは2を、営業は3を、ご注文は4を。"
MAIN_MENU_EN = (
    "For billing, press 1. For technical support, press 2. For sales, press 3. "
    "To check an order, press 4."
)
INVALID_CHOICE_JA = "入力された番号は選択肢にありません。"
ORDERS = {
    "123456": {"status_text": "発送済み", "customer": {"vip": True}},
    "555555": {"status_text": "準備中", "customer": {"vip": False}},
}
SLOW_ORDER = "555555"
"""Answered after SLOW_ORDER_S, so a duplicate delivery arrives while the first is running."""
SLOW_ORDER_S = 0.4
ORDER_FETCHES: Counter[str] = Counter()
"""How often the order API was asked for each order: a replayed step must not ask again."""


def fullwidth(digits: str) -> str:
    """The same digits as a Japanese keyboard types them (U+FF10..): digits, but not ASCII."""
    return "".join(chr(ord(digit) + 0xFEE0) for digit in digits)


def step_path(step: int | str, timeout: bool = False) -> str:
    return f"{VOICE}/step?step={step}" + ("&timeout=1" if timeout else "")


# ---- Twilio's side of the conversation ----


def call_params(call_sid: str, status: str = "ringing", **extra: str) -> dict[str, str]:
    """The form Twilio posts to a voice webhook for an inbound call from a Japanese mobile."""
    params = {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": status,
        "Called": KOKAN_NUMBER,
        "CalledCity": "",
        "CalledCountry": "JP",
        "CalledState": "",
        "CalledZip": "",
        "Caller": CALLER,
        "CallerCity": "",
        "CallerCountry": "JP",
        "CallerState": "",
        "CallerZip": "",
        "Direction": "inbound",
        "From": CALLER,
        "FromCity": "",
        "FromCountry": "JP",
        "FromState": "",
        "FromZip": "",
        "To": KOKAN_NUMBER,
        "ToCity": "",
        "ToCountry": "JP",
        "ToState": "",
        "ToZip": "",
    }
    params.update(extra)
    return params


def gather_params(call_sid: str, digits: str) -> dict[str, str]:
    """What Twilio posts to a <Gather> action after the caller pressed keys."""
    return call_params(call_sid, "in-progress", Digits=digits, FinishedOnKey="", msg="Gather End")


def recording_params(call_sid: str) -> dict[str, str]:
    """What Twilio posts to a <Record> action once the caller finished the message."""
    recording_sid = new_sid("RE")
    return call_params(
        call_sid,
        "in-progress",
        Digits="#",
        RecordingSid=recording_sid,
        RecordingDuration="7",
        RecordingUrl=(
            f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{recording_sid}"
        ),
    )


class Twilio:
    """Posts webhooks the way Twilio does: form-encoded and signed for the public URL."""

    def __init__(self, client: FlaskClient, base_url: str = PUBLIC_URL) -> None:
        self.client = client
        self.base_url = base_url

    def post(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        token: str = AUTH_TOKEN,
        signed_for: str | None = None,
        headers: Mapping[str, str] | None = None,
        sign: bool = True,
    ) -> TestResponse:
        sent = dict(headers or {})
        if sign:
            url = signed_for if signed_for is not None else self.base_url + path
            sent[SIGNATURE_HEADER] = twilio_signature(token, url, params)
        return self.client.post(path, data=dict(params), headers=sent)

    def start(self, call_sid: str, **extra: str) -> TestResponse:
        return self.post(VOICE, call_params(call_sid, **extra))

    def press(self, call_sid: str, step: int, digits: str) -> TestResponse:
        return self.post(step_path(step), gather_params(call_sid, digits))

    def no_input(self, call_sid: str, step: int) -> TestResponse:
        return self.post(step_path(step, timeout=True), call_params(call_sid, "in-progress"))


# ---- reading what Kokan answered ----


def twiml(response: TestResponse) -> ET.Element:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/xml"
    root = ET.fromstring(response.get_data())  # noqa: S314 - our own app's TwiML, not untrusted
    assert root.tag == "Response"
    return root


def said(root: ET.Element) -> list[str]:
    return [element.text or "" for element in root.iter("Say")]


def verbs(root: ET.Element) -> list[str]:
    return [child.tag for child in root]


def only(root: ET.Element, tag: str) -> ET.Element:
    found = root.findall(tag)
    assert len(found) == 1, (tag, ET.tostring(root, encoding="unicode"))
    return found[0]


def assert_json_error(response: TestResponse, status: int, error_id: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body, dict)
    assert body["error_id"] == error_id
    assert isinstance(body["message"], str)
    assert body["message"]


def service(app: Flask) -> VoiceService:
    found = app.extensions["kokan.ivr"]
    assert isinstance(found, VoiceService)
    return found


def state_of(app: Flask, call_sid: str) -> CallState:
    state = service(app).store.load(call_sid)
    assert state is not None, f"no call state in Redis for {call_sid}"
    return state


_projector: CdrProjector | None = None
"""Call-detail rows are written from the event stream; the helpers below project it first."""


@pytest.fixture(autouse=True)
def cdr_projector(redis_client: redis.Redis, database: Database) -> Iterator[CdrProjector]:
    global _projector
    _projector = CdrProjector(redis_client, database, consumer="tests")
    yield _projector
    _projector = None


def _project() -> None:
    assert _projector is not None, "the cdr_projector fixture is not active"
    _projector.drain()


def call_rows(database: Database, call_sid: str | None = None) -> list[Call]:
    _project()
    with database.sessions() as session:
        query = select(Call)
        if call_sid is not None:
            query = query.where(Call.provider_call_id == call_sid)
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


def redis_keys(client: redis.Redis, call_sid: str) -> list[bytes]:
    return sorted(client.scan_iter(match=f"*{call_sid}*"))


def count_calls(database: Database) -> int:
    _project()
    with database.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Call)) or 0)


# ---- the world around the app: an order API, a clock, published flows ----


class OrderApi(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        order = self.path.rsplit("/", 1)[-1]
        ORDER_FETCHES[order] += 1
        if order == SLOW_ORDER:
            time.sleep(SLOW_ORDER_S)
        found = ORDERS.get(order)
        body = json.dumps(found if found else {"error": "no such order"}).encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def order_api() -> Iterator[str]:
    with serving(OrderApi) as url:
        yield url


@dataclass
class Clock:
    at: dt.datetime

    def __call__(self) -> dt.datetime:
        return self.at.astimezone(dt.UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(OFFICE_HOURS)


@dataclass
class Ticker:
    """The monotonic clock by which a web process re-reads which flow version is active."""

    at: float = 1_000.0

    def __call__(self) -> float:
        return self.at

    def wait_for_refresh(self) -> None:
        self.at += ACTIVE_VERSION_REFRESH_S + 0.001


@pytest.fixture
def ticker() -> Ticker:
    return Ticker()


def main_source(order_api: str, *, main_menu_ja: str = MAIN_MENU_JA) -> str:
    source = (FLOWS_DIR / "main.yaml").read_text(encoding="utf-8")
    assert ORDER_URL_IN_EXAMPLE in source
    assert MAIN_MENU_JA in source
    return source.replace(ORDER_URL_IN_EXAMPLE, order_api).replace(MAIN_MENU_JA, main_menu_ja)


def publish_flow(database: Database, name: str, source: str) -> int:
    context = CheckContext.for_directory(FLOWS_DIR, QUEUES)
    with database.unit_of_work() as session:
        return publish(session, name, source, f"flows/{name}.yaml", context, by="test").version


@pytest.fixture
def voice_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "twilio": TwilioSettings(account_sid=ACCOUNT_SID, auth_token=SecretStr(AUTH_TOKEN)),
            "public_url": PUBLIC_URL,
            "queues": {name: QueueSettings() for name in QUEUES},
            "flows_dir": FLOWS_DIR,
        }
    )


@pytest.fixture
def published(database: Database, order_api: str) -> None:
    assert publish_flow(database, "main", main_source(order_api)) == 1
    survey = (FLOWS_DIR / "survey.yaml").read_text(encoding="utf-8")
    assert publish_flow(database, "survey", survey) == 1


AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(
    voice_settings: Settings,
    database: Database,
    redis_client: redis.Redis,
    clock: Clock,
    ticker: Ticker,
) -> Iterator[AppFactory]:
    """Apps over the test database and Redis, on the test's clock, with settings changed as asked."""
    made: list[Flask] = []

    def factory(**updates: Any) -> Flask:
        app = create_app(
            {"TESTING": True, "KOKAN_SETTINGS": voice_settings.model_copy(update=updates)}
        )
        engine = service(app).engine
        engine.environment = Environment(now=clock, fetch_json=fetch_json)
        assert isinstance(engine.flows, PublishedFlows)
        engine.flows.clock = ticker
        apply_config(AcdService(redis_client), app.extensions["kokan"].settings)
        made.append(app)
        return app

    yield factory
    for app in made:
        app.extensions["kokan"].database.dispose()
        app.extensions["kokan"].redis.close()


@pytest.fixture
def voice_app(make_app: AppFactory, published: None) -> Flask:
    return make_app()


@pytest.fixture
def twilio(voice_app: Flask) -> Twilio:
    return Twilio(voice_app.test_client())


def queued_in(app: Flask, root: ET.Element, sid: str) -> str:
    """The queue the call waits in: the turn sends the caller to the ACD's hold loop, and the
    ACD holds the call."""
    assert [redirect.text for redirect in root.iter("Redirect")] == [QUEUE_WAIT]
    return queue_voice(app).acd.call(sid).queue


# ---- signing ----


def test_our_signing_agrees_with_the_twilio_library() -> None:
    params = call_params(new_sid("CA"), CallerName="山田 太郎", FromCity="TOKYO")
    url = f"{PUBLIC_URL}{step_path(3)}"
    ours = twilio_signature(AUTH_TOKEN, url, params)
    assert ours == RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    assert ours != twilio_signature(AUTH_TOKEN + "x", url, params)
    assert ours != twilio_signature(AUTH_TOKEN, url, {**params, "Digits": "1"})


# ---- a call walks the published flow ----


def test_a_new_call_hears_the_chime_and_the_language_menu(
    voice_app: Flask, twilio: Twilio, database: Database, redis_client: redis.Redis
) -> None:
    sid = new_sid("CA")
    root = twiml(twilio.start(sid))

    assert verbs(root) == ["Play", "Gather", "Redirect"]
    assert only(root, "Play").text == CHIME_URL
    gather = only(root, "Gather")
    assert gather.get("action") == f"{PUBLIC_URL}/webhooks/twilio/voice/step?step=0"
    assert gather.get("method") == "POST"
    assert gather.get("input") == "dtmf"
    assert gather.get("numDigits") == "1"
    assert gather.get("timeout") == "5"
    prompts = [(say.text, say.get("language"), say.get("voice")) for say in gather]
    assert prompts == [
        (LANGUAGE_PROMPT_JA, "ja-JP", "Polly.Mizuki"),
        (LANGUAGE_PROMPT_EN, "en-US", "Polly.Joanna"),
    ]
    redirect = only(root, "Redirect")
    assert redirect.text == f"{PUBLIC_URL}/webhooks/twilio/voice/step?step=0&timeout=1"
    assert redirect.get("method") == "POST"

    [row] = call_rows(database, sid)
    assert (row.provider, row.from_number, row.to_number) == ("twilio", CALLER, KOKAN_NUMBER)
    assert row.direction == "inbound"
    assert (row.queue, row.queued_at, row.outcome) == (None, None, None)

    state = state_of(voice_app, sid)
    assert (state.flow, state.version, state.step) == ("main", 1, 0)
    assert state.path == ["welcome", "choose_language"]
    keys = redis_keys(redis_client, sid)
    assert keys, "the call's state is not in Redis"
    for key in keys:
        assert 0 < redis_client.ttl(key) <= STATE_TTL_LIMIT_S, key


def test_a_japanese_caller_walks_to_the_billing_queue(
    voice_app: Flask, twilio: Twilio, database: Database
) -> None:
    sid = new_sid("CA")
    twiml(twilio.start(sid))

    menu = twiml(twilio.press(sid, 0, "1"))
    gather = only(menu, "Gather")
    assert gather.get("action") == f"{PUBLIC_URL}/webhooks/twilio/voice/step?step=1"
    assert [(say.text, say.get("language")) for say in gather] == [(MAIN_MENU_JA, "ja-JP")]

    queued = twiml(twilio.press(sid, 1, "1"))
    assert verbs(queued) == ["Say", "Redirect"]
    assert said(queued) == ["請求担当におつなぎします。"]
    assert queued_in(voice_app, queued, sid) == "billing"

    [row] = call_rows(database, sid)
    assert row.queue == "billing"
    assert row.queued_at is not None
    assert row.queued_at >= row.arrived_at
    state = state_of(voice_app, sid)
    assert state.path[-3:] == ["offer_survey", "main_menu", "billing"]
    assert state.outcome is not None
    assert state.outcome["queue"] == "billing"


def test_an_english_caller_hears_english_and_reaches_sales(
    voice_app: Flask, twilio: Twilio, database: Database
) -> None:
    sid = new_sid("CA")
    twiml(twilio.start(sid))
    menu = only(twiml(twilio.press(sid, 0, "2")), "Gather")
    assert [(say.text, say.get("language"), say.get("voice")) for say in menu] == [
        (MAIN_MENU_EN, "en-US", "Polly.Joanna")
    ]
    queued = twiml(twilio.press(sid, 1, "3"))
    assert [(say.text, say.get("language")) for say in queued.iter("Say")] == [
        ("Connecting you to sales.", "en-US")
    ]
    assert queued_in(voice_app, queued, sid) == "sales"
    [row] = call_rows(database, sid)
    assert row.queue == "sales"


def test_an_order_lookup_reads_the_status_from_the_order_api(
    voice_app: Flask, twilio: Twilio, database: Database
) -> None:
    sid = new_sid("CA")
    twiml(twilio.start(sid))
    twiml(twilio.press(sid, 0, "1"))
    ask = only(twiml(twilio.press(sid, 1, "4")), "Gather")
    assert ask.get("finishOnKey") == "#"
    assert said(ask) == ["ご注文番号を入力し、最後にシャープを押してください。"]

    status = twiml(twilio.press(sid, 2, "123456#"))
    assert said(status) == [
        "ご注文番号123456の状況は、発送済みです。",
        "担当者とお話しになる場合は1を、終了する場合は9を押してください。",
    ]
    state = state_of(voice_app, sid)
    assert state.variables["vip"] is True

    queued = twiml(twilio.press(sid, 3, "1"))
    assert queued_in(voice_app, queued, sid) == "support"
    assert state_of(voice_app, sid).outcome == {
        "kind": "queued",
        "queue": "support",
        "priority": 10,
        "skills": {"support": 1, "japanese": 3},
    }


def test_an_unknown_order_apologises_and_goes_to_support(voice_app: Flask, twilio: Twilio) -> None:
    sid = new_sid("CA")
    twiml(twilio.start(sid))
    twiml(twilio.press(sid, 0, "1"))
    twiml(twilio.press(sid, 1, "4"))
    answer = twiml(twilio.press(sid, 2, "999999#"))
    assert said(answer)[0] == "申し訳ございません。ただいまご注文状況を確認できません。"
    assert queued_in(voice_app, answer, sid) == "support"
    assert state_of(voice_app, sid).variables["http_error"] == "FetchError"


def test_after_hours_a_caller_leaves_a_voicemail(
    voice_app: Flask, twilio: Twilio, database: Database, clock: Clock
) -> None:
    clock.at = AFTER_HOURS
    sid = new_sid("CA")
    twiml(twilio.start(sid))

    invitation = twiml(twilio.press(sid, 0, "1"))
    assert verbs(invitation) == ["Say", "Say", "Record", "Redirect"]
    assert said(invitation) == [
        "営業時間は平日の午前9時から午後6時までです。",
        "発信音のあとに、お名前とご用件をお話しください。",
    ]
    record = only(invitation, "Record")
    assert record.get("action") == f"{PUBLIC_URL}/webhooks/twilio/voice/step?step=1"
    assert record.get("method") == "POST"
    assert record.get("maxLength") == "120"
    assert record.get("finishOnKey") == "#"

    thanks = twiml(twilio.post(step_path(1), recording_params(sid)))
    assert verbs(thanks) == ["Say", "Hangup"]
    assert said(thanks) == ["メッセージを承りました。折り返しご連絡いたします。"]
    [row] = call_rows(database, sid)
    assert row.outcome == "voicemail"
    assert row.queue is None
    state = state_of(voice_app, sid)
    assert state.variables["voicemail_url"].startswith("https://api.twilio.com/")


def test_a_recording_duration_that_is_not_a_number_is_ignored(
    voice_app: Flask, twilio: Twilio, database: Database, clock: Clock
) -> None:
    clock.at = AFTER_HOURS
    sid = new_sid("CA")
    twiml(twilio.start(sid))
    twiml(twilio.press(sid, 0, "2"))
    thanks = twiml(twilio.post(step_path(1), {**recording_params(sid), "RecordingDuration": "²"}))
    assert verbs(thanks) == ["Say", "Hangup"]
    assert state_of(voice_app, sid).variables["voicemail_seconds"] == 0
    [row] = call_rows(database, sid)
    assert row.outcome == "voicemail"


def test_the_no_input_redirect_prompts_again(voice_app: Flask, twilio: Twilio) -> None:
    sid = new_sid("CA")
    twiml(twilio.start(sid))
    again = twiml(twilio.no_input(sid, 0))
    gather = only(again, "Gather")
    assert gather.get("action") == f"{PUBLIC_URL}/webhooks/twilio/voice/step?step=1"
    assert said(gather) == [LANGUAGE_PROMPT_JA, LANGUAGE_PROMPT_EN]
    assert only(again, "Redirect").text == (
        f"{PUBLIC_URL}/webhooks/twilio/voice/step?step=1&timeout=1"
    )
    state = state_of(voice_app, sid)
    assert (state.node, state.attempts, state.step) == ("choose_language", 1, 1)

    # at the main menu the timeout has its own prompt before the menu is repeated
    twiml(twilio.press(sid, 1, "1"))
    timed_out = twiml(twilio.no_input(sid, 2))
    assert said(only(timed_out, "Gather")) == ["入力が確認できませんでした。", MAIN_MENU_JA]


# ---- duplicate deliveries ----


def test_webhooks_get_no_session_even_when_a_browser_cookie_rides_along(
    voice_app: Flask, twilio: Twilio
) -> None:
    """Sessions are for people: a webhook neither reads nor sets the session cookie."""
    cookie = voice_app.config["SESSION_COOKIE_NAME"]
    twilio.client.set_cookie(cookie, "not-a-session-kokan-signed", domain="localhost")
    answer = twilio.start(new_sid("CA"))
    assert answer.status_code == 200
    assert "Set-Cookie" not in answer.headers
    with voice_app.test_request_context("/webhooks/twilio/voice", method="POST"):
        opened = voice_app.session_interface.open_session(voice_app, flask.request)
        assert opened is not None
        assert voice_app.session_interface.is_null_session(opened)
    with voice_app.test_request_context("/login"):
        page = voice_app.session_interface.open_session(voice_app, flask.request)
        assert page is not None
        assert not voice_app.session_interface.is_null_session(page)


def test_a_replayed_step_answers_the_same_and_does_not_advance_the_call(
    voice_app: Flask, twilio: Twilio, database: Database
) -> None:
    sid = new_sid("CA")
    twiml(twilio.start(sid))
    first = twilio.press(sid, 0, "1")
    twiml(first)
    after_first = state_of(voice_app, sid)

    second = twilio.press(sid, 0, "1")
    assert second.status_code == 200
    assert second.get_data() == first.get_data()
    after_second = state_of(voice_app, sid)
    assert (after_second.step, after_second.path) == (after_first.step, after_first.path)
    assert after_second.to_json() == after_first.to_json()

    # a late duplicate with different content is still the same step: no advance either
    twilio.press(sid, 0, "2")
    assert state_of(voice_app, sid).to_json() == after_first.to_json()

    queued = twiml(twilio.press(sid, 1, "1"))
    assert queued_in(voice_app, queued, sid) == "billing"
    assert state_of(voice_app, sid).path.count("main_menu") == 1


def test_the_first_webhook_delivered_twice_makes_one_call_record(
    voice_app: Flask, twilio: Twilio, database: Database
) -> None:
    sid = new_sid("CA")
    first = twilio.start(sid)
    second = twilio.start(sid)
    assert second.get_data() == first.get_data()
    assert len(call_rows(database, sid)) == 1
    assert state_of(voice_app, sid).path == ["welcome", "choose_language"]

    # a very late copy of the first webhook must not restart a call that has moved on
    twiml(twilio.press(sid, 0, "1"))
    moved_on = state_of(voice_app, sid).to_json()
    assert twilio.start(sid).get_data() == first.get_data()
    assert state_of(voice_app, sid).to_json() == moved_on
    assert len(call_rows(database, sid)) == 1


def test_a_duplicate_arriving_while_the_first_is_running_waits_and_replays(
    voice_app: Flask, twilio: Twilio
) -> None:
    """Two web threads take the same step at once (the http node is slow): one turn, one answer."""
    sid = new_sid("CA")
    twiml(twilio.start(sid))
    twiml(twilio.press(sid, 0, "1"))
    twiml(twilio.press(sid, 1, "4"))
    params = gather_params(sid, SLOW_ORDER + "#")
    answers: list[bytes] = []
    fetched_before = ORDER_FETCHES[SLOW_ORDER]

    def deliver() -> None:
        answers.append(Twilio(voice_app.test_client()).post(step_path(2), params).get_data())

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    threads[0].start()
    # the second delivery goes out once the first is inside the slow lookup, holding the call
    deadline = time.monotonic() + 10
    while ORDER_FETCHES[SLOW_ORDER] == fetched_before:
        assert time.monotonic() < deadline, "the first delivery never reached the order API"
        time.sleep(0.005)
    threads[1].start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(answers) == 2
    assert answers[0] == answers[1]
    assert "準備中" in answers[0].decode()
    state = state_of(voice_app, sid)
    assert state.path.count("lookup_order") == 1
    assert state.step == 3
    assert ORDER_FETCHES[SLOW_ORDER] == fetched_before + 1


def test_a_step_ahead_of_the_call_does_not_skip_it(voice_app: Flask, twilio: Twilio) -> None:
    sid = new_sid("CA")
    started = twilio.start(sid)
    ahead = twilio.press(sid, 7, "1")
    assert ahead.get_data() == started.get_data()
    state = state_of(voice_app, sid)
    assert (state.step, state.node) == (0, "choose_language")


# ---- signatures ----


def test_a_request_without_a_signature_is_refused(twilio: Twilio, database: Database) -> None:
    response = twilio.post(VOICE, call_params(new_sid("CA")), sign=False)
    assert_json_error(response, 403, "twilio-signature-invalid")
    assert count_calls(database) == 0


@pytest.mark.parametrize(
    ("token", "signed_for", "tamper"),
    [
        pytest.param("0" * 32, None, False, id="another-token"),
        pytest.param(AUTH_TOKEN, f"{PUBLIC_URL}{step_path(0)}", False, id="another-url"),
        pytest.param(AUTH_TOKEN, f"http://kokan.example.com{VOICE}", False, id="another-scheme"),
        pytest.param(AUTH_TOKEN, None, True, id="changed-parameter"),
    ],
)
def test_a_signature_that_does_not_match_is_refused(
    twilio: Twilio,
    database: Database,
    redis_client: redis.Redis,
    token: str,
    signed_for: str | None,
    tamper: bool,
) -> None:
    sid = new_sid("CA")
    params = call_params(sid)
    signature = twilio_signature(token, signed_for or f"{PUBLIC_URL}{VOICE}", params)
    if tamper:
        params["From"] = "+819099999999"
    response = twilio.client.post(VOICE, data=params, headers={SIGNATURE_HEADER: signature})
    assert_json_error(response, 403, "twilio-signature-invalid")
    assert count_calls(database) == 0
    assert redis_keys(redis_client, sid) == []


@pytest.mark.parametrize("configured", [None, SecretStr("")], ids=["unset", "empty"])
def test_without_an_auth_token_every_webhook_is_refused(
    make_app: AppFactory, published: None, database: Database, configured: SecretStr | None
) -> None:
    app = make_app(twilio=TwilioSettings(account_sid=ACCOUNT_SID, auth_token=configured))
    twilio = Twilio(app.test_client())
    for token in (AUTH_TOKEN, ""):
        assert_json_error(
            twilio.post(VOICE, call_params(new_sid("CA")), token=token),
            403,
            "twilio-signature-invalid",
        )
    assert count_calls(database) == 0


def test_a_request_for_another_twilio_account_is_refused(
    twilio: Twilio, database: Database
) -> None:
    params = call_params(new_sid("CA"), AccountSid=new_sid("AC"))
    response = twilio.post(VOICE, params)
    assert response.status_code == 403
    assert_json_error(response, 403, "twilio-account-foreign")
    assert count_calls(database) == 0


def test_behind_a_tls_proxy_the_forwarded_url_is_the_signed_one(
    make_app: AppFactory, published: None
) -> None:
    app = make_app(public_url=None, trust_proxy_hops=1)
    twilio = Twilio(app.test_client(), base_url="https://public.example")
    forwarded = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "public.example",
        "X-Forwarded-For": "54.172.60.1",
    }
    accepted = twilio.post(VOICE, call_params(new_sid("CA")), headers=forwarded)
    assert only(twiml(accepted), "Play").text is not None

    step = twilio.post(
        step_path(0), gather_params(new_sid("CA"), "1"), headers=forwarded
    )  # signed and accepted; the call is unknown so it ends politely
    assert "Hangup" in verbs(twiml(step))

    refused = twilio.post(VOICE, call_params(new_sid("CA")))
    assert_json_error(refused, 403, "twilio-signature-invalid")


def test_forwarded_headers_are_ignored_unless_the_proxy_is_trusted(
    make_app: AppFactory, published: None
) -> None:
    app = make_app(public_url=None, trust_proxy_hops=0)
    twilio = Twilio(app.test_client(), base_url="https://public.example")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"}
    response = twilio.post(VOICE, call_params(new_sid("CA")), headers=forwarded)
    assert_json_error(response, 403, "twilio-signature-invalid")


def test_the_configured_public_url_wins_over_forwarded_headers(
    make_app: AppFactory, published: None
) -> None:
    app = make_app(trust_proxy_hops=1)
    twilio = Twilio(app.test_client())
    spoofed = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "attacker.example"}
    twiml(twilio.post(VOICE, call_params(new_sid("CA")), headers=spoofed))
    attacker = Twilio(app.test_client(), base_url="http://attacker.example")
    response = attacker.post(VOICE, call_params(new_sid("CA")), headers=spoofed)
    assert_json_error(response, 403, "twilio-signature-invalid")


# ---- bad input ----


LONG = "9" * 10_000


@pytest.mark.parametrize(
    ("path", "params"),
    [
        pytest.param(VOICE, {"AccountSid": ACCOUNT_SID, "From": CALLER}, id="no-CallSid"),
        pytest.param(VOICE, call_params("CA123"), id="short-CallSid"),
        pytest.param(VOICE, call_params("XX" + "a" * 32), id="foreign-CallSid"),
        pytest.param(VOICE, call_params("CA" + "g" * 32), id="CallSid-not-hex"),
        pytest.param(VOICE, call_params("CA" + "a" * 32 + "\n"), id="CallSid-newline"),
        pytest.param(VOICE, call_params(new_sid("CA"), From="+" + LONG), id="From-10000"),
        pytest.param(VOICE, call_params(new_sid("CA"), To="sip:" + LONG), id="To-10000"),
        pytest.param(VOICE, {"AccountSid": ACCOUNT_SID}, id="AccountSid-only"),
        pytest.param(step_path("abc"), gather_params(new_sid("CA"), "1"), id="step-abc"),
        pytest.param(step_path("-1"), gather_params(new_sid("CA"), "1"), id="step-negative"),
        pytest.param(step_path("1e3"), gather_params(new_sid("CA"), "1"), id="step-float"),
        pytest.param(step_path("9" * 40), gather_params(new_sid("CA"), "1"), id="step-huge"),
        pytest.param(
            step_path(fullwidth("1")), gather_params(new_sid("CA"), "1"), id="step-fullwidth"
        ),
        pytest.param(step_path("²"), gather_params(new_sid("CA"), "1"), id="step-superscript"),
        pytest.param(f"{VOICE}/step", gather_params(new_sid("CA"), "1"), id="step-missing"),
        pytest.param(step_path(0), gather_params("CA-nope", "1"), id="step-bad-CallSid"),
        pytest.param(VOICEMAIL_SAVED, {"AccountSid": ACCOUNT_SID}, id="voicemail-no-CallSid"),
    ],
)
def test_a_malformed_webhook_is_a_400_with_a_reason(
    twilio: Twilio,
    database: Database,
    redis_client: redis.Redis,
    path: str,
    params: dict[str, str],
) -> None:
    response = twilio.post(path, params)
    assert_json_error(response, 400, "twilio-webhook-malformed")
    assert count_calls(database) == 0
    assert list(redis_client.scan_iter(match="kokan:ivr:*")) == []


def test_an_empty_body_is_a_400(twilio: Twilio, database: Database) -> None:
    for path in (VOICE, step_path(0)):
        response = twilio.post(path, {})
        assert_json_error(response, 400, "twilio-webhook-malformed")
        assert "missing" in response.get_json()["message"]
    assert count_calls(database) == 0


@pytest.mark.parametrize("length", [64, 65, 100, 128, 129, 255])
@pytest.mark.parametrize("field", ["From", "To"])
def test_a_long_address_is_either_refused_or_kept_whole_never_the_fallback(
    twilio: Twilio, database: Database, field: str, length: int
) -> None:
    """SIP callers have long addresses: one the schema lets through must fit the call record."""
    sid = new_sid("CA")
    domain = "@pbx.example.com"
    address = "sip:" + "a" * (length - len("sip:") - len(domain)) + domain
    assert len(address) == length
    response = twilio.start(
        sid, **{field: address, "Caller" if field == "From" else "Called": address}
    )
    if response.status_code == 400:
        assert_json_error(response, 400, "twilio-webhook-malformed")
        assert field in response.get_json()["message"]
        assert count_calls(database) == 0
        return
    assert only(twiml(response), "Play").text == CHIME_URL, "answered with the fallback"
    [row] = call_rows(database, sid)
    assert (row.from_number if field == "From" else row.to_number) == address


@pytest.mark.parametrize(
    "digits",
    [
        pytest.param("1" * 10_000, id="10000-digits"),
        "abc",
        pytest.param(fullwidth("1"), id="fullwidth-1"),
    ],
)
def test_keys_that_are_not_a_choice_are_asked_again_and_touch_no_other_call(
    voice_app: Flask, twilio: Twilio, redis_client: redis.Redis, digits: str
) -> None:
    other = new_sid("CA")
    twiml(twilio.start(other))
    twiml(twilio.press(other, 0, "1"))
    other_keys = redis_keys(redis_client, other)
    other_before = {key: redis_client.get(key) for key in other_keys}

    sid = new_sid("CA")
    twiml(twilio.start(sid))
    twiml(twilio.press(sid, 0, "1"))
    again = twiml(twilio.press(sid, 1, digits))
    assert said(only(again, "Gather")) == [INVALID_CHOICE_JA, MAIN_MENU_JA]
    state = state_of(voice_app, sid)
    assert (state.node, state.attempts, state.outcome) == ("main_menu", 1, None)
    assert len(json.dumps(state.to_json())) < 5_000

    assert redis_keys(redis_client, other) == other_keys
    assert {key: redis_client.get(key) for key in other_keys} == other_before
    assert queued_in(voice_app, twiml(twilio.press(other, 1, "3")), other) == "sales"


@pytest.mark.parametrize("digits", [fullwidth("123456") + "#", "12345a#", "1" * 10_000 + "#"])
def test_an_order_number_that_is_not_digits_is_asked_again(
    voice_app: Flask, twilio: Twilio, digits: str
) -> None:
    sid = new_sid("CA")
    twiml(twilio.start(sid))
    twiml(twilio.press(sid, 0, "1"))
    twiml(twilio.press(sid, 1, "4"))
    again = twiml(twilio.press(sid, 2, digits))
    assert said(only(again, "Gather"))[0] == "ご注文番号は6桁から10桁です。"
    assert "order_id" not in state_of(voice_app, sid).variables


def test_a_gather_for_a_call_kokan_never_saw_hangs_up(
    voice_app: Flask, twilio: Twilio, database: Database, redis_client: redis.Redis
) -> None:
    sid = new_sid("CA")
    root = twiml(twilio.press(sid, 3, "1"))
    assert verbs(root)[-1] == "Hangup"
    assert count_calls(database) == 0
    assert service(voice_app).store.load(sid) is None


def test_unknown_extra_parameters_are_accepted(
    voice_app: Flask, twilio: Twilio, database: Database
) -> None:
    sid = new_sid("CA")
    extra = {
        "CallerName": "山田 太郎",
        "StirVerstat": "TN-Validation-Passed-A",
        "CallToken": "%7B%22parentCallInfoToken%22%3A%22eyJhbGciOiJFUzI1NiJ9%22%7D",
        "ForwardedFrom": "+81312345678",
        "SomethingTwilioAddsNextYear": "🙂",
    }
    root = twiml(twilio.start(sid, **extra))
    assert only(root, "Play").text == CHIME_URL
    assert len(call_rows(database, sid)) == 1
    step = twiml(twilio.post(step_path(0), {**gather_params(sid, "1"), **extra}))
    assert said(only(step, "Gather")) == [MAIN_MENU_JA]


# ---- never dead air ----


def fallback_recording_path(root: ET.Element) -> str:
    """The fallback: an apology, a voicemail invitation and a Record; where the message goes."""
    spoken = said(root)
    assert spoken, "the caller hears nothing"
    assert spoken[0].startswith("申し訳ございません"), spoken
    assert any("メッセージ" in text for text in spoken), spoken
    assert QUEUE_WAIT not in [redirect.text for redirect in root.iter("Redirect")]
    record = only(root, "Record")
    assert record.get("method") == "POST"
    action = record.get("action") or ""
    assert action.startswith(f"{PUBLIC_URL}{VOICE}/"), action
    return action.removeprefix(PUBLIC_URL)


def test_with_no_flow_published_a_caller_hears_an_apology_and_can_leave_a_message(
    make_app: AppFactory, database: Database
) -> None:
    twilio = Twilio(make_app().test_client())
    sid = new_sid("CA")
    recording_path = fallback_recording_path(twiml(twilio.start(sid)))
    assert len(call_rows(database, sid)) == 1

    goodbye = twiml(twilio.post(recording_path, recording_params(sid)))
    assert verbs(goodbye)[-1] == "Hangup"
    [row] = call_rows(database, sid)
    assert row.outcome == "voicemail"


class UnreadableVersions:
    """The published-flow store as it is when its database has gone away mid-call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def active(self, name: str) -> tuple[int, Flow]:
        found: tuple[int, Flow] = self.inner.active(name)
        return found

    def version(self, name: str, version: int) -> Flow:
        raise RuntimeError(f"cannot read {name} v{version}")


def test_a_failure_inside_a_step_answers_the_fallback_not_a_500(
    voice_app: Flask, twilio: Twilio, database: Database
) -> None:
    sid = new_sid("CA")
    twiml(twilio.start(sid))
    engine = service(voice_app).engine
    engine.flows = UnreadableVersions(engine.flows)

    recording_path = fallback_recording_path(twiml(twilio.press(sid, 0, "1")))
    assert verbs(twiml(twilio.post(recording_path, recording_params(sid))))[-1] == "Hangup"
    goodbye = twiml(twilio.post(VOICEMAIL_SAVED, recording_params(sid)))
    assert verbs(goodbye)[-1] == "Hangup"
    [row] = call_rows(database, sid)
    assert row.outcome == "voicemail"


def test_an_error_while_running_the_flow_uses_the_flows_own_fallback_queue(
    voice_app: Flask, twilio: Twilio, database: Database
) -> None:
    def broken_clock() -> dt.datetime:
        raise OSError("clock unavailable")

    sid = new_sid("CA")
    twiml(twilio.start(sid))
    service(voice_app).engine.environment = Environment(now=broken_clock, fetch_json=fetch_json)
    root = twiml(twilio.press(sid, 0, "1"))
    assert said(root) == ["申し訳ございません。担当者におつなぎします。"]
    assert queued_in(voice_app, root, sid) == "support"
    [row] = call_rows(database, sid)
    assert row.queue == "support"


# ---- versions ----


def test_a_call_finishes_on_the_version_it_started_with(
    voice_app: Flask, twilio: Twilio, database: Database, order_api: str, ticker: Ticker
) -> None:
    def reach_main_menu(sid: str) -> list[str]:
        twiml(twilio.start(sid))
        return said(only(twiml(twilio.press(sid, 0, "1")), "Gather"))

    on_v1 = new_sid("CA")
    twiml(twilio.start(on_v1))

    assert publish_flow(database, "main", main_source(order_api, main_menu_ja=MAIN_MENU_JA_V2)) == 2
    ticker.wait_for_refresh()

    assert said(only(twiml(twilio.press(on_v1, 0, "1")), "Gather")) == [MAIN_MENU_JA]
    assert state_of(voice_app, on_v1).version == 1
    on_v2 = new_sid("CA")
    assert reach_main_menu(on_v2) == [MAIN_MENU_JA_V2]
    assert state_of(voice_app, on_v2).version == 2
    assert queued_in(voice_app, twiml(twilio.press(on_v1, 1, "3")), on_v1) == "sales"

    with database.unit_of_work() as session:
        assert rollback(session, "main", by="test") == 1
    ticker.wait_for_refresh()
    after_rollback = new_sid("CA")
    assert reach_main_menu(after_rollback) == [MAIN_MENU_JA]
    assert state_of(voice_app, after_rollback).version == 1
    assert said(only(twiml(twilio.press(on_v2, 1, "9")), "Gather"))[0] == INVALID_CHOICE_JA


# ---- prompt audio ----


def test_prompt_audio_is_served_to_twilio(voice_app: Flask) -> None:
    response = voice_app.test_client().get("/media/flows/prompts/chime.wav")
    assert response.status_code == 200
    body = response.get_data()
    assert body[:4] == b"RIFF"
    assert body[8:12] == b"WAVE"
    assert body == (FLOWS_DIR / "prompts" / "chime.wav").read_bytes()
    assert (response.mimetype or "").startswith("audio/")


@pytest.mark.parametrize(
    "path",
    [
        "/media/flows/main.yaml",
        "/media/flows/tests/main.yaml",
        "/media/flows/prompts/missing.wav",
        "/media/flows/../flows/prompts/chime.wav",
        "/media/flows/%2e%2e/flows/prompts/chime.wav",
        "/media/flows/..%2fflows/prompts/chime.wav",
    ],
)
def test_nothing_but_prompt_audio_is_served(voice_app: Flask, path: str) -> None:
    response = voice_app.test_client().get(path)
    assert response.status_code == 404


# ---- the voice webhooks' front (webhooks.voice_wsgi) ----


def flask_only(app: Flask, method: str, path: str, params: Mapping[str, str]) -> TestResponse:
    """The same request answered by Flask's own dispatch, around the front."""
    flask_dispatch = cast("WSGIApplication", functools.partial(Flask.wsgi_app, app))
    signature = twilio_signature(AUTH_TOKEN, PUBLIC_URL + path, params)
    return Client(flask_dispatch).open(
        path, method=method, data=dict(params), headers={SIGNATURE_HEADER: signature}
    )


def headers_but_request_id(response: TestResponse) -> list[tuple[str, str]]:
    """The response's headers, less the X-Request-Id the request log adds (flask_only goes
    around it)."""
    return sorted((name, value) for name, value in response.headers if name != "X-Request-Id")


def test_the_front_answers_as_the_flask_views_do(voice_app: Flask, twilio: Twilio) -> None:
    front, flask_ = new_sid("CA"), new_sid("CA")
    by_front = twilio.start(front)
    by_flask = flask_only(voice_app, "POST", VOICE, call_params(flask_))
    assert by_front.status_code == by_flask.status_code == 200
    assert by_front.get_data() == by_flask.get_data()
    assert headers_but_request_id(by_front) == headers_but_request_id(by_flask)

    by_front = twilio.press(front, 0, "1")
    by_flask = flask_only(voice_app, "POST", step_path(0), gather_params(flask_, "1"))
    assert by_front.get_data() == by_flask.get_data()
    assert headers_but_request_id(by_front) == headers_but_request_id(by_flask)
    assert said(twiml(by_front)) == [MAIN_MENU_JA]
    assert state_of(voice_app, front).path == state_of(voice_app, flask_).path


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", VOICE), ("PUT", VOICE), ("POST", VOICE + "/"), ("POST", "/webhooks/twilio/voice2")],
)
def test_other_methods_and_paths_are_flasks_to_answer(
    voice_app: Flask, twilio: Twilio, method: str, path: str
) -> None:
    params = call_params(new_sid("CA"))
    signature = twilio_signature(AUTH_TOKEN, PUBLIC_URL + path, params)
    response = twilio.client.open(
        path, method=method, data=params, headers={SIGNATURE_HEADER: signature}
    )
    assert response.status_code in (404, 405)
    assert response.status_code == flask_only(voice_app, method, path, params).status_code


def test_the_voice_webhooks_are_counted_under_their_route(
    voice_app: Flask, twilio: Twilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    client = voice_app.test_client()
    answered = requests_counted(client, "POST", VOICE, "200")
    refused = requests_counted(client, "POST", VOICE, "403")
    twiml(twilio.start(new_sid("CA")))
    assert twilio.post(VOICE, call_params(new_sid("CA")), token="0" * 32).status_code == 403
    assert requests_counted(client, "POST", VOICE, "200") == answered + 1
    assert requests_counted(client, "POST", VOICE, "403") == refused + 1


@pytest.mark.parametrize(
    ("raised", "status", "error_id"),
    [
        (RuntimeError("a bug"), 500, "internal-error"),
        (redis.exceptions.ConnectionError("Redis is restarting"), 503, "redis-unavailable"),
    ],
)
def test_an_error_outside_the_flow_is_answered_by_the_apps_error_handlers(
    voice_app: Flask,
    twilio: Twilio,
    monkeypatch: pytest.MonkeyPatch,
    raised: Exception,
    status: int,
    error_id: str,
) -> None:
    """The engine answers its own failures with the flow's fallback; what fails around it
    is answered as any view's exception is, with a request id to find it in the log."""

    def failing(*_args: Any) -> str:
        raise raised

    monkeypatch.setattr(service(voice_app), "start", failing)
    response = twilio.start(new_sid("CA"))
    assert_json_error(response, status, error_id)
    assert response.get_json()["request_id"] == response.headers["X-Request-Id"]


def test_the_front_skips_only_hooks_that_do_nothing_for_a_webhook(voice_app: Flask) -> None:
    """A request hook added to the app (or the webhooks' blueprint) would be skipped by the
    front: decide whether the voice webhooks need it, then update SKIPPED_HOOKS."""
    assert flask_hooks(voice_app, "twilio_webhooks") == SKIPPED_HOOKS


def test_the_front_answers_the_voice_webhooks_without_flasks_dispatch(
    voice_app: Flask, twilio: Twilio
) -> None:
    def not_reached() -> str:
        raise AssertionError("Flask dispatched a voice webhook")

    for endpoint in ("twilio_webhooks.voice", "twilio_webhooks.voice_step"):
        voice_app.view_functions[endpoint] = not_reached
    sid = new_sid("CA")
    twiml(twilio.start(sid))
    assert said(twiml(twilio.press(sid, 0, "2")))[0] == MAIN_MENU_EN
