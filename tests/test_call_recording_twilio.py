"""Calls recorded through Twilio: the policy decides at the agent's answer, a two-channel
recording of the caller's leg starts through the REST API (the conference records when
that fails), the consent is said, and the recording status callback keeps one recording
per RecordingSid, fetched, converted and transcribed by real rq workers.

Twilio's cloud is the one stand-in (tests.test_acd_twilio's REST server, taught the Call
Recordings resource and the recording media); webhooks are signed as Twilio signs them.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis
from flask import Flask
from sqlalchemy import select

from acd.router import Router
from acd.twilio_calls import QueueVoice
from ivr.publishing import PublishedFlows, publish
from ivr.validator import CheckContext
from kokan.config import Settings
from kokan.db import Database
from recording.live import read
from recording.models import Recording, RecordingStatus
from tests.local_http import serving
from tests.recording_support import silence, tone, wav, work, write_config
from tests.test_acd_twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PUBLIC_URL,
    Twilio,
    TwilioApi,
    acd_app,
    acd_settings,
    conference_of,
    ringing,
    router,
    said,
    twilio,
    voice,
    wait_for,
)
from tests.twilio_signing import new_sid
from tickets.cdr import CdrProjector

SHARED_FIXTURES = (acd_app, acd_settings, router, twilio, voice)
"""Fixtures of the modules above, found by pytest through their names here."""

RECORDING_CALLBACK = "/webhooks/twilio/recording"
CONSENT_JA = "この通話は品質向上のため録音されます。"
CALL_RECORDINGS = re.compile(
    rf"^/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/(?P<call>CA[0-9a-f]{{32}})/Recordings"
    r"(?:/(?P<sid>RE[0-9a-f]{32}))?\.json$"
)
MEDIA = re.compile(rf"^/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/(?P<sid>RE[0-9a-f]{{32}})")
CALL_SECONDS = 3.0


def call_audio() -> bytes:
    """Two channels (caller, agent) with the middle second silent, as a paused span is."""
    left = tone(1.0, hz=440) + silence(1.0) + tone(1.0, hz=440)
    right = tone(1.0, hz=660) + silence(1.0) + tone(1.0, hz=660)
    frames = [left[i : i + 2] + right[i : i + 2] for i in range(0, len(left), 2)]
    return wav(b"".join(frames), channels=2)


class RecordingApi(TwilioApi):
    """Twilio's REST API as before, plus Calls/CA…/Recordings (create, update) and the media."""

    fail_recordings: ClassVar[bool] = False
    created: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        match = CALL_RECORDINGS.fullmatch(self.path)
        if match is None:
            super().do_POST()
            return
        from urllib.parse import parse_qsl

        from tests.test_acd_twilio import RestRequest

        length = int(self.headers.get("Content-Length", "0"))
        form: dict[str, str] = {}
        for name, value in parse_qsl(self.rfile.read(length).decode()):
            form[name] = f"{form[name]} {value}" if name in form else value  # lists: joined
        with self.lock:
            self.requests.append(RestRequest("POST", self.path, form))
        if self.fail_recordings:
            self._json(400, {"code": 21220, "message": "Call is not in-progress", "status": 400})
            return
        if match["sid"] is None:
            sid = new_sid("RE")
            with self.lock:
                self.created.append(sid)
            self._json(201, {"sid": sid, "call_sid": match["call"], "status": "in-progress"})
            return
        self._json(200, {"sid": match["sid"], "call_sid": match["call"], "status": form["Status"]})

    def do_GET(self) -> None:
        if MEDIA.match(self.path) and self.path.endswith(".wav"):
            body = call_audio()
            self.send_response(200)
            self.send_header("Content-Type", "audio/x-wav")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._json(404, {"code": 20404, "message": "not found", "status": 404})


@pytest.fixture
def twilio_api() -> Iterator[str]:
    TwilioApi.requests = []
    TwilioApi.fail_creates = False
    RecordingApi.fail_recordings = False
    RecordingApi.created = []
    with serving(RecordingApi) as url:
        yield url


def recording_requests() -> list[Any]:
    with TwilioApi.lock:
        return [r for r in TwilioApi.requests if CALL_RECORDINGS.fullmatch(r.path)]


@pytest.fixture
def recorded_settings(acd_settings: Settings) -> Settings:
    queue = acd_settings.queues["billing"].model_copy(
        update={"record": "always", "recording_consent": {"ja": CONSENT_JA, "en": "Recorded."}}
    )
    return acd_settings.model_copy(update={"queues": {"billing": queue}})


