"""A SIP caller waiting in a queue, after the agent, and recorded: position announcements
between the hold music (as Twilio's hold loop says them) and the callback key, the survey
after the agent hangs up, and the two-channel recording of the bridged call — with
`kokan sip`, `kokan router`, sipp as the caller and baresip as the agent's softphone, all
real, on 127.0.0.1.
"""

from __future__ import annotations

import array
import audioop
import math
import time
import wave
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from acd.estimates import expected_wait_s
from acd.twilio_twiml import announcement_phrases
from ivr.call_store import CallStore
from ivr.sip_prompts import PromptCache
from kokan.db import Database
from recording.models import Recording
from recording.services import job_is_live, process_job_id, recordings_queue
from tests.conftest import REPO_ROOT
from tests.sip_peers import RATE, TONE_HZ, Baresip, baresip_agents
from tests.test_sip_bridge import (
    CALLER_TONE_HZ,
    PACKET_S,
    PCMA,
    RTP_HEADER,
    SAMPLES_PER_PACKET,
    TONE_PACKETS,
    TONE_SHARE,
    Bridged,
    CallerEar,
    Floor,
    acd_events,
    agent_floor,
    alaw_to_linear,
    bridged_call,
    call_in,
    caller_ear,
    check_called_back,
    start_call,
    start_floor,
    tone_share,
    waiting_floor,
)
from tests.test_sip_calls import DEADLINE_S, POLL_S, Key, stored_recording, the_call, wait_for
from tickets.call_tickets import SURVEY_SUFFIX
from tickets.cdr import CdrProjector
from tickets.models import Interaction

pytestmark = pytest.mark.media  # real SIP peers: the PostgreSQL pass leaves them out (./run)

__all__ = [  # fixtures, used by name
    "agent_floor",
    "baresip_agents",
    "bridged_call",
    "caller_ear",
    "start_floor",
    "waiting_floor",
]

ANNOUNCE_EVERY_S = 15
"""The shortest cadence a queue takes (QueueSettings.announce_every_seconds)."""
CADENCE_SLACK_S = 3.0
"""An announcement is due on the worker's 10 ms loop; TTS of a new sentence and a loaded
2-core machine may add a second or two, never a whole cadence."""
SAME_AUDIO = 0.95
"""A packet this similar to a prompt's frame carries it (G.711 keeps ~0.999)."""
ANNOUNCED = "announcing: "
"""The worker's log line for each announcement, followed by what it says."""


def announcements(floor: Floor) -> list[str]:
    return [
        line.split(ANNOUNCED, 1)[1].strip()
        for line in floor.output().splitlines()
        if ANNOUNCED in line
    ]


