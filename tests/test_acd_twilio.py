"""Queued Twilio calls end to end: the hold loop, ringing agents through the REST API,
the bridge, no-answer, callbacks, abandons and the longest wait.

Twilio's cloud is the one stand-in: its REST API is a local HTTP server that the `twilio`
client reaches through `twilio.api_base`, and its webhooks are requests signed as Twilio
signs them. The flow, the ACD, the router and the call records are the real ones.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr
from sqlalchemy import select
from werkzeug.test import TestResponse

from acd.router import Router
from acd.runtime import apply_config
from acd.schemas import ToVoicemail
from acd.services import AcdService
from acd.strategies import Strategy
from acd.twilio_calls import QueueVoice
from acd.twilio_runtime import build_calls, build_router, queue_voice
from ivr.publishing import PublishedFlows, publish
from ivr.runtime import EXTENSION_KEY as VOICE_SERVICE
from ivr.validator import CheckContext
from kokan.app import create_app
from kokan.config import AgentSettings, ConfigError, QueueSettings, Settings, TwilioSettings
from kokan.db import Database
from tests.conftest import REPO_ROOT
from tests.local_http import serving
from tests.twilio_signing import SIGNATURE_HEADER, new_sid, twilio_signature
from tickets.cdr import CdrProjector
from tickets.models import Call, Interaction, ScheduledMessage

AUTH_TOKEN = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
ACCOUNT_SID = "AC" + "7" * 32
PUBLIC_URL = "https://kokan.example.com"
CALLER = "+819012345678"
KOKAN_NUMBER = "+81345678901"
WAIT = "/webhooks/twilio/queue/wait"
POLL_S = 0.01
DEADLINE_S = 5.0

FLOW = """
start: billing
language: ja
nodes:
  billing:
    type: queue
    queue: billing
    prompt:
      ja: 請求担当におつなぎします。
"""


# ---- Twilio's REST API, on 127.0.0.1 ----


@dataclass
class RestRequest:
    method: str
    path: str
    form: dict[str, str]


class TwilioApi(BaseHTTPRequestHandler):
    """Creates and updates calls as Twilio's 2010-04-01 API answers them; keeps every request."""

    requests: ClassVar[list[RestRequest]] = []
    fail_creates: ClassVar[bool] = False
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(parse_qsl(self.rfile.read(length).decode()))
        with self.lock:
            self.requests.append(RestRequest("POST", self.path, form))
        created = re.fullmatch(rf"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls\.json", self.path)
        updated = re.fullmatch(
            rf"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/(CA[0-9a-f]{{32}})\.json", self.path
        )
        if created and not self.fail_creates:
            self._json(201, {"sid": new_sid("CA"), "status": "queued", "to": form.get("To")})
        elif updated:
            self._json(200, {"sid": updated.group(1), "status": form.get("Status", "in-progress")})
        else:
            self._json(500, {"code": 20500, "message": "Internal Server Error", "status": 500})

    def _json(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps({"account_sid": ACCOUNT_SID, **body}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def twilio_api() -> Iterator[str]:
    TwilioApi.requests = []
    TwilioApi.fail_creates = False
    with serving(TwilioApi) as url:
        yield url


def rest_requests(kind: str) -> list[RestRequest]:
    with TwilioApi.lock:
        if kind == "create":
            return [r for r in TwilioApi.requests if r.path.endswith("/Calls.json")]
        return [r for r in TwilioApi.requests if not r.path.endswith("/Calls.json")]


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}")


# ---- Kokan under test ----


@pytest.fixture
def acd_settings(settings: Settings, twilio_api: str, tmp_path: Path) -> Settings:
    flows_dir = tmp_path / "flows"
    (flows_dir / "prompts").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "flows" / "prompts" / "hold.wav", flows_dir / "prompts")
    return settings.model_copy(
        update={
            "twilio": TwilioSettings(
                account_sid=ACCOUNT_SID, auth_token=SecretStr(AUTH_TOKEN), api_base=twilio_api
            ),
            "public_url": PUBLIC_URL,
            "flows_dir": flows_dir,
            "queues": {
                "billing": QueueSettings(
                    skills={"billing": 3},
                    callback_key="1",
                    wrapup_seconds=30,
                    max_wait_seconds=60,
                    on_max_wait=ToVoicemail(action="voicemail"),
                ),
            },
            "agents": {
                "aiko": AgentSettings(
                    skills={"billing": 4}, queues=["billing"], twilio_identity="aiko"
                ),
                "ben": AgentSettings(skills={"billing": 3}, queues=["billing"], phone=KOKAN_NUMBER),
            },
        }
    )