@pytest.fixture
def recorded_app(
    recorded_settings: Settings, acd_app: Flask, database: Database, redis_client: redis.Redis
) -> Flask:
    """The same app, with the billing queue set to `record: always` and a consent."""
    from acd.twilio_runtime import queue_voice

    voice_service = queue_voice(acd_app)
    voice_service.queues = recorded_settings.queues
    voice_service.recorder.queues = recorded_settings.queues
    return acd_app


def answered(twilio: Twilio, voice: QueueVoice, router: Router) -> tuple[str, ET.Element]:
    sid = ringing(twilio, voice, router)
    return sid, twilio.agent_answers(sid, "aiko")


def signed_callback(twilio: Twilio, sid: str, recording_sid: str, **form: str) -> Any:
    path = f"{RECORDING_CALLBACK}?call={sid}&agent=aiko&queue=billing"
    params = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": sid,
        "RecordingSid": recording_sid,
        "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}"
        f"/Recordings/{recording_sid}",
        "RecordingStatus": "completed",
        "RecordingDuration": str(int(CALL_SECONDS)),
        "RecordingChannels": "2",
        "RecordingSource": "StartCallRecordingAPI",
        **form,
    }
    return twilio.post(path, {k: v for k, v in params.items() if v != ""})


# ---- the policy at the answer ----


def test_an_always_queue_records_the_callers_leg_in_two_channels_when_the_agent_answers(
    recorded_app: Flask, twilio: Twilio, voice: QueueVoice, router: Router
) -> None:
    sid, agent_side = answered(twilio, voice, router)
    [start] = recording_requests()
    assert start.path.endswith(f"/Calls/{sid}/Recordings.json"), "the caller's own leg"
    assert start.form["RecordingChannels"] == "dual"
    assert start.form["RecordingStatusCallback"] == (
        f"{PUBLIC_URL}{RECORDING_CALLBACK}?call={sid}&agent=aiko&queue=billing"
    )
    assert start.form["RecordingStatusCallbackEvent"] == "completed absent"
    assert start.form["RecordingStatusCallbackMethod"] == "POST"
    conference = agent_side.find("Dial/Conference")
    assert conference is not None
    assert conference.get("record") is None, "not twice"
    live = read(voice.acd.redis, sid)
    assert (live.recording_sid, live.state) == (RecordingApi.created[0], "recording")

    bridge = twilio.hold(sid)
    assert said(bridge) == [CONSENT_JA], "the consent, in the caller's language, first"
    assert conference_of(bridge) == f"kokan-{sid}"
    again = twilio.agent_answers(sid, "aiko")
    assert conference_of(again) == f"kokan-{sid}"
    assert len(recording_requests()) == 1, "a repeated answer webhook starts nothing more"


def test_a_queue_that_never_records_starts_nothing_and_says_no_consent(
    twilio: Twilio, voice: QueueVoice, router: Router
) -> None:
    sid, _agent_side = answered(twilio, voice, router)
    assert recording_requests() == []
    assert said(twilio.hold(sid)) == []


def test_when_twilio_refuses_the_start_the_conference_records_instead(
    recorded_app: Flask, twilio: Twilio, voice: QueueVoice, router: Router
) -> None:
    RecordingApi.fail_recordings = True
    sid, agent_side = answered(twilio, voice, router)
    assert len(recording_requests()) == 1
    for root in (agent_side, twilio.hold(sid)):
        conference = root.find("Dial/Conference")
        assert conference is not None
        assert conference.get("record") == "record-from-start"
        assert conference.get("recordingStatusCallback") == (
            f"{PUBLIC_URL}{RECORDING_CALLBACK}?call={sid}&agent=aiko&queue=billing"
        )
        assert conference.get("recordingStatusCallbackEvent") == "completed absent"


FLOW_DECIDES = """
start: billing
language: ja
recording:
  mode: {mode}
  consent:
    ja: フローの録音案内です。
nodes:
  billing:
    type: queue
    queue: billing
"""


