"""A supervisor listens in on a live SIP call (`POST /api/acd/calls/<id>/monitor`).

The API's checks run against the real ACD in Redis and the real worker inbox. The media
test runs the real `kokan sip` worker and `kokan router` with a sipp caller speaking a
500 Hz tone, a baresip agent speaking 1 kHz and baresip supervisors speaking 1.5 kHz and
2 kHz; what each one heard, window by window as the supervisor goes listen -> whisper ->
barge, is told apart by frequency (Goertzel on 20 ms frames).
"""

from __future__ import annotations

import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import yaml
from flask.testing import FlaskClient

from acd.errors import UnknownCall
from acd.monitor import LIVE_TTL_S, MonitorRequest, Monitors
from acd.services import AcdService
from acd.sip_handoff import MONITOR
from admin.openapi_http import OPENAPI_PATH
from ivr.sip_pool import PoolMember, PoolRegistry
from kokan.config import AgentSettings, QueueSettings
from kokan.db import Database
from tests.sip_peers import TONE_HZ, Baresip, Peers, baresip_agents, start_baresip
from tests.test_acd_api import Tokens
from tests.test_sip_bridge import (
    CALLER_TONE_HZ,
    PCMA,
    RTP_HEADER,
    SAMPLES_PER_PACKET,
    CallerEar,
    Floor,
    alaw_to_linear,
    busy_phone,
    caller_ear,
    start_call,
    start_floor,
    tone_share,
)
from tests.test_sip_calls import the_call, wait_for
from tests.test_sip_handoff import HeldCall, error_id_of, hold_sip_call

__all__ = ["baresip_agents", "caller_ear", "start_floor"]  # fixtures, used by name

AGENT_HZ = TONE_HZ
SUPERVISOR_HZ = 1500
"""The supervisor's voice: like the others a whole number of periods in 20 ms, so the
three tones fall on separate Goertzel bins with no leakage between them."""
OWN_PHONE_HZ = 2000
PRESENT = 0.2
"""A frame carries a tone when the tone holds this much of its energy (two mixed tones of
one level hold about half each)."""
HEARD_SHARE = 0.6
"""A tone heard in a window: in this share of its frames (the first ones may still be
the previous mode's audio, a jitter buffer behind)."""
STRAY_FRAMES = 2
"""Frames a tone may show up in where it must not be heard: none is expected."""
WINDOW_S = 1.2
"""Audio kept per mode: 60 frames, plenty to tell heard from not heard."""
SETTLE_FRAMES = 10
"""200 ms skipped at a window's start: audio decoded then may predate the new wiring."""
WAV_BYTES_PER_S = 8000 * 2


# ---- the API ---------------------------------------------------------------------------


@pytest.fixture
def bridged(redis_client: redis.Redis) -> HeldCall:
    """A call answered by agent aoi and held by a live SIP worker; `sue` is a supervisor
    who is also an agent with a phone."""
    service = AcdService(redis_client)
    service.configure(
        {"billing": QueueSettings()},
        {
            "aoi": AgentSettings(queues=["billing"], sip_uri="sip:aoi@127.0.0.1:5091"),
            "sue": AgentSettings(sip_uri="sip:sue@127.0.0.1:5092"),
        },
    )
    return hold_sip_call(service, redis_client, "mon", answer_by="aoi")