@pytest.fixture
def acd_app(
    acd_settings: Settings, database: Database, redis_client: redis.Redis
) -> Iterator[Flask]:
    context = CheckContext.for_directory(acd_settings.flows_dir, ["billing"])
    with database.unit_of_work() as session:
        publish(session, "main", FLOW, "flows/main.yaml", context, by="test")
    apply_config(AcdService(redis_client), acd_settings)  # as the router does when it starts
    app = create_app({"TESTING": True, "KOKAN_SETTINGS": acd_settings})
    yield app
    app.extensions["kokan"].database.dispose()
    app.extensions["kokan"].redis.close()


@pytest.fixture
def voice(acd_app: Flask) -> QueueVoice:
    return queue_voice(acd_app)


@pytest.fixture
def router(acd_settings: Settings, redis_client: redis.Redis) -> Iterator[Router]:
    acd = AcdService(redis_client)
    apply_config(acd, acd_settings)
    made = Router(acd, build_calls(acd, redis_client, acd_settings))
    yield made
    made.pool.shutdown(wait=True)


class Twilio:
    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def post(self, path: str, params: Mapping[str, str], sign: bool = True) -> TestResponse:
        headers = {}
        if sign:
            headers[SIGNATURE_HEADER] = twilio_signature(AUTH_TOKEN, PUBLIC_URL + path, params)
        return self.client.post(path, data=dict(params), headers=headers)

    def call_params(self, sid: str, status: str = "in-progress", **extra: str) -> dict[str, str]:
        return {
            "AccountSid": ACCOUNT_SID,
            "CallSid": sid,
            "CallStatus": status,
            "From": CALLER,
            "To": KOKAN_NUMBER,
            "Direction": "inbound",
            **extra,
        }

    def arrive(self, sid: str) -> ET.Element:
        return twiml(self.post("/webhooks/twilio/voice", self.call_params(sid, "ringing")))

    def hold(self, sid: str) -> ET.Element:
        return twiml(self.post(WAIT, self.call_params(sid)))

    def agent_answers(self, call: str, agent: str) -> ET.Element:
        leg = self.agent_leg(call, agent)
        return twiml(self.post(leg["Url"].removeprefix(PUBLIC_URL), self.leg_params(leg)))

    def agent_leg_ends(self, call: str, agent: str, status: str) -> None:
        leg = self.agent_leg(call, agent)
        path = leg["StatusCallback"].removeprefix(PUBLIC_URL)
        answer = self.post(path, {**self.leg_params(leg), "CallStatus": status})
        assert answer.status_code == 204, answer.get_data(as_text=True)

    @staticmethod
    def agent_leg(call: str, agent: str) -> dict[str, str]:
        legs = [
            r.form for r in rest_requests("create") if f"call={call}&agent={agent}" in r.form["Url"]
        ]
        assert legs, f"agent {agent} was never rung for {call}"
        return legs[-1]

    @staticmethod
    def leg_params(leg: Mapping[str, str]) -> dict[str, str]:
        return {
            "AccountSid": ACCOUNT_SID,
            "CallSid": "CA" + "e" * 32,
            "CallStatus": "in-progress",
            "From": leg["From"],
            "To": leg["To"],
            "Direction": "outbound-api",
        }


@pytest.fixture
def twilio(acd_app: Flask) -> Twilio:
    return Twilio(acd_app.test_client())


def twiml(response: TestResponse) -> ET.Element:
    assert response.status_code == 200, response.get_data(as_text=True)
    root = ET.fromstring(response.get_data())  # noqa: S314 - our own app's TwiML
    assert root.tag == "Response"
    return root


def said(root: ET.Element) -> list[str]:
    return [element.text or "" for element in root.iter("Say")]


def conference_of(root: ET.Element) -> str:
    conference = root.find("Dial/Conference")
    assert conference is not None, ET.tostring(root, encoding="unicode")
    assert conference.get("endConferenceOnExit") == "true"
    return conference.text or ""


def ringing(twilio: Twilio, voice: QueueVoice, router: Router, agent: str = "aiko") -> str:
    """A new caller in line, the agent available, the router's offer dialed."""
    sid = queued_call(twilio)
    voice.acd.set_status(agent, "available")
    router.run_once()
    wait_for(lambda: rest_requests("create"), f"{agent}'s leg")
    return sid


