"""Start (on demand), pause and resume a call's recording: from the agent API and from a
flow's `recording` node; the paused spans reach the recording's metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from acd.router import Router
from acd.twilio_calls import QueueVoice
from acd.twilio_runtime import queue_voice
from admin.services import create_user, issue_token
from ivr.publishing import PublishedFlows, publish
from ivr.validator import CheckContext
from kokan.config import Settings
from kokan.db import Database
from recording.live import read
from recording.models import Recording
from tests.recording_support import work, write_config
from tests.test_acd_twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PUBLIC_URL,
    Twilio,
    acd_app,
    acd_settings,
    ringing,
    router,
    twilio,
    twiml,
    voice,
    wait_for,
)
from tests.test_call_recording_twilio import (
    CALL_RECORDINGS,
    RecordingApi,
    recording_requests,
    signed_callback,
    twilio_api,
)
from tests.twilio_signing import new_sid

SHARED_FIXTURES = (acd_app, acd_settings, router, twilio, voice, twilio_api)
"""Fixtures of the modules above, found by pytest through their names here."""

LIVE = "/api/recordings/live/{sid}/{action}"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock(acd_app: Flask) -> Clock:
    made = Clock()
    queue_voice(acd_app).recorder.clock = made
    return made


def use_mode(voice: QueueVoice, mode: str) -> None:
    queues = {"billing": voice.queues["billing"].model_copy(update={"record": mode})}
    voice.queues = voice.recorder.queues = queues


def token(database: Database, username: str, role: str) -> dict[str, str]:
    with database.unit_of_work() as session:
        user = create_user(session, username, role).user
        return {"Authorization": f"Bearer {issue_token(session, user)}"}


@pytest.fixture
def api(acd_app: Flask) -> FlaskClient:
    return acd_app.test_client()


def updates() -> list[dict[str, str]]:
    return [
        r.form
        for r in recording_requests()
        if (match := CALL_RECORDINGS.fullmatch(r.path)) and match["sid"]
    ]


def test_an_agent_starts_pauses_and_resumes_the_recording_of_their_own_call(
    twilio: Twilio,
    voice: QueueVoice,
    router: Router,
    api: FlaskClient,
    database: Database,
    clock: Clock,
) -> None:
    use_mode(voice, "on_demand")
    aiko = token(database, "aiko", "agent")
    sid = ringing(twilio, voice, router)
    twilio.agent_answers(sid, "aiko")
    assert recording_requests() == [], "on demand: nothing until someone asks"

    started = api.post(LIVE.format(sid=sid, action="start"), headers=aiko)
    assert started.status_code == 200, started.get_json()
    body = started.get_json()
    assert (body["state"], body["recording_sid"]) == ("recording", RecordingApi.created[0])
    again = api.post(LIVE.format(sid=sid, action="start"), headers=aiko)
    assert again.get_json()["recording_sid"] == body["recording_sid"]
    assert len(recording_requests()) == 1, "a second start does not make a second file"

    clock.now += 12_000
    paused = api.post(LIVE.format(sid=sid, action="pause"), headers=aiko).get_json()
    assert paused["state"] == "paused"
    assert updates() == [{"Status": "paused", "PauseBehavior": "silence"}]
    api.post(LIVE.format(sid=sid, action="pause"), headers=aiko)
    assert len(updates()) == 1, "pausing a paused recording asks Twilio nothing"
    clock.now += 20_000
    resumed = api.post(LIVE.format(sid=sid, action="resume"), headers=aiko).get_json()
    assert resumed["state"] == "recording"
    assert updates()[-1] == {"Status": "in-progress"}
    assert resumed["pauses"] == [{"start_ms": 12_000, "end_ms": 32_000}]


def test_only_the_agent_on_the_call_or_a_supervisor_may_control_it(
    twilio: Twilio, voice: QueueVoice, router: Router, api: FlaskClient, database: Database
) -> None:
    use_mode(voice, "on_demand")
    sid = ringing(twilio, voice, router)
    twilio.agent_answers(sid, "aiko")
    ben = token(database, "ben", "agent")
    refused = api.post(LIVE.format(sid=sid, action="start"), headers=ben)
    assert refused.status_code == 403
    assert refused.get_json()["error_id"] == "recording-forbidden"
    assert recording_requests() == []
    boss = token(database, "sato", "supervisor")
    assert api.post(LIVE.format(sid=sid, action="start"), headers=boss).status_code == 200
    assert api.post(LIVE.format(sid=sid, action="start")).status_code == 401
    for bad in (new_sid("CA"), "CA..%2F..", "x" * 300):
        missing = api.post(LIVE.format(sid=bad, action="pause"), headers=boss)
        assert missing.status_code == 404, bad
    assert api.post(LIVE.format(sid=sid, action="stop"), headers=boss).status_code == 404


def test_a_call_that_is_never_recorded_cannot_be_started_or_paused(
    twilio: Twilio, voice: QueueVoice, router: Router, api: FlaskClient, database: Database
) -> None:
    sid = ringing(twilio, voice, router)
    twilio.agent_answers(sid, "aiko")
    boss = token(database, "sato", "supervisor")
    start = api.post(LIVE.format(sid=sid, action="start"), headers=boss)
    assert (start.status_code, start.get_json()["error_id"]) == (409, "recording-not-allowed")
    pause = api.post(LIVE.format(sid=sid, action="pause"), headers=boss)
    assert (pause.status_code, pause.get_json()["error_id"]) == (409, "recording-not-live")
    assert recording_requests() == []


def test_twilio_refusing_a_pause_is_a_502_and_nothing_is_marked(
    twilio: Twilio, voice: QueueVoice, router: Router, api: FlaskClient, database: Database
) -> None:
    use_mode(voice, "always")
    sid = ringing(twilio, voice, router)
    twilio.agent_answers(sid, "aiko")
    RecordingApi.fail_recordings = True
    boss = token(database, "sato", "supervisor")
    refused = api.post(LIVE.format(sid=sid, action="pause"), headers=boss)
    assert (refused.status_code, refused.get_json()["error_id"]) == (
        502,
        "recording-control-failed",
    )
    live = read(voice.acd.redis, sid)
    assert (live.state, live.pauses) == ("recording", {})


CARD_SURVEY = """
start: pause
language: ja
nodes:
  pause:
    type: recording
    action: pause
    next: card
  card:
    type: gather
    prompt: カード番号を入力してください。
    into: card
    next: resume
    on_failure: resume
  resume:
    type: recording
    action: resume
    next: bye
  bye:
    type: hangup
    prompt: ありがとうございました。
