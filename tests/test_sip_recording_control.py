"""Start (on demand), pause and resume the recording of a SIP call through the recordings
API (`POST /api/recordings/live/<call_id>/<action>`), as for a Twilio call.

The API's checks run against the real ACD in Redis and the real worker inbox. The media
test runs the real `kokan sip` worker and `kokan router`, a sipp caller speaking 500 Hz
and a baresip agent speaking 1 kHz: the API starts the bridge's recording, pauses it for
a couple of seconds and resumes it, and the one two-channel WAV that reaches the
recording pipeline holds both voices throughout and is shorter than the call by the pause.
"""

from __future__ import annotations

import time
import wave
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import select

from acd.services import AcdService
from acd.sip_handoff import RECORD
from kokan.config import AgentSettings, QueueSettings
from kokan.db import Database
from recording import sip_live
from recording.live import read
from recording.models import Recording, RecordingStatus
from recording.sip_live import SipRecordingState
from tests.sip_peers import TONE_HZ, baresip_agents
from tests.test_acd_api import Tokens
from tests.test_sip_bridge import (
    CALLER_TONE_HZ,
    SAMPLES_PER_PACKET,
    TONE_SHARE,
    Bridged,
    CallerEar,
    agent_floor,
    bridged_call,
    caller_ear,
    start_floor,
    tone_share,
)
from tests.test_sip_calls import the_call, wait_for
from tests.test_sip_handoff import HeldCall, error_id_of, hold_sip_call

__all__ = ["agent_floor", "baresip_agents", "bridged_call", "caller_ear", "start_floor"]

LIVE = "/api/recordings/live/{call}/{action}"
PACKETS_PER_S = 50
RECORDED_S = 1.5
"""Each recorded stretch, measured in packets the caller receives (50 a second)."""
PAUSED_S = 2.0
"""The paused stretch: long enough to tell from a loop turn's slack or a join's jitter."""
SLACK_S = 0.6
"""Between the API's answers (the test's clock) and the worker's recorders: an inbox hop
(~50 ms) each way, the files' last frames, a loaded 2-core machine."""
GAP_FRAMES = 15
"""300 ms without the agent's voice in the file would be a hole; the pause was 2 s."""


# ---- the API ---------------------------------------------------------------------------


@pytest.fixture
def sip_call(redis_client: redis.Redis) -> Callable[..., HeldCall]:
    """`sip_call(record=..., agent=...)`: a call answered by the agent (aiko: the agent
    user of that name) and held by a live SIP worker."""

    def make(record: str = "on_demand", answer: bool = True, agent: str = "aiko") -> HeldCall:
        service = AcdService(redis_client)
        service.configure(
            {"billing": QueueSettings(record=record)},  # type: ignore[arg-type]
            {agent: AgentSettings(queues=["billing"], sip_uri=f"sip:{agent}@127.0.0.1:5091")},
        )
        return hold_sip_call(service, redis_client, "rec", answer_by=agent if answer else None)

    return make


def test_ids_that_are_no_call_id_are_refused_clearly(
    client: FlaskClient, database: Database, sip_call: Callable[..., HeldCall]
) -> None:
    tokens = Tokens(database)
    call = sip_call()
    for bad in ("x" * 49, "-starts-with-a-dash", "a b", "nul%00byte", "caf\u00e9@host", "a;b"):
        answer = client.post(LIVE.format(call=bad, action="start"), headers=tokens["sue"])
        assert error_id_of(answer, 404) == "recording-live-call-not-found", bad
        assert "not a call id" in answer.get_json()["message"], bad
    unknown = client.post(
        LIVE.format(call="nobody@127.0.0.1", action="start"), headers=tokens["sue"]
    )
    assert error_id_of(unknown, 404) == "recording-live-call-not-found"
    assert "no call nobody@127.0.0.1" in unknown.get_json()["message"]
    assert client.post(LIVE.format(call=call.call_id, action="stop")).status_code == 404
    assert call.handoff.take(call.worker) == []