def queued_call(twilio: Twilio) -> str:
    sid = new_sid("CA")
    root = twilio.arrive(sid)
    assert [r.text for r in root.iter("Redirect")] == [PUBLIC_URL + WAIT]
    return sid


# ---- tests ----


def test_a_waiting_caller_hears_position_music_and_the_callback_offer(
    twilio: Twilio, voice: QueueVoice
) -> None:
    sid = queued_call(twilio)
    first = twilio.hold(sid)
    gather = first.find("Gather")
    assert gather is not None
    assert gather.get("action") == f"{PUBLIC_URL}/webhooks/twilio/queue/key"
    assert said(first) == [
        "ただいま1番目にお待ちいただいております。",
        "折り返しのお電話をご希望の場合は1を押してください。順番はそのまま保たれます。",
    ]
    assert [p.text for p in first.iter("Play")] == [f"{PUBLIC_URL}/media/flows/prompts/hold.wav"]
    assert [r.text for r in first.iter("Redirect")] == [PUBLIC_URL + WAIT]

    again = twilio.hold(sid)
    assert said(again) == [], "the next announcement waits for announce_every_seconds"
    assert [p.text for p in again.iter("Play")] == [f"{PUBLIC_URL}/media/flows/prompts/hold.wav"]
    assert voice.acd.call(sid).state == "waiting"


def test_an_available_agent_is_rung_and_the_answer_bridges_the_caller(
    twilio: Twilio, voice: QueueVoice, router: Router, database: Database, redis_client: redis.Redis
) -> None:
    sid = queued_call(twilio)
    voice.acd.set_status("aiko", "available")
    report = router.run_once()
    assert [(o.call_id, o.agents) for o in report.offers] == [(sid, ("aiko",))]

    leg = wait_for(lambda: rest_requests("create"), "the agent leg")[0].form
    assert leg["To"] == "client:aiko"
    assert leg["From"] == CALLER, "a softphone shows who is calling"
    assert leg["Timeout"] == "20"
    assert leg["Url"] == f"{PUBLIC_URL}/webhooks/twilio/queue/agent?call={sid}&agent=aiko"
    assert voice.acd.agent("aiko").status == "offered"

    agent_side = twilio.agent_answers(sid, "aiko")
    assert said(agent_side) == ["billingのお電話です。"]
    assert conference_of(agent_side) == f"kokan-{sid}"
    [moved] = rest_requests("update")
    assert moved.path.endswith(f"/Calls/{sid}.json")
    assert moved.form["Url"] == PUBLIC_URL + WAIT
    assert voice.acd.call(sid).state == "connected"
    assert voice.acd.agent("aiko").status == "on-call"

    assert conference_of(twilio.hold(sid)) == f"kokan-{sid}", "the caller joins the same room"

    twilio.agent_leg_ends(sid, "aiko", "completed")
    assert voice.acd.call(sid).result == "completed"
    assert voice.acd.agent("aiko").status == "wrap-up"

    # with a handled call behind it, the queue can tell the next caller how long
    assert said(twilio.hold(queued_call(twilio)))[:2] == [
        "ただいま1番目にお待ちいただいております。",
        "お待ち時間はおよそ1分です。",
    ]

    CdrProjector(redis_client, database).drain()
    with database.unit_of_work() as session:
        row = session.scalars(select(Call).where(Call.provider_call_id == sid)).one()
        assert (row.queue, row.outcome) == ("billing", "answered")
        assert row.answered_at is not None


def test_an_agent_who_does_not_answer_is_paused_and_the_call_goes_to_the_next(
    twilio: Twilio, voice: QueueVoice, router: Router
) -> None:
    sid = ringing(twilio, voice, router)
    twilio.agent_leg_ends(sid, "aiko", "no-answer")
    assert voice.acd.agent("aiko").status == "not-ready"
    assert voice.acd.call(sid).state == "waiting"

    voice.acd.set_status("ben", "available")
    router.run_once()
    legs = wait_for(lambda: rest_requests("create")[1:], "ben's leg")
    assert legs[0].form["To"] == KOKAN_NUMBER
    assert legs[0].form["From"] == KOKAN_NUMBER, "a phone network shows only Kokan's number"


def test_an_agent_kokan_cannot_ring_counts_as_no_answer(
    twilio: Twilio, voice: QueueVoice, router: Router
) -> None:
    TwilioApi.fail_creates = True
    sid = queued_call(twilio)
    voice.acd.set_status("aiko", "available")
    router.run_once()
    wait_for(lambda: voice.acd.agent("aiko").status == "not-ready", "aiko paused")
    assert voice.acd.call(sid).state == "waiting"