@pytest.mark.parametrize(("flow_mode", "records"), [("never", False), ("always", True)])
def test_the_flows_policy_wins_over_the_queues(
    recorded_app: Flask,
    twilio: Twilio,
    voice: QueueVoice,
    router: Router,
    database: Database,
    acd_settings: Settings,
    flow_mode: str,
    records: bool,
) -> None:
    if flow_mode == "always":  # the queue says never, the flow always
        voice.queues = voice.recorder.queues = acd_settings.queues
    text = FLOW_DECIDES.format(mode=flow_mode)
    if flow_mode == "never":
        text = text.replace("  consent:\n    ja: フローの録音案内です。\n", "")
    context = CheckContext.for_directory(acd_settings.flows_dir, ["billing"])
    with database.unit_of_work() as session:
        publish(session, "main", text, "flows/main.yaml", context, by="test")
    wait_for(lambda: PublishedFlows(database).active("main")[0] == 2, "the new version")

    sid = new_sid("CA")
    arrival = twilio.arrive(sid)
    assert said(arrival) == (["フローの録音案内です。"] if records else [])
    voice.acd.set_status("aiko", "available")
    router.run_once()
    wait_for(lambda: [r for r in TwilioApi.requests if r.path.endswith("/Calls.json")], "leg")
    twilio.agent_answers(sid, "aiko")
    assert bool(recording_requests()) is records
    assert said(twilio.hold(sid)) == [], "the flow decided: the queue's consent is not said"


# ---- the recording status callback ----


def test_the_callback_keeps_one_call_recording_fetched_converted_and_linked(
    recorded_app: Flask,
    twilio: Twilio,
    voice: QueueVoice,
    router: Router,
    database: Database,
    redis_client: redis.Redis,
    recorded_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_config(
        tmp_path,
        recorded_settings,
        monkeypatch,
        twilio={
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "api_base": recorded_settings.twilio.api_base,
        },
        vosk_phrases=["상담원"],
    )
    sid, _agent_side = answered(twilio, voice, router)
    recording_sid = RecordingApi.created[0]
    twilio.agent_leg_ends(sid, "aiko", "completed")
    CdrProjector(redis_client, database).drain()

    for _delivery in range(2):
        answer = signed_callback(twilio, sid, recording_sid)
        assert answer.status_code == 204, answer.get_data(as_text=True)
    work(redis_client)

    with database.unit_of_work() as session:
        [row] = session.scalars(select(Recording)).all()
        assert (row.kind, row.provider_recording_id, row.provider_call_id) == (
            "call",
            recording_sid,
            sid,
        )
        assert (row.agent_id, row.queue, row.provider_account_id) == (
            "aiko",
            "billing",
            ACCOUNT_SID,
        )
        assert row.status == RecordingStatus.STORED, row.failure_reason
        assert row.call_id is not None, "linked to the call-detail row"
        assert row.processed_at is not None, "the fetch chained the conversion"
        assert row.channels == 2, "caller and agent on their own channels"
        assert row.duration_ms is not None
        assert abs(row.duration_ms - 3000) < 300
    assert read(redis_client, sid).state == "completed"


@pytest.mark.parametrize(
    ("change", "error_id"),
    [
        ({"RecordingSid": "RE-nope"}, "twilio-webhook-malformed"),
        ({"RecordingStatus": "exploded"}, "twilio-webhook-malformed"),
        ({"RecordingUrl": ""}, "twilio-webhook-malformed"),
        ({"RecordingUrl": "https://evil.example.com/x.wav"}, "recording-url-invalid"),
    ],
)
def test_a_malformed_callback_is_refused_and_keeps_nothing(
    twilio: Twilio, database: Database, change: dict[str, str], error_id: str
) -> None:
    answer = signed_callback(twilio, new_sid("CA"), new_sid("RE"), **change)
    assert answer.status_code == 400
    assert answer.get_json()["error_id"] == error_id


def test_callbacks_that_are_unsigned_name_no_call_or_report_no_file_keep_nothing(
    twilio: Twilio, redis_client: redis.Redis
) -> None:
    sid, recording_sid = new_sid("CA"), new_sid("RE")
    unsigned = twilio.client.post(f"{RECORDING_CALLBACK}?call={sid}", data={"AccountSid": "x"})
    assert unsigned.status_code == 403
    no_call = twilio.post(
        RECORDING_CALLBACK + "?call=..%2Fetc", {"AccountSid": ACCOUNT_SID, "RecordingSid": "x"}
    )
    assert no_call.status_code == 400
    bad_agent = twilio.post(
        f"{RECORDING_CALLBACK}?call={sid}&agent=%3Cscript%3E",
        {
            "AccountSid": ACCOUNT_SID,
            "RecordingSid": recording_sid,
            "RecordingStatus": "absent",
        },
    )
    assert bad_agent.status_code == 400
    absent = signed_callback(twilio, sid, recording_sid, RecordingStatus="absent", RecordingUrl="")
    assert absent.status_code == 204
    assert redis_client.keys("rq:queue:*") == [] or all(
        redis_client.llen(key) == 0 for key in redis_client.keys("rq:queue:*")
    ), "nothing was queued for a recording Twilio did not keep"