def test_a_supervisor_starts_changes_and_stops_a_monitor_through_the_workers_inbox(
    client: FlaskClient, database: Database, bridged: HeldCall
) -> None:
    tokens = Tokens(database)
    path = f"/api/acd/calls/{bridged.call_id}/monitor"
    assert error_id_of(client.get(path, headers=tokens["sue"]), 404) == "acd-no-monitor"

    started = client.post(path, json={"mode": "listen"}, headers=tokens["sue"])
    assert started.status_code == 202, started.get_json()
    view = started.get_json()
    assert view["status"] == "requested"
    assert view["uri"] == "sip:sue@127.0.0.1:5092"  # sue's own phone, as agent sue
    assert view["by"] == "sue"
    (message,) = bridged.handoff.take(bridged.worker)
    assert (message.kind, message.call_id, message.action, message.uri) == (
        MONITOR,
        bridged.call_id,
        "listen",
        "sip:sue@127.0.0.1:5092",
    )
    ttl = bridged.service.redis.ttl(bridged.service.keys.prefix + f"sip:monitor:{bridged.call_id}")
    assert 0 < ttl <= LIVE_TTL_S

    # another phone may not take over a live monitor; the same one changes its mode
    other = client.post(
        path, json={"mode": "barge", "uri": "sip:boss@127.0.0.1:5093"}, headers=tokens["root"]
    )
    assert error_id_of(other, 409) == "acd-monitor-busy"
    assert bridged.handoff.take(bridged.worker) == []
    whisper = client.post(path, json={"mode": "whisper"}, headers=tokens["root"])
    assert whisper.status_code == 202, whisper.get_json()
    assert whisper.get_json()["mode"] == "whisper"
    assert whisper.get_json()["uri"] == "sip:sue@127.0.0.1:5092"
    (change,) = bridged.handoff.take(bridged.worker)
    assert (change.action, change.uri) == ("whisper", "sip:sue@127.0.0.1:5092")

    shown = client.get(path, headers=tokens["root"]).get_json()
    assert (shown["status"], shown["mode"], shown["applied_mode"]) == (
        "requested",
        "whisper",
        None,
    )
    stopped = client.delete(path, headers=tokens["sue"])
    assert stopped.status_code == 202
    (stop,) = bridged.handoff.take(bridged.worker)
    assert stop.action == "stop"

    # once the worker says the leg ended, a new monitor may name another phone
    Monitors(bridged.service).report(bridged.call_id, "ended", message="the supervisor hung up")
    again = client.post(
        path, json={"mode": "barge", "uri": "sip:boss@127.0.0.1:5093"}, headers=tokens["root"]
    )
    assert again.status_code == 202, again.get_json()
    assert again.get_json()["uri"] == "sip:boss@127.0.0.1:5093"
    assert again.get_json()["by"] == "root"


def test_bad_monitor_requests_are_refused_clearly_and_send_nothing(
    client: FlaskClient, database: Database, bridged: HeldCall, redis_client: redis.Redis
) -> None:
    tokens = Tokens(database)
    path = f"/api/acd/calls/{bridged.call_id}/monitor"
    assert error_id_of(client.post(path, json={"mode": "listen"}), 401) == "authentication-required"
    agent = client.post(path, json={"mode": "listen"}, headers=tokens["aiko"])
    assert error_id_of(agent, 403) == "role-forbidden"
    for body in (
        {"mode": "spy"},
        {},
        {"mode": "listen", "uri": "tel:+81312345678"},
        {"mode": "listen", "uri": "sip:a@b>\r\nX-Evil: 1"},
        {"mode": "listen", "uri": "sip:" + "a" * 300},
        {"mode": "listen", "volume": 3},
    ):
        answer = client.post(path, json=body, headers=tokens["sue"])
        assert error_id_of(answer, 400) == "acd-invalid-input", body
    assert (
        "mode"
        in client.post(path, json={"mode": "spy"}, headers=tokens["sue"]).get_json()["message"]
    )
    # root is no agent: without a uri there is no phone to ring
    no_uri = client.post(path, json={"mode": "listen"}, headers=tokens["root"])
    assert error_id_of(no_uri, 400) == "acd-monitor-no-uri"
    unknown = client.post(
        "/api/acd/calls/CA-nope/monitor", json={"mode": "listen"}, headers=tokens["sue"]
    )
    assert error_id_of(unknown, 404) == "acd-unknown-call"
    assert bridged.handoff.take(bridged.worker) == []

    # the worker's last report says it is full: refused before ringing anyone
    PoolRegistry(redis_client).report(
        PoolMember(bridged.worker, "127.0.0.1", 5060, capacity=4, live_calls=4, pid=1)
    )
    full = client.post(path, json={"mode": "listen"}, headers=tokens["sue"])
    assert error_id_of(full, 409) == "acd-monitor-no-slot"
    PoolRegistry(redis_client).forget(bridged.worker)

    # a worker gone (no heartbeat) holds no call to listen to
    redis_client.delete(bridged.service.keys.prefix + f"sip:alive:{bridged.worker}")
    gone = client.post(path, json={"mode": "listen"}, headers=tokens["sue"])
    assert error_id_of(gone, 409) == "acd-call-not-sip-bridged"
    assert bridged.handoff.take(bridged.worker) == []