def test_a_late_answer_after_another_agent_took_the_call_is_told_so(
    twilio: Twilio, voice: QueueVoice, router: Router
) -> None:
    sid = ringing(twilio, voice, router)
    twilio.agent_leg_ends(sid, "aiko", "busy")
    late = twilio.agent_answers(sid, "aiko")
    assert said(late) == ["このお電話は、すでに終了したか、ほかの担当者が対応しました。"]
    assert late.find("Hangup") is not None
    assert voice.acd.call(sid).state == "waiting"


def test_the_callback_key_keeps_the_place_and_the_agent_dials_the_caller_back(
    twilio: Twilio, voice: QueueVoice, router: Router
) -> None:
    sid = queued_call(twilio)
    twilio.hold(sid)
    pressed = twiml(twilio.post("/webhooks/twilio/queue/key", twilio.call_params(sid, Digits="1")))
    assert said(pressed) == ["承知いたしました。順番が来ましたら、こちらからお電話いたします。"]
    assert pressed.find("Hangup") is not None
    answer = twilio.post("/webhooks/twilio/status", twilio.call_params(sid, "completed"))
    assert answer.status_code == 204
    kept = voice.acd.call(sid)
    assert (kept.kind, kept.state, kept.position) == ("callback", "waiting", 1)

    voice.acd.set_status("aiko", "available")
    router.run_once()
    leg = wait_for(lambda: rest_requests("create"), "the callback leg")[0].form
    assert leg["From"] == KOKAN_NUMBER
    agent_side = twilio.agent_answers(sid, "aiko")
    dial = agent_side.find("Dial")
    assert dial is not None
    assert dial.get("callerId") == KOKAN_NUMBER
    assert [n.text for n in dial.iter("Number")] == [CALLER]


def test_another_key_does_not_ask_for_a_callback(twilio: Twilio, voice: QueueVoice) -> None:
    sid = queued_call(twilio)
    loop = twiml(twilio.post("/webhooks/twilio/queue/key", twilio.call_params(sid, Digits="7")))
    assert [p.text for p in loop.iter("Play")], "the hold loop goes on"
    assert voice.acd.call(sid).kind == "call"


def test_a_caller_who_hangs_up_while_waiting_is_an_abandon(
    twilio: Twilio, voice: QueueVoice, database: Database, redis_client: redis.Redis
) -> None:
    sid = queued_call(twilio)
    answer = twilio.post("/webhooks/twilio/status", twilio.call_params(sid, "completed"))
    assert answer.status_code == 204
    assert voice.acd.call(sid).result in ("abandoned", "short-abandon")
    again = twilio.post("/webhooks/twilio/status", twilio.call_params(sid, "completed"))
    assert again.status_code == 204, "a repeated status callback changes nothing"
    CdrProjector(redis_client, database).drain()
    with database.unit_of_work() as session:
        row = session.scalars(select(Call).where(Call.provider_call_id == sid)).one()
        assert row.outcome == "abandoned"
        assert row.ended_at is not None


def test_after_the_longest_wait_the_caller_is_moved_to_voicemail(
    twilio: Twilio, voice: QueueVoice, redis_client: redis.Redis, router: Router
) -> None:
    sid = queued_call(twilio)
    later = AcdService(redis_client, clock=lambda: int(time.time() * 1000) + 61_000)
    late_router = Router(later, router.calls)
    try:
        report = late_router.run_once()
        assert [(w.call_id, w.action) for w in report.max_waits] == [(sid, "voicemail")]
        moved = wait_for(lambda: rest_requests("update"), "the caller moved on")
        assert moved[0].path.endswith(f"/Calls/{sid}.json")
    finally:
        late_router.pool.shutdown(wait=True)
    root = twilio.hold(sid)
    record = root.find("Record")
    assert record is not None
    assert record.get("action") == f"{PUBLIC_URL}/webhooks/twilio/voice/voicemail-saved"


def test_queue_webhooks_refuse_unsigned_and_malformed_requests(twilio: Twilio) -> None:
    sid = queued_call(twilio)
    assert twilio.post(WAIT, twilio.call_params(sid), sign=False).status_code == 403
    bad = twilio.post(WAIT, twilio.call_params("CA-not-a-sid"))
    assert bad.status_code == 400
    assert bad.get_json()["error_id"] == "twilio-webhook-malformed"
    odd = twilio.post(
        "/webhooks/twilio/queue/agent?call=../../etc&agent=aiko", twilio.call_params(sid)
    )
    assert odd.status_code == 400
    status = twilio.post("/webhooks/twilio/status", twilio.call_params(sid, "exploded"))
    assert status.status_code == 400