def heard_at(prompt: Path, packets: list[bytes]) -> list[int]:
    """Where (samples into the caller's RTP) the caller heard the prompt: each place its
    loudest 20 ms comes back (audioop.findfit finds the best fit; a fit that is not the
    same audio ends the search)."""
    with wave.open(str(prompt)) as audio:
        raw = audio.readframes(audio.getnframes())
    starts = range(0, len(raw) // 2 - SAMPLES_PER_PACKET + 1, SAMPLES_PER_PACKET)
    loudest = max(
        starts, key=lambda at: audioop.rms(raw[2 * at : 2 * (at + SAMPLES_PER_PACKET)], 2)
    )
    probe = raw[2 * loudest : 2 * (loudest + SAMPLES_PER_PACKET)]
    stream = caller_heard(packets)
    found: list[int] = []
    start = 0
    while len(stream) - 2 * start >= len(probe):
        offset, _factor = audioop.findfit(stream[2 * start :], probe)
        at = start + offset
        if similarity(probe, stream[2 * at : 2 * at + len(probe)]) < SAME_AUDIO:
            break
        found.append(at)
        start = at + SAMPLES_PER_PACKET
    return found


def caller_heard(packets: list[bytes]) -> bytes:
    """Kokan's PCMA to the caller as 16-bit samples, each packet at its RTP timestamp."""
    timed = [
        (int.from_bytes(p[4:8], "big"), p[RTP_HEADER:])
        for p in packets
        if len(p) > RTP_HEADER and p[1] & 0x7F == PCMA
    ]
    if not timed:
        return b""
    first = min(ts for ts, _payload in timed)
    samples = [0] * (max(ts for ts, _payload in timed) - first + SAMPLES_PER_PACKET)
    for ts, payload in timed:
        at = ts - first
        samples[at : at + len(payload)] = [alaw_to_linear(b) for b in payload]
    return b"".join(sample.to_bytes(2, "little", signed=True) for sample in samples)


def similarity(one: bytes, other: bytes) -> float:
    """Normalised correlation of two 16-bit fragments: 1.0 for the same audio."""
    first, second = array.array("h", one), array.array("h", other)
    dot = sum(a * b for a, b in zip(first, second, strict=True))
    norm = math.sqrt(sum(a * a for a in first) * sum(b * b for b in second))
    return dot / norm if norm else 0.0


def times_of_announcements(floor: Floor, count: int, deadline_s: float) -> list[float]:
    """When (monotonic) the worker logged each of the first `count` announcements, polled."""
    seen: list[float] = []
    deadline = time.monotonic() + deadline_s
    while len(seen) < count:
        found = len(announcements(floor))
        while len(seen) < min(found, count):
            seen.append(time.monotonic())
        if len(seen) >= count:
            break
        assert time.monotonic() < deadline, (
            f"{len(seen)} of {count} announcements in {deadline_s} s: " + floor.output()
        )
        time.sleep(POLL_S)
    return seen


def test_a_waiting_sip_caller_hears_their_position_every_announce_period(
    waiting_floor: Callable[..., Floor], caller_ear: CallerEar, database: Database, tmp_path: Path
) -> None:
    # nobody takes the call: the caller waits and is told so
    floor = waiting_floor("kai", announce_every_seconds=ANNOUNCE_EVERY_S)
    caller = start_call(floor, caller_ear, tmp_path, hold_ms=(ANNOUNCE_EVERY_S + 4) * 1000)
    try:
        first, second = times_of_announcements(floor, 2, ANNOUNCE_EVERY_S + DEADLINE_S)
    finally:
        done = caller.finish()
    assert done.returncode == 0, done.stdout.decode(errors="replace") + floor.output()
    assert abs(second - first - ANNOUNCE_EVERY_S) < CADENCE_SLACK_S, (
        second - first,
        floor.output(),
    )
    # no call handled in the queue yet: the position only, as Twilio says it
    [(position, locale)] = announcement_phrases("en", 1, None)
    assert announcements(floor)[:2] == [position, position], floor.output()
    # the caller heard it twice, a period apart (RTP timestamps count 8000 a second),
    # and the music went on in between (RTP kept coming)
    spoken = PromptCache(floor.settings.resolved_data_dir, floor.settings.flows_dir).spoken(
        position, locale
    )
    heard = heard_at(spoken, caller_ear.packets)
    assert len(heard) == 2, heard
    assert abs((heard[1] - heard[0]) / RATE - ANNOUNCE_EVERY_S) < CADENCE_SLACK_S, heard
    assert len(caller_ear.packets) > ANNOUNCE_EVERY_S / PACKET_S * 0.8
    call = wait_for(
        lambda: (c := the_call(database, floor.acd.redis)).outcome == "abandoned" and c,
        "the abandon",
    )
    assert call.queue == "billing"
    assert "Traceback" not in floor.output(), floor.output()


def test_after_a_handled_call_the_announcement_says_the_expected_wait(
    agent_floor: Callable[..., tuple[Floor, Baresip]], caller_ear: CallerEar, tmp_path: Path
) -> None:
    floor, _phone = agent_floor("lin", queue={"announce_every_seconds": ANNOUNCE_EVERY_S})
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first_call = call_in(floor, caller_ear, tmp_path / "first")
    assert first_call.returncode == 0, first_call.stdout.decode(errors="replace") + floor.output()
    acd = floor.acd
    wait_for(lambda: acd.agent("lin").status == "wrap-up", "the agent's wrap-up")
    already = len(announcements(floor))
    view = acd.queue("billing")
    wrapup_s = floor.settings.queues["billing"].wrapup_seconds
    wait_s = expected_wait_s(1, view.stats, view.agents_by_status, wrapup_s)
    assert wait_s is not None, view

    # lin wraps up (the test's wrap-up outlasts it): the next caller waits, and the queue
    # has handled a call, so the caller is told how long
    caller = start_call(floor, caller_ear, tmp_path / "second", hold_ms=3000)
    try:
        wait_for(lambda: len(announcements(floor)) > already, "the second caller's announcement")
    finally:
        done = caller.finish()
    assert done.returncode == 0, done.stdout.decode(errors="replace") + floor.output()
    expected = " ".join(text for text, _locale in announcement_phrases("en", 1, wait_s))
    assert announcements(floor)[already] == expected, floor.output()
    assert "Traceback" not in floor.output(), floor.output()


SURVEYED_FLOW = """
start: mark
language: en
nodes:
  mark:
    type: survey
    flow: survey
    next: billing
  billing:
    type: queue
    queue: billing
    prompt: {en: Please hold.}
"""
SURVEY_KEYS = (Key("4", after_ms=8000), Key("9", after_ms=3000), Key("#", 500), Key("6", 3000))
"""CSAT 4, NPS 9 (then #), CES 6: the first well after the agent has hung up (the test hangs
up the agent's phone within a few seconds of the answer), each while its question plays."""
AGENT_HANGS_UP_BY_S = 6.0
"""The agent's phone is stopped before the first survey key is sent (8 s after the answer)."""
SURVEYED = {
    "flow": SURVEYED_FLOW,
    "flows": {"survey": (REPO_ROOT / "flows" / "survey.yaml").read_text(encoding="utf-8")},
}
"""The floor's flows for a surveyed call: SURVEYED_FLOW naming Kokan's own survey."""


def survey_interaction(database: Database, call_id: str) -> Interaction | None:
    with database.unit_of_work() as session:
        return session.scalar(
            select(Interaction).where(
                Interaction.provider == "sip",
                Interaction.provider_message_id == call_id + SURVEY_SUFFIX,
            )
        )


def test_after_the_agent_hangs_up_the_sip_caller_answers_the_survey_by_keypad(
    bridged_call: Callable[..., Bridged], database: Database
) -> None:
    bridged = bridged_call("mio", keys=SURVEY_KEYS, speak=False, **SURVEYED)
    floor = bridged.floor
    bridged.phone.stop()  # the agent hangs up first
    assert time.monotonic() - bridged.called_at < AGENT_HANGS_UP_BY_S, "the bridge came too late"
    done = bridged.caller.finish()
    # the caller pressed through the survey and Kokan hung up after thanking them
    assert done.returncode == 0, done.stdout.decode(errors="replace") + floor.output()

    acd = floor.acd
    call = wait_for(
        lambda: (c := the_call(database, acd.redis)).ended_at is not None and c, "the call's end"
    )
    assert call.outcome == "answered"
    assert call.survey_flow == "survey"
    assert ("end", "mio") in acd_events(acd, call.provider_call_id)
    assert acd.agent("mio").status == "wrap-up"
    CdrProjector(acd.redis, database, tickets=floor.settings.tickets).drain()
    answers = survey_interaction(database, call.provider_call_id)
    state = CallStore(acd.redis, "sip").load(call.provider_call_id)
    assert answers is not None, (state, floor.output())
    assert state is not None
    assert (state.flow, state.path[-1]) == ("survey", "thanks")
    assert answers.answers == {"csat": "4", "nps": "9", "ces": "6"}
    assert answers.body == "CSAT 4, NPS 9, CES 6"
    assert "continues into the survey" in floor.output()
    assert "Traceback" not in floor.output(), floor.output()


def test_a_sip_caller_who_hangs_up_on_the_agent_gets_no_voice_survey(
    agent_floor: Callable[..., tuple[Floor, Baresip]],
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    floor, phone = agent_floor("nao", **SURVEYED)
    done = call_in(floor, caller_ear, tmp_path)  # the caller hangs up while talking
    assert done.returncode == 0, done.stdout.decode(errors="replace") + floor.output()
    acd = floor.acd
    wait_for(lambda: acd.agent("nao").status == "wrap-up", "the agent's wrap-up")
    call = wait_for(
        lambda: (c := the_call(database, acd.redis)).ended_at is not None and c, "the call's end"
    )
    assert call.outcome == "answered"
    wait_for(
        lambda: "session closed" in phone.output() or "terminated" in phone.output(),
        "the agent's call to end",
    )
    CdrProjector(acd.redis, database, tickets=floor.settings.tickets).drain()
    assert survey_interaction(database, call.provider_call_id) is None
    assert "continues into the survey" not in floor.output()
    assert "Traceback" not in floor.output(), floor.output()


CONSENT = "This call is recorded."


def channel_tone_frames(samples: list[int], hz: int) -> int:
    """20 ms frames of one channel whose energy is mostly the tone at `hz`."""
    return sum(
        1
        for start in range(0, len(samples) - SAMPLES_PER_PACKET + 1, SAMPLES_PER_PACKET)
        if tone_share(samples[start : start + SAMPLES_PER_PACKET], hz) >= TONE_SHARE
    )


def test_a_recorded_queue_keeps_the_bridged_call_as_two_channels_caller_left_agent_right(
    agent_floor: Callable[..., tuple[Floor, Baresip]],
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    floor, _phone = agent_floor(
        "oto", queue={"record": "always", "recording_consent": {"en": CONSENT}}
    )
    done = call_in(floor, caller_ear, tmp_path)
    assert done.returncode == 0, done.stdout.decode(errors="replace") + floor.output()

    recording = stored_recording(database, "the call's recording row")
    call = the_call(database, floor.acd.redis)
    assert recording.kind == "call"
    assert recording.provider_call_id == call.provider_call_id
    assert (recording.agent_id, recording.queue, recording.channels) == ("oto", "billing", 2)
    assert recording.storage_key is not None
    assert recording.duration_ms is not None
    assert recording.duration_ms > TONE_PACKETS * PACKET_S * 1000
    assert job_is_live(recordings_queue(floor.acd.redis), process_job_id(recording.id))

    with wave.open(str(floor.settings.recordings_dir / recording.storage_key)) as audio:
        assert (audio.getnchannels(), audio.getsampwidth()) == (2, 2)
        frames = audio.readframes(audio.getnframes())
    samples = [
        int.from_bytes(frames[i : i + 2], "little", signed=True)
        for i in range(0, len(frames) - 1, 2)
    ]
    left, right = samples[0::2], samples[1::2]
    assert channel_tone_frames(left, CALLER_TONE_HZ) >= TONE_PACKETS, (
        "the caller is not on the left"
    )
    assert channel_tone_frames(right, TONE_HZ) >= TONE_PACKETS, "the agent is not on the right"
    # and each side only: the other's tone is not on it
    assert channel_tone_frames(left, TONE_HZ) < TONE_PACKETS / 5
    assert channel_tone_frames(right, CALLER_TONE_HZ) < TONE_PACKETS / 5
    # the caller was told before the agent was put through (the queue's consent)
    output = floor.output()
    assert output.index("recording consent") < output.index("caller and agent oto bridged")
    spool = floor.settings.resolved_data_dir / "sip-voicemail"
    assert not list(spool.glob("*.wav")), "the legs' files are left behind"
    assert "Traceback" not in floor.output(), floor.output()


def test_a_queue_that_never_records_keeps_no_recording_of_the_bridge(
    agent_floor: Callable[..., tuple[Floor, Baresip]],
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    floor, _phone = agent_floor("pia")  # record: never
    done = call_in(floor, caller_ear, tmp_path)
    assert done.returncode == 0, done.stdout.decode(errors="replace") + floor.output()
    wait_for(lambda: floor.acd.agent("pia").status == "wrap-up", "the agent's wrap-up")
    wait_for(lambda: the_call(database, floor.acd.redis).ended_at is not None, "the call's end")
    with database.unit_of_work() as session:
        assert session.scalars(select(Recording)).all() == []
    assert "recording the call" not in floor.output()


def test_a_waiting_sip_caller_who_presses_the_callback_key_keeps_their_place_and_goes(
    waiting_floor: Callable[..., Floor], caller_ear: CallerEar, database: Database, tmp_path: Path
) -> None:
    floor = waiting_floor("rio", announce_every_seconds=ANNOUNCE_EVERY_S, callback_key="9")
    caller = start_call(
        floor,
        caller_ear,
        tmp_path,
        scenario="kokan_hangs_up.xml",
        keys=[Key("9", 3000)],
        speak=False,
    )
    done = caller.finish()
    assert done.returncode == 0, "the caller got no BYE: " + floor.output()

    # told of the key with their position, as Twilio's hold loop says it
    expected = " ".join(text for text, _locale in announcement_phrases("en", 1, None, "9"))
    assert announcements(floor)[0] == expected, floor.output()
    acd = floor.acd
    call = wait_for(
        lambda: (c := the_call(database, acd.redis)).outcome == "callback" and c, "the callback"
    )
    check_called_back(acd, call.provider_call_id)
    assert "caller asked for a callback, keeping place 1" in floor.output()
    assert "Traceback" not in floor.output(), floor.output()