def test_only_calls_talking_to_an_agent_over_sip_can_be_monitored(
    client: FlaskClient, database: Database, redis_client: redis.Redis
) -> None:
    tokens = Tokens(database)
    service = AcdService(redis_client)
    service.configure({"billing": QueueSettings()}, {"ken": AgentSettings(queues=["billing"])})
    waiting = f"CA{uuid.uuid4().hex}"
    service.join(waiting, "billing", route=False)
    answer = client.post(
        f"/api/acd/calls/{waiting}/monitor",
        json={"mode": "listen", "uri": "sip:boss@127.0.0.1"},
        headers=tokens["sue"],
    )
    assert error_id_of(answer, 409) == "acd-call-not-sip-bridged"
    # a Twilio call talking to its agent has no SIP worker
    (offer,) = service.set_status("ken", "available")
    service.answer(offer.call_id, "ken")
    twilio = client.post(
        f"/api/acd/calls/{waiting}/monitor",
        json={"mode": "listen", "uri": "sip:boss@127.0.0.1"},
        headers=tokens["sue"],
    )
    assert error_id_of(twilio, 409) == "acd-call-not-sip-bridged"
    service.hangup(waiting)
    ended = client.post(
        f"/api/acd/calls/{waiting}/monitor",
        json={"mode": "listen", "uri": "sip:boss@127.0.0.1"},
        headers=tokens["sue"],
    )
    assert error_id_of(ended, 409) == "acd-call-ended"
    with pytest.raises(UnknownCall):
        service.call("CA-never")