"""
CARD_MAIN = """
start: mark
language: ja
recording: always
nodes:
  mark:
    type: survey
    flow: payment
    next: billing
  billing:
    type: queue
    queue: billing
"""


def test_a_flow_node_pauses_for_the_card_number_and_the_span_reaches_the_metadata(
    twilio: Twilio,
    voice: QueueVoice,
    router: Router,
    api: FlaskClient,
    database: Database,
    redis_client: redis.Redis,
    acd_settings: Settings,
    clock: Clock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flows = acd_settings.flows_dir
    (flows / "payment.yaml").write_text(CARD_SURVEY, encoding="utf-8")
    context = CheckContext.for_directory(flows, ["billing"])
    with database.unit_of_work() as session:
        publish(session, "payment", CARD_SURVEY, "flows/payment.yaml", context, by="test")
        publish(session, "main", CARD_MAIN, "flows/main.yaml", context, by="test")
    wait_for(lambda: PublishedFlows(database).active("main")[0] == 2, "the new version")

    sid = ringing(twilio, voice, router)
    twilio.agent_answers(sid, "aiko")
    assert len(recording_requests()) == 1, "the flow says always"
    clock.now += 60_000
    after = twiml(twilio.post("/webhooks/twilio/voice/after-agent", twilio.call_params(sid)))
    assert updates() == [{"Status": "paused", "PauseBehavior": "silence"}], "before the prompt"
    gather = after.find("Gather")
    assert gather is not None
    clock.now += 15_000
    path = (gather.get("action") or "").removeprefix(PUBLIC_URL)
    twiml(twilio.post(path, twilio.call_params(sid, Digits="4242424242424242#")))
    assert updates()[-1] == {"Status": "in-progress"}

    write_config(
        tmp_path,
        acd_settings,
        monkeypatch,
        twilio={
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "api_base": acd_settings.twilio.api_base,
        },
        post_process=False,
    )
    assert signed_callback(twilio, sid, RecordingApi.created[0]).status_code == 204
    work(redis_client)
    with database.unit_of_work() as session:
        [recording_id] = [row.id for row in session.query(Recording)]
    boss = token(database, "sato", "supervisor")
    shown = api.get(f"/api/recordings/{recording_id}", headers=boss).get_json()
    assert shown["pauses"] == [{"start_ms": 60_000, "end_ms": 75_000}]
    assert shown["queue"] == "billing"
    assert shown["agent_id"] == "aiko"