def test_a_hold_loop_turn_for_an_unknown_call_falls_back_to_voicemail(twilio: Twilio) -> None:
    root = twilio.hold(new_sid("CA"))
    assert root.find("Record") is not None, "never dead air"


def test_the_router_loop_rings_an_agent_as_soon_as_a_web_process_wakes_it(
    twilio: Twilio, voice: QueueVoice, router: Router
) -> None:
    stop = threading.Event()
    loop = threading.Thread(target=router.run, args=(stop,), daemon=True)
    loop.start()
    try:
        voice.acd.set_status("aiko", "available")
        sid = queued_call(twilio)
        leg = wait_for(lambda: rest_requests("create"), "the router's dial")[0].form
        assert f"call={sid}&agent=aiko" in leg["Url"]
    finally:
        stop.set()
        loop.join(DEADLINE_S)
    assert not loop.is_alive(), "the loop ends when asked"


@pytest.mark.parametrize("music", ["prompts/missing.wav", "../config.yaml"])
def test_the_router_refuses_to_start_with_hold_music_it_cannot_serve(
    acd_settings: Settings, redis_client: redis.Redis, music: str
) -> None:
    queues = {"billing": acd_settings.queues["billing"].model_copy(update={"hold_music": music})}
    with pytest.raises(ConfigError, match=r"queues\.billing\.hold_music"):
        build_router(redis_client, acd_settings.model_copy(update={"queues": queues}))


def test_ring_all_rings_everyone_and_the_first_answer_stops_the_other_phones(
    twilio: Twilio, voice: QueueVoice, router: Router, acd_settings: Settings
) -> None:
    ring_all = acd_settings.queues["billing"].model_copy(update={"strategy": Strategy.RING_ALL})
    router.acd.put_queue("billing", ring_all)
    voice.acd.set_status("aiko", "available")
    voice.acd.set_status("ben", "available")
    sid = queued_call(twilio)
    [offer] = router.run_once().offers
    assert sorted(offer.agents) == ["aiko", "ben"]
    legs = wait_for(lambda: len(rest_requests("create")) == 2 and rest_requests("create"), "2 legs")
    assert sorted(leg.form["To"] for leg in legs) == sorted(["client:aiko", KOKAN_NUMBER])

    conference_of(twilio.agent_answers(sid, "aiko"))
    updates = [u.form for u in rest_requests("update")]
    assert {"Status": "canceled"} in updates, "ben's phone stops ringing"
    assert {"Url": PUBLIC_URL + WAIT, "Method": "POST"} in updates, "the caller is moved"
    assert voice.acd.agent("ben").status == "available"


SURVEYED_FLOW = """
start: mark
language: ja
nodes:
  mark:
    type: survey
    flow: survey
    next: billing
  billing:
    type: queue
    queue: billing
"""


def test_after_the_agent_hangs_up_the_caller_answers_the_survey_onto_the_ticket(
    twilio: Twilio,
    voice: QueueVoice,
    router: Router,
    database: Database,
    redis_client: redis.Redis,
    acd_settings: Settings,
) -> None:
    publish_surveyed_flow(database)
    sid = ringing(twilio, voice, router)
    twilio.agent_answers(sid, "aiko")
    bridge = twilio.hold(sid)
    dial = bridge.find("Dial")
    assert dial is not None
    assert dial.get("action") == f"{PUBLIC_URL}/webhooks/twilio/voice/after-agent"

    after = "/webhooks/twilio/voice/after-agent"
    first = twiml(twilio.post(after, twilio.call_params(sid)))
    assert said(first) == [
        "本日の対応の満足度を、1から5の数字で入力してください。5がとても満足です。"
    ]
    again = twiml(twilio.post(after, twilio.call_params(sid)))
    assert said(again) == said(first), "a repeated delivery gets the same prompt"

    def press(root: ET.Element, digits: str) -> ET.Element:
        gather = root.find("Gather")
        assert gather is not None
        path = (gather.get("action") or "").removeprefix(PUBLIC_URL)
        return twiml(twilio.post(path, twilio.call_params(sid, Digits=digits)))

    nps = press(first, "4")
    assert "0から10" in said(nps)[0]
    ces = press(nps, "9")
    assert "1から7" in said(ces)[0]
    done = press(ces, "6")
    assert said(done) == ["ご協力ありがとうございました。"]
    twilio.agent_leg_ends(sid, "aiko", "completed")
    twilio.post("/webhooks/twilio/status", twilio.call_params(sid, "completed"))

    CdrProjector(redis_client, database, tickets=acd_settings.tickets).drain()
    with database.unit_of_work() as session:
        answers = session.scalars(
            select(Interaction).where(Interaction.provider_message_id == f"{sid}:survey")
        ).one()
        assert answers.answers == {"csat": "4", "nps": "9", "ces": "6"}
        assert answers.body == "CSAT 4, NPS 9, CES 6"
        call = session.scalars(
            select(Interaction).where(Interaction.provider_message_id == sid)
        ).one()
        assert (answers.customer_id, answers.ticket_id) == (call.customer_id, call.ticket_id)
        assert answers.ticket_id is not None
        assert session.scalars(select(ScheduledMessage)).all() == [], "no SMS survey as well"