def test_the_documented_body_is_the_models() -> None:
    document = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    post = document["paths"]["/api/acd/calls/{call_id}/monitor"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == set(MonitorRequest.model_fields)
    assert schema["properties"]["mode"]["enum"] == ["listen", "whisper", "barge"]


# ---- real peers ------------------------------------------------------------------------


def _frames(samples: list[int]) -> list[list[int]]:
    return [
        samples[i : i + SAMPLES_PER_PACKET]
        for i in range(0, len(samples) - SAMPLES_PER_PACKET + 1, SAMPLES_PER_PACKET)
    ]


@dataclass
class Heard:
    """What one ear got in one window: 20 ms frames, and per tone how many carried it."""

    frames: int
    counts: dict[int, int]

    def hears(self, hz: int) -> bool:
        return self.frames > 0 and self.counts[hz] >= HEARD_SHARE * self.frames

    def never(self, hz: int) -> bool:
        return self.counts[hz] <= STRAY_FRAMES


TONES = (CALLER_TONE_HZ, AGENT_HZ, SUPERVISOR_HZ, OWN_PHONE_HZ)


def _heard(frames: list[list[int]]) -> Heard:
    frames = frames[SETTLE_FRAMES:]
    counts = {hz: sum(tone_share(f, hz) >= PRESENT for f in frames) for hz in TONES}
    return Heard(len(frames), counts)


def _ear_window(ear: CallerEar, start: int, end: int) -> Heard:
    frames = [
        [alaw_to_linear(b) for b in packet[RTP_HEADER:]]
        for packet in ear.packets[start:end]
        if len(packet) > RTP_HEADER and packet[1] & 0x7F == PCMA
    ]
    return _heard(frames)


class Recording:
    """A baresip's received WAV while it is being written: marks are file sizes, read
    back as sample positions once the file is closed (its header then says its length)."""

    def __init__(self, phone: Baresip) -> None:
        self.phone = phone

    def path(self) -> Path:
        found = wait_for(lambda: self.phone.received(), f"{self.phone.user}'s received audio")
        assert len(found) == 1, found
        path: Path = found[0]
        return path

    def size(self) -> int:
        return self.path().stat().st_size

    def grown(self, since: int, seconds: float) -> bool:
        return self.size() >= since + int(seconds * WAV_BYTES_PER_S)

    def window(self, start: int, end: int) -> Heard:
        path = self.path()
        with wave.open(str(path)) as audio:
            frames = audio.readframes(audio.getnframes())
        header = path.stat().st_size - len(frames)
        samples = [
            int.from_bytes(frames[i : i + 2], "little", signed=True)
            for i in range(0, len(frames) - 1, 2)
        ]
        first, last = ((max(0, mark - header)) // 2 for mark in (start, end))
        return _heard(_frames(samples[first:last]))


def test_a_supervisor_listens_whispers_barges_hangs_up_and_is_hung_up_with_the_call(
    start_floor: Callable[..., Floor],
    baresip_agents: Peers,
    caller_ear: CallerEar,
    client: FlaskClient,
    database: Database,
    tmp_path: Path,
) -> None:
    tokens = Tokens(database)
    agent = baresip_agents.agent("aoi")
    boss = start_baresip(tmp_path / "baresip-boss", "boss", hz=SUPERVISOR_HZ)
    own = start_baresip(tmp_path / "baresip-sue", "sue", hz=OWN_PHONE_HZ)
    baresip_agents.started += [boss, own]
    floor = start_floor(
        {"aoi": {"queues": ["billing"], "sip_uri": agent.uri}, "sue": {"sip_uri": own.uri}}
    )
    caller = start_call(floor, caller_ear, tmp_path, scenario="kokan_hangs_up.xml")
    wait_for(lambda: caller_ear.tone_packets() >= 10, "the caller to hear the agent")
    call_id = the_call(database, floor.acd.redis).provider_call_id
    path = f"/api/acd/calls/{call_id}/monitor"

    def monitor(mode: str, user: str, **extra: str) -> None:
        answer = client.post(path, json={"mode": mode, **extra}, headers=tokens[user])
        assert answer.status_code == 202, answer.get_json()
        wait_for(
            lambda: (
                (view := client.get(path, headers=tokens[user]).get_json())["status"] == "active"
                and view["applied_mode"] == mode
            ),
            f"the supervisor's leg wired for {mode}",
        )

    def window(phones: list[Recording]) -> tuple[tuple[int, int], list[tuple[int, int]]]:
        """Marks before and after WINDOW_S of audio at the caller and at each phone."""
        ear_start = len(caller_ear.packets)
        starts = [phone.size() for phone in phones]
        wait_for(
            lambda: (
                len(caller_ear.packets) >= ear_start + WINDOW_S * 50
                and all(p.grown(s, WINDOW_S) for p, s in zip(phones, starts, strict=True))
            ),
            "a window of audio",
        )
        ends = [phone.size() for phone in phones]
        return (ear_start, len(caller_ear.packets)), list(zip(starts, ends, strict=True))

    # a busy supervisor phone: the monitor fails with a reason, the call goes on
    busy, busy_port = busy_phone(tmp_path)
    try:
        refused = client.post(
            path,
            json={"mode": "listen", "uri": f"sip:busy@127.0.0.1:{busy_port}"},
            headers=tokens["sue"],
        )
        assert refused.status_code == 202, refused.get_json()
        failed = wait_for(
            lambda: (
                (v := client.get(path, headers=tokens["sue"]).get_json())["status"] == "failed"
                and v
            ),
            "the busy supervisor's monitor to fail",
        )
        assert failed["error_id"] == "sip-monitor-not-answered", failed
        assert "486" in failed["message"], failed
        assert busy.wait(10) == 0, "the busy phone got no INVITE (or no ACK for its 486)"
    finally:
        if busy.poll() is None:
            busy.kill()
            busy.wait()
    assert floor.acd.call(call_id).state == "connected"

    agent_ear, boss_ear = Recording(agent), Recording(boss)
    windows: dict[str, tuple[tuple[int, int], list[tuple[int, int]]]] = {}
    for mode in ("listen", "whisper", "barge"):
        extra = {"uri": boss.uri} if mode == "listen" else {}
        monitor(mode, "sue", **extra)
        windows[mode] = window([agent_ear, boss_ear])

    boss.stop()  # the supervisor hangs up (baresip sends its BYE as it exits)
    gone = wait_for(
        lambda: (
            (v := client.get(path, headers=tokens["sue"]).get_json())["status"] == "ended" and v
        ),
        "the monitor to end",
    )
    assert gone["message"] == "the supervisor hung up"
    assert floor.acd.call(call_id).state == "connected"  # nothing else changed
    after_boss, (after_agent,) = window([agent_ear])

    monitor("listen", "sue")  # no uri: sue's own phone, as agent sue
    own_ear = Recording(own)
    after_own, (own_window,) = window([own_ear])

    agent.stop()  # the agent hangs up: the call ends, and with it the supervisor's leg
    done = caller.finish()
    assert done.returncode == 0, "the caller got no BYE: " + floor.output()
    wait_for(lambda: "terminated" in own.output(), "sue's phone to be hung up")
    ended = wait_for(
        lambda: (
            (v := client.get(path, headers=tokens["sue"]).get_json())["status"] == "ended" and v
        ),
        "the monitor to end with the call",
    )
    assert ended["message"] == "the call ended"
    wait_for(lambda: "terminated" in agent.output() and agent_ear.path(), "the agent's file")

    report: dict[str, dict[str, Heard]] = {}
    for mode, ((ear_start, ear_end), ((a0, a1), (b0, b1))) in windows.items():
        report[mode] = {
            "caller": _ear_window(caller_ear, ear_start, ear_end),
            "agent": agent_ear.window(a0, a1),
            "boss": boss_ear.window(b0, b1),
        }
    detail = f"{report}\n{floor.output()}"
    for mode, heard in report.items():
        assert heard["boss"].hears(CALLER_TONE_HZ), (mode, detail)
        assert heard["boss"].hears(AGENT_HZ), (mode, detail)
        assert heard["caller"].hears(AGENT_HZ), (mode, detail)
        assert heard["agent"].hears(CALLER_TONE_HZ), (mode, detail)
    assert report["listen"]["caller"].never(SUPERVISOR_HZ), detail
    assert report["listen"]["agent"].never(SUPERVISOR_HZ), detail
    assert report["whisper"]["agent"].hears(SUPERVISOR_HZ), detail
    assert report["whisper"]["caller"].never(SUPERVISOR_HZ), detail
    assert report["barge"]["agent"].hears(SUPERVISOR_HZ), detail
    assert report["barge"]["caller"].hears(SUPERVISOR_HZ), detail

    # after the supervisor hung up, caller and agent still talk, without the supervisor
    caller_after = _ear_window(caller_ear, *after_boss)
    agent_after = agent_ear.window(*after_agent)
    assert caller_after.hears(AGENT_HZ), detail
    assert caller_after.never(SUPERVISOR_HZ), detail
    assert agent_after.hears(CALLER_TONE_HZ), detail
    assert agent_after.never(SUPERVISOR_HZ), detail
    # sue's own phone heard both sides, and nobody heard it
    own_heard = own_ear.window(*own_window)
    assert own_heard.hears(CALLER_TONE_HZ), detail
    assert own_heard.hears(AGENT_HZ), detail
    assert _ear_window(caller_ear, *after_own).never(OWN_PHONE_HZ), detail
    assert "Traceback" not in floor.output(), floor.output()