def test_only_the_agent_on_the_sip_call_or_a_supervisor_may_control_it(
    client: FlaskClient,
    database: Database,
    sip_call: Callable[..., HeldCall],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = Tokens(database)
    call = sip_call()
    path = LIVE.format(call=call.call_id, action="start")
    assert error_id_of(client.post(path), 401) == "authentication-required"
    assert error_id_of(client.post(path, headers=tokens["ben"]), 403) == "recording-forbidden"
    assert call.handoff.take(call.worker) == []

    # a start whose worker does not act in time is a clear failure, not a hang
    monkeypatch.setattr(sip_live, "CONTROL_WAIT_S", 0.3)
    late = client.post(path, headers=tokens["aiko"])
    assert error_id_of(late, 502) == "recording-control-failed"
    assert "did not start the recording" in late.get_json()["message"]
    (message,) = call.handoff.take(call.worker)
    assert (message.kind, message.call_id, message.action) == (RECORD, call.call_id, "start")

    # what the worker writes once it records: a second start is answered with it
    SipRecordingState(call.service.redis).started(call.call_id, f"{call.call_id}-call")
    again = client.post(path, headers=tokens["sue"])
    assert again.status_code == 200, again.get_json()
    assert again.get_json() == {
        "call_sid": call.call_id,
        "recording_sid": f"{call.call_id}-call",
        "state": "recording",
        "pauses": [],
    }
    assert call.handoff.take(call.worker) == [], "already recording: nothing sent"
    SipRecordingState(call.service.redis).paused(call.call_id)
    paused = client.post(LIVE.format(call=call.call_id, action="pause"), headers=tokens["aiko"])
    assert paused.get_json()["state"] == "paused"
    assert call.handoff.take(call.worker) == [], "pausing a paused recording sends nothing"


def test_a_sip_call_that_is_never_recorded_or_not_bridged_is_refused(
    client: FlaskClient,
    database: Database,
    sip_call: Callable[..., HeldCall],
    redis_client: redis.Redis,
) -> None:
    tokens = Tokens(database)
    never = sip_call(record="never")
    start = LIVE.format(call=never.call_id, action="start")
    assert error_id_of(client.post(start, headers=tokens["sue"]), 409) == "recording-not-allowed"
    pause = LIVE.format(call=never.call_id, action="pause")
    assert error_id_of(client.post(pause, headers=tokens["sue"]), 409) == "recording-not-live"
    assert never.handoff.take(never.worker) == []

    gone = sip_call(agent="kai")
    redis_client.delete(gone.service.keys.prefix + f"sip:alive:{gone.worker}")
    answer = client.post(LIVE.format(call=gone.call_id, action="start"), headers=tokens["sue"])
    assert error_id_of(answer, 409) == "recording-call-not-bridged"
    assert "worker" in answer.get_json()["message"]
    assert gone.handoff.take(gone.worker) == []

    waiting = sip_call(answer=False)
    answer = client.post(LIVE.format(call=waiting.call_id, action="start"), headers=tokens["sue"])
    assert error_id_of(answer, 409) == "recording-call-not-bridged"
    assert "waiting" in answer.get_json()["message"]


# ---- real peers ------------------------------------------------------------------------


def _tone_frames(samples: list[int], hz: int) -> list[bool]:
    return [
        tone_share(samples[start : start + SAMPLES_PER_PACKET], hz) >= TONE_SHARE
        for start in range(0, len(samples) - SAMPLES_PER_PACKET + 1, SAMPLES_PER_PACKET)
    ]


def _longest_gap(frames: list[bool]) -> int:
    longest = run = 0
    for tone in frames:
        run = 0 if tone else run + 1
        longest = max(longest, run)
    return longest


@pytest.mark.media
def test_the_api_starts_pauses_and_resumes_a_bridged_sip_calls_recording(
    bridged_call: Callable[..., Bridged],
    caller_ear: CallerEar,
    client: FlaskClient,
    database: Database,
) -> None:
    tokens = Tokens(database)
    bridged = bridged_call("aiko", queue={"record": "on_demand"})
    floor = bridged.floor
    call_id = the_call(database, floor.acd.redis).provider_call_id
    assert read(floor.acd.redis, call_id).recording_sid is None, "on demand: nothing yet"

    def act(action: str, user: str = "aiko") -> dict[str, Any]:
        answer = client.post(LIVE.format(call=call_id, action=action), headers=tokens[user])
        assert answer.status_code == 200, (answer.get_json(), floor.output())
        body: dict[str, Any] = answer.get_json()
        return body

    def hear_for(seconds: float) -> None:
        since = len(caller_ear.packets)
        wait_for(
            lambda: len(caller_ear.packets) >= since + seconds * PACKETS_PER_S,
            f"{seconds} s of the call",
        )

    started = act("start")
    started_at = time.monotonic()
    assert (started["state"], started["recording_sid"]) == ("recording", f"{call_id}-call")
    assert act("start", "sue")["recording_sid"] == started["recording_sid"]
    hear_for(RECORDED_S)
    paused = act("pause", "sue")
    paused_at = time.monotonic()
    assert paused["state"] == "paused"
    hear_for(PAUSED_S)
    resumed = act("resume")
    resumed_at = time.monotonic()
    assert resumed["state"] == "recording"
    (span,) = resumed["pauses"]
    assert abs((span["end_ms"] - span["start_ms"]) / 1000 - (resumed_at - paused_at)) < SLACK_S
    hear_for(RECORDED_S)

    bridged.phone.stop()  # the agent hangs up: the bridge, and its recording, end
    ended_at = time.monotonic()
    done = bridged.caller.finish()
    assert done.returncode == 0, done.stdout.decode(errors="replace") + floor.output()

    def stored() -> Recording | None:
        with database.unit_of_work() as session:
            return session.scalar(
                select(Recording).where(
                    Recording.provider == "sip", Recording.status == RecordingStatus.STORED
                )
            )

    recording = wait_for(stored, "the call's recording row")
    assert (recording.kind, recording.provider_call_id) == ("call", call_id)
    assert (recording.agent_id, recording.queue, recording.channels) == ("aiko", "billing", 2)
    assert recording.storage_key is not None
    with wave.open(str(floor.settings.recordings_dir / recording.storage_key)) as audio:
        assert (audio.getnchannels(), audio.getsampwidth()) == (2, 2)
        seconds = audio.getnframes() / audio.getframerate()
        frames = audio.readframes(audio.getnframes())
    recorded_s = (paused_at - started_at) + (ended_at - resumed_at)
    detail = f"{seconds:.2f} s in the file, {recorded_s:.2f} s recorded\n{floor.output()}"
    # the paused span is not in the file: it is as long as the recorded stretches...
    assert abs(seconds - recorded_s) < SLACK_S, detail
    assert seconds < (ended_at - started_at) - PAUSED_S + SLACK_S, detail
    # ...and both voices run through it, with no silent stretch where the pause was
    samples = [
        int.from_bytes(frames[i : i + 2], "little", signed=True)
        for i in range(0, len(frames) - 1, 2)
    ]
    agent = _tone_frames(samples[1::2], TONE_HZ)
    caller = _tone_frames(samples[0::2], CALLER_TONE_HZ)
    assert sum(agent) >= 0.8 * len(agent), detail
    assert sum(caller) >= 0.8 * len(caller), detail
    assert _longest_gap(agent[:-GAP_FRAMES]) < GAP_FRAMES, detail
    assert read(floor.acd.redis, call_id).state == "completed"
    spool = floor.settings.resolved_data_dir / "sip-voicemail"
    assert not list(spool.glob("*.wav")), "the legs' files are left behind"

    # the call is over: nothing more to control
    over = client.post(LIVE.format(call=call_id, action="resume"), headers=tokens["sue"])
    assert error_id_of(over, 409) == "recording-call-not-bridged"
    assert "Traceback" not in floor.output(), floor.output()