def publish_surveyed_flow(database: Database) -> None:
    context = CheckContext.for_directory(REPO_ROOT / "flows", ["billing"])
    survey_source = (REPO_ROOT / "flows" / "survey.yaml").read_text(encoding="utf-8")
    with database.unit_of_work() as session:
        publish(session, "survey", survey_source, "flows/survey.yaml", context, by="test")
        publish(session, "main", SURVEYED_FLOW, "flows/main.yaml", context, by="test")
    wait_for(lambda: PublishedFlows(database).active("main")[0] == 2, "the new version")


def test_a_caller_who_hangs_up_before_the_agent_gets_the_survey_by_sms(
    twilio: Twilio,
    voice: QueueVoice,
    router: Router,
    database: Database,
    redis_client: redis.Redis,
    acd_settings: Settings,
) -> None:
    publish_surveyed_flow(database)
    sid = ringing(twilio, voice, router)
    twilio.agent_answers(sid, "aiko")
    twilio.hold(sid)
    twilio.post("/webhooks/twilio/status", twilio.call_params(sid, "completed"))
    CdrProjector(redis_client, database, tickets=acd_settings.tickets).drain()
    with database.unit_of_work() as session:
        call = session.scalars(select(Call).where(Call.provider_call_id == sid)).one()
        assert call.survey_flow == "survey"
        (first,) = session.scalars(select(ScheduledMessage)).all()
        assert (first.rule, first.to_address) == ("sms-survey", CALLER)
        assert "1（不満）から5（満足）" in first.body  # noqa: RUF001 - Japanese text


def test_with_surveys_by_sms_always_the_caller_hears_goodbye_after_the_agent(
    twilio: Twilio,
    voice: QueueVoice,
    router: Router,
    database: Database,
    acd_app: Flask,
) -> None:
    publish_surveyed_flow(database)
    acd_app.extensions[VOICE_SERVICE].survey_by_sms = True
    sid = ringing(twilio, voice, router)
    twilio.agent_answers(sid, "aiko")
    twilio.hold(sid)
    after = twiml(twilio.post("/webhooks/twilio/voice/after-agent", twilio.call_params(sid)))
    assert after.find("Gather") is None
    assert after.find("Hangup") is not None


def test_a_status_callback_before_the_voice_webhook_still_makes_the_record(
    twilio: Twilio, database: Database, redis_client: redis.Redis
) -> None:
    sid = new_sid("CA")
    for status in ("ringing", "completed"):
        answer = twilio.post("/webhooks/twilio/status", twilio.call_params(sid, status))
        assert answer.status_code == 204
    CdrProjector(redis_client, database).drain()
    with database.unit_of_work() as session:
        row = session.scalars(select(Call).where(Call.provider_call_id == sid)).one()
        assert (row.from_number, row.to_number) == (CALLER, KOKAN_NUMBER)
        assert row.ended_at is not None


def test_without_twilio_credentials_an_offer_is_handed_back_at_once(
    twilio: Twilio, voice: QueueVoice, redis_client: redis.Redis, acd_settings: Settings
) -> None:
    unconfigured = acd_settings.model_copy(update={"twilio": TwilioSettings()})
    acd = AcdService(redis_client)
    bare = Router(acd, build_calls(acd, redis_client, unconfigured))
    try:
        sid = queued_call(twilio)
        voice.acd.set_status("aiko", "available")
        bare.run_once()
        wait_for(lambda: voice.acd.agent("aiko").status == "not-ready", "aiko handed back")
        assert voice.acd.call(sid).state == "waiting"
    finally:
        bare.pool.shutdown(wait=True)
