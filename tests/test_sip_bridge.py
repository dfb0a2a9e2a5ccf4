"""A SIP caller queued by the flow is offered by `kokan router` to an agent whose softphone
(a real baresip) is rung by the `kokan sip` worker holding the caller, and bridged: the
agent's tone reaches the caller's RTP, the caller's voice reaches the agent, and the
hang-up moves the agent to wrap-up. A busy agent (sipp answering 486) sends the call on.
"""

from __future__ import annotations

import math
import signal
import struct
import subprocess
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from acd.events import EventLog
from acd.runtime import apply_config
from acd.services import AcdService
from acd.sip_handoff import ALIVE_TTL_S, OWNER_KEY
from ivr.publishing import publish
from ivr.validator import CheckContext
from kokan.config import Settings
from kokan.db import Database
from tests.conftest import REPO_ROOT, clean_environ
from tests.sip_peers import TONE_HZ, Baresip, Peers, baresip_agents
from tests.test_sip_calls import (
    CALLER,
    DEADLINE_S,
    KOKAN,
    QUEUE_FLOW,
    SCENARIOS,
    Key,
    RtpSink,
    SpeakingCaller,
    _require_espeak,
    _require_sipp,
    free_port,
    free_rtp_base,
    listening,
    publish_flow,
    start_speaking_caller,
    stored_recording,
    the_call,
    wait_for,
)

pytestmark = pytest.mark.media  # real SIP peers: the PostgreSQL pass leaves them out (./run)

__all__ = ["baresip_agents"]  # the fixture, used by name

PCMA = 8
RTP_HEADER = 12
SAMPLES_PER_PACKET = 160
PACKET_S = 0.02
CALLER_TONE_HZ = 500
"""The caller's voice: 500 Hz fits a 20 ms packet exactly (10 periods), unlike the
agent's 1 kHz, so each side's tone is told apart from the other's."""
CALLER_AMPLITUDE = 8000
SPEAK_MAX_S = 30.0
"""The caller speaks from the answer until hanging up, and never longer than this."""
TONE_SHARE = 0.8
"""A packet is the agent's tone when the tone's frequency holds this much of its energy
(music and speech spread theirs over many)."""
TONE_PACKETS = 50
"""One second of the agent's tone at the caller: the bridge carried audio, not a blip."""
CALL_MS = 7000
"""The caller hangs up this long after the answer: the bridge is up well within it."""
MAX_WAIT_S = 10
"""The shortest maximum wait a queue takes."""
WORKER_START_S = 60.0
"""`kokan sip` imports Kokan, speaks its apology and starts pjsua in a second or two; on a
2-core machine shared with a SIP benchmark that took over 15 s."""
WRAPUP_S = 120
"""Longer than the test: the agent is still in wrap-up when it is checked."""


def alaw_to_linear(byte: int) -> int:
    """G.711 A-law to a 16-bit sample (ITU-T G.711's expansion)."""
    value = byte ^ 0x55
    sign = value & 0x80
    exponent = (value >> 4) & 0x07
    mantissa = value & 0x0F
    sample = (mantissa << 4) + 8
    if exponent:
        sample = (sample + 0x100) << (exponent - 1)
    return sample if sign else -sample


def linear_to_alaw(sample: int) -> int:
    """The A-law byte whose expansion is nearest the sample (exact inverse of the above)."""
    return min(range(256), key=lambda byte: abs(alaw_to_linear(byte) - sample))


def tone_payload(hz: int = CALLER_TONE_HZ) -> bytes:
    return bytes(
        linear_to_alaw(int(CALLER_AMPLITUDE * math.sin(2 * math.pi * hz * i / 8000)))
        for i in range(SAMPLES_PER_PACKET)
    )


def tone_share(samples: list[int], hz: int = TONE_HZ, rate: int = 8000) -> float:
    """How much of the samples' energy is at `hz` (Goertzel)."""
    coefficient = 2 * math.cos(2 * math.pi * hz / rate)
    previous = before = 0.0
    for sample in samples:
        previous, before = sample + coefficient * previous - before, previous
    power = previous * previous + before * before - coefficient * previous * before
    energy = sum(s * s for s in samples) * len(samples) / 2
    return power / energy if energy else 0.0


@dataclass
class CallerEar(RtpSink):
    """The socket the caller's SDP names: Kokan's RTP to the caller lands here, and the
    caller's tone goes from here to Kokan."""

    def speak(self, port: int, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        """Send the caller's tone as RTP (PCMA) to Kokan's port, paced at 50 packets/s,
        for `seconds` or `until` the caller is gone."""
        payload = tone_payload()
        ssrc = 0x4B4F4B41
        start = time.monotonic()
        for seq in range(int(seconds / PACKET_S)):
            if until():
                return
            header = bytes([0x80, PCMA]) + struct.pack(">HII", seq, seq * SAMPLES_PER_PACKET, ssrc)
            try:
                self.sock.sendto(header + payload, ("127.0.0.1", port))
            except OSError:
                return
            pause = start + (seq + 1) * PACKET_S - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the stream like a phone, not waiting for anything

    def tone_packets(self) -> int:
        count = 0
        for packet in list(self.packets):
            if len(packet) <= RTP_HEADER or packet[1] & 0x7F != PCMA:
                continue
            samples = [alaw_to_linear(b) for b in packet[RTP_HEADER:]]
            if tone_share(samples) >= TONE_SHARE:
                count += 1
        return count


@pytest.fixture
def caller_ear() -> Iterator[CallerEar]:
    yield from listening(CallerEar)


def heard_tone_frames(phone: Baresip) -> int:
    """20 ms frames of the caller's tone in what the agent's softphone received."""
    found = 0
    for path in phone.received():
        with wave.open(str(path)) as audio:
            frames = audio.readframes(audio.getnframes())
        samples = [
            int.from_bytes(frames[i : i + 2], "little", signed=True)
            for i in range(0, len(frames) - 1, 2)
        ]
        for start in range(0, len(samples) - SAMPLES_PER_PACKET + 1, SAMPLES_PER_PACKET):
            frame = samples[start : start + SAMPLES_PER_PACKET]
            if tone_share(frame, CALLER_TONE_HZ) >= TONE_SHARE:
                found += 1
    return found


@dataclass
class Floor:
    """`kokan sip` and `kokan router` running on one config file, and the ACD they share."""

    settings: Settings
    acd: AcdService
    worker_port: int
    logs: list[Path]
    processes: list[subprocess.Popen[bytes]]

    def output(self) -> str:
        return "".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in self.logs)


@pytest.fixture
def start_floor(
    settings: Settings, database: Database, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[Callable[..., Floor]]:
    _require_espeak()
    _require_sipp()
    processes: list[subprocess.Popen[bytes]] = []

    def start(
        agents: dict[str, dict[str, Any]],
        *,
        available: bool = True,
        queue: dict[str, Any] | None = None,
        flow: str = QUEUE_FLOW,
        flows: dict[str, str] | None = None,
    ) -> Floor:
        """`flow`: the published main flow; `flows`: other flows it names (a survey...)."""
        flows_dir = tmp_path / "flows"
        (flows_dir / "prompts").mkdir(parents=True)
        (flows_dir / "prompts" / "hold.wav").write_bytes(
            (REPO_ROOT / "flows" / "prompts" / "hold.wav").read_bytes()
        )
        port = free_port()
        config = {
            "data_dir": str(settings.data_dir),
            "database_url": settings.database_url,
            "redis_url": settings.redis_url,
            "flows_dir": str(flows_dir),
            "queues": {
                "billing": {
                    "hold_music": "prompts/hold.wav",
                    "strategy": "fixed_order",
                    "wrapup_seconds": WRAPUP_S,
                    "ring_timeout_seconds": 5,
                    "announce_every_seconds": None,
                    **(queue or {}),
                }
            },
            "agents": agents,
            "sip": {"rtp_port": free_rtp_base()},
        }
        config_file = tmp_path / "config.yaml"
        config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        floor_settings = Settings.model_validate(config)
        for name, source in (flows or {}).items():
            (flows_dir / f"{name}.yaml").write_text(source, encoding="utf-8")
            context = CheckContext.for_directory(flows_dir, ["billing"])
            with database.unit_of_work() as session:
                publish(session, name, source, f"flows/{name}.yaml", context, by="test")
        publish_flow(database, floor_settings, flow)
        acd = AcdService(redis_client)
        apply_config(acd, floor_settings)  # as the router does at its start
        for agent_id in agents:
            acd.set_status(agent_id, "available" if available else "offline")
        logs = []
        for name, command in (
            ("sip", ["sip", "--sip-host", "127.0.0.1", "--sip-port", str(port)]),
            ("router", ["router"]),
        ):
            log = tmp_path / f"{name}.log"
            logs.append(log)
            with open(log, "wb") as out:
                processes.append(
                    subprocess.Popen(
                        [*KOKAN, "--config", str(config_file), *command],
                        env=clean_environ(),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        floor = Floor(floor_settings, acd, port, logs, processes)
        wait_for(
            lambda: (
                "SIP endpoint on" in logs[0].read_text(errors="replace")
                or any(p.poll() is not None for p in processes)
            ),
            "the SIP worker to start",
            deadline_s=WORKER_START_S,
        )
        assert all(p.poll() is None for p in processes), floor.output()
        return floor

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_call(
    floor: Floor,
    ear: CallerEar,
    tmp_path: Path,
    *,
    scenario: str = "call.xml",
    hold_ms: int = CALL_MS,
    keys: Sequence[Key] = (),
    speak: bool = True,
) -> SpeakingCaller:
    """A caller who speaks a tone from the answer on (unless not `speak`) and presses
    `keys`; with call.xml they hang up `hold_ms` later, with kokan_hangs_up.xml they wait
    for Kokan's BYE. A caller with keys does not speak: measured here, sipp plays no
    pcap (the keys) in a call after the `exec command` that tells the test Kokan's RTP
    port."""
    return start_speaking_caller(
        floor.worker_port,
        ear,
        tmp_path,
        (lambda port, gone: ear.speak(port, SPEAK_MAX_S, until=gone)) if speak else None,
        scenario=scenario,
        keys=keys,
        hold_ms=hold_ms,
    )


def call_in(floor: Floor, ear: CallerEar, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    """A caller who speaks a tone for CALL_MS after the answer, then hangs up."""
    return start_call(floor, ear, tmp_path).finish()


@pytest.fixture
def agent_floor(
    start_floor: Callable[..., Floor], baresip_agents: Peers
) -> Callable[..., tuple[Floor, Baresip]]:
    """`agent_floor(agent_id, auto_answer=True, **start_floor's options)`: the floor with
    one agent in billing, rung on a softphone (baresip) of its own."""

    def start(agent_id: str, *, auto_answer: bool = True, **options: Any) -> tuple[Floor, Baresip]:
        phone = baresip_agents.agent(agent_id, auto_answer=auto_answer)
        floor = start_floor({agent_id: {"queues": ["billing"], "sip_uri": phone.uri}}, **options)
        return floor, phone

    return start


@pytest.fixture
def waiting_floor(start_floor: Callable[..., Floor]) -> Callable[..., Floor]:
    """`waiting_floor(agent_id, **queue settings)`: the floor whose one agent in billing is
    not available (its phone, port 9, discards), so a caller waits in line."""

    def start(agent_id: str, **queue: Any) -> Floor:
        return start_floor(
            {agent_id: {"queues": ["billing"], "sip_uri": f"sip:{agent_id}@127.0.0.1:9"}},
            available=False,
            queue=queue,
        )

    return start


@dataclass
class Bridged:
    """A caller put through to an agent, both still on the call."""

    floor: Floor
    phone: Baresip
    caller: SpeakingCaller
    called_at: float
    """When (monotonic) the caller dialled."""


@pytest.fixture
def bridged_call(
    agent_floor: Callable[..., tuple[Floor, Baresip]], caller_ear: CallerEar, tmp_path: Path
) -> Callable[..., Bridged]:
    """`bridged_call(agent_id, keys=(), speak=True, **start_floor's options)`: a caller who
    waits for Kokan's BYE, bridged to the agent: the agent's voice has reached them."""

    def call(
        agent_id: str, *, keys: Sequence[Key] = (), speak: bool = True, **options: Any
    ) -> Bridged:
        floor, phone = agent_floor(agent_id, **options)
        caller = start_call(
            floor, caller_ear, tmp_path, scenario="kokan_hangs_up.xml", keys=keys, speak=speak
        )
        called_at = time.monotonic()
        wait_for(lambda: caller_ear.tone_packets() >= TONE_PACKETS, "the agent's voice")
        return Bridged(floor, phone, caller, called_at)

    return call


def busy_phone(
    tmp_path: Path, scenario: str = "agent_busy.xml"
) -> tuple[subprocess.Popen[bytes], int]:
    """sipp as an agent's phone (or a trunk, with trunk_busy.xml) that answers 486 Busy
    Here to one INVITE."""
    port = free_port()
    process = subprocess.Popen(
        [
            _require_sipp(),
            "-sf",
            str(SCENARIOS / scenario),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            "1",
            "-timeout",
            "30s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(tmp_path / "sipp-busy-errors.log"),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, port


def acd_events(acd: AcdService, call_id: str) -> list[tuple[str, str]]:
    return [
        (event.type, event.get("agent"))
        for event in EventLog(acd.redis).all()
        if event.get("call") == call_id
    ]


def check_called_back(acd: AcdService, call_id: str) -> None:
    """The caller left a callback: it waits in the ACD for the dialer, no longer the worker's."""
    task = acd.call(call_id)
    assert (task.kind, task.state, task.callback_number) == ("callback", "waiting", CALLER)
    owner = acd.keys.prefix + OWNER_KEY.format(call=call_id)
    assert not acd.redis.exists(owner), "the callback is the dialer's now, not the worker's"


def check_bridged_and_ended(
    floor: Floor,
    ear: CallerEar,
    phone: Baresip,
    agent_id: str,
    done: subprocess.CompletedProcess[bytes],
    database: Database,
) -> list[tuple[str, str]]:
    assert done.returncode == 0, done.stderr.decode(errors="replace") + floor.output()
    tone = ear.tone_packets()
    assert tone >= TONE_PACKETS, (
        f"the agent's tone reached the caller in {tone} of {len(ear.packets)} packets"
    )
    wait_for(lambda: phone.received(), "the agent's phone to keep what it heard")
    heard = heard_tone_frames(phone)
    assert heard >= TONE_PACKETS, f"the agent heard the caller's tone in {heard} frames"
    acd = floor.acd
    wait_for(lambda: acd.agent(agent_id).status == "wrap-up", "the agent's wrap-up")
    call = wait_for(
        lambda: (c := the_call(database, acd.redis)).ended_at is not None and c,
        "the call's end in its record",
    )
    assert call.answered_at is not None
    assert call.outcome == "answered"
    assert call.queue == "billing"
    events = acd_events(acd, call.provider_call_id)
    assert ("answer", agent_id) in events, events
    assert ("end", agent_id) in events, events
    assert not acd.redis.exists(acd.keys.prefix + OWNER_KEY.format(call=call.provider_call_id))
    assert "Traceback" not in floor.output(), floor.output()
    return events


def test_a_queued_sip_caller_is_bridged_to_an_agents_softphone(
    agent_floor: Callable[..., tuple[Floor, Baresip]],
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    floor, phone = agent_floor("aiko")

    started = time.monotonic()
    done = call_in(floor, caller_ear, tmp_path)
    assert time.monotonic() - started < 30
    events = check_bridged_and_ended(floor, caller_ear, phone, "aiko", done, database)
    kinds = [kind for kind, _ in events]
    assert kinds.index("offer") < kinds.index("answer") < kinds.index("end"), kinds
    assert "Call established" in phone.output()


def test_a_busy_agent_sends_the_call_to_the_next_agent(
    start_floor: Callable[..., Floor],
    baresip_agents: Peers,
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    busy, busy_port = busy_phone(tmp_path)
    try:
        phone = baresip_agents.agent("ben")
        floor = start_floor(
            {
                "ayu": {
                    "queues": ["billing"],
                    "order": 0,
                    "sip_uri": f"sip:ayu@127.0.0.1:{busy_port}",
                },
                "ben": {"queues": ["billing"], "order": 1, "sip_uri": phone.uri},
            }
        )
        done = call_in(floor, caller_ear, tmp_path)
        assert busy.wait(10) == 0, "the busy phone got no INVITE (or no ACK for its 486)"
    finally:
        if busy.poll() is None:
            busy.kill()
            busy.wait()
    events = check_bridged_and_ended(floor, caller_ear, phone, "ben", done, database)
    assert ("no-answer", "ayu") in events, events
    assert events.index(("no-answer", "ayu")) < events.index(("answer", "ben")), events
    assert floor.acd.agent("ayu").status == "not-ready"


def test_a_caller_who_hangs_up_while_the_agent_rings_abandons_and_the_ringing_stops(
    agent_floor: Callable[..., tuple[Floor, Baresip]],
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    floor, phone = agent_floor("cho", auto_answer=False)
    caller = start_call(floor, caller_ear, tmp_path, hold_ms=3500)  # < the 5 s ring
    wait_for(lambda: "Incoming call" in phone.output(), "the agent's phone to ring")
    done = caller.finish()
    assert done.returncode == 0, done.stdout.decode(errors="replace") + floor.output()

    acd = floor.acd
    call = wait_for(
        lambda: (c := the_call(database, acd.redis)).outcome == "abandoned" and c,
        "the abandon in the call's record",
    )
    kinds = [kind for kind, _ in acd_events(acd, call.provider_call_id)]
    assert kinds == ["join", "offer", "abandon"], kinds
    wait_for(lambda: "session closed" in phone.output(), "the agent's phone to stop ringing")
    assert "Call established" not in phone.output()
    assert acd.agent("cho").status == "available"
    assert "Traceback" not in floor.output(), floor.output()


def test_an_agent_who_does_not_answer_in_time_is_skipped_for_the_next(
    start_floor: Callable[..., Floor],
    baresip_agents: Peers,
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    away = baresip_agents.agent("dai", auto_answer=False)
    phone = baresip_agents.agent("emi")
    floor = start_floor(
        {
            "dai": {"queues": ["billing"], "order": 0, "sip_uri": away.uri},
            "emi": {"queues": ["billing"], "order": 1, "sip_uri": phone.uri},
        }
    )
    # the 5 s ring timeout, then the bridge and the talk
    done = start_call(floor, caller_ear, tmp_path, hold_ms=5000 + CALL_MS).finish()
    events = check_bridged_and_ended(floor, caller_ear, phone, "emi", done, database)
    assert events.index(("no-answer", "dai")) < events.index(("answer", "emi")), events
    assert floor.acd.agent("dai").status == "not-ready"
    assert "Call established" not in away.output()


def test_an_agent_who_hangs_up_ends_the_callers_call_and_wraps_up(
    bridged_call: Callable[..., Bridged], database: Database
) -> None:
    bridged = bridged_call("fumi")
    floor = bridged.floor
    bridged.phone.stop()  # baresip hangs up its call as it exits
    done = bridged.caller.finish()
    assert done.returncode == 0, "the caller got no BYE: " + floor.output()

    acd = floor.acd
    wait_for(lambda: acd.agent("fumi").status == "wrap-up", "the agent's wrap-up")
    call = wait_for(
        lambda: (c := the_call(database, acd.redis)).ended_at is not None and c, "the call's end"
    )
    assert call.outcome == "answered"
    events = acd_events(acd, call.provider_call_id)
    assert ("end", "fumi") in events, events
    assert "Traceback" not in floor.output(), floor.output()


def test_stopping_the_worker_with_a_bridged_call_hangs_up_both_and_exits_cleanly(
    bridged_call: Callable[..., Bridged], database: Database
) -> None:
    bridged = bridged_call("gin")
    floor = bridged.floor

    worker = floor.processes[0]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 0, floor.output()
    assert "Aborted" not in floor.output()
    done = bridged.caller.finish()
    assert done.returncode == 0, "the caller got no BYE: " + floor.output()
    wait_for(lambda: "terminated" in bridged.phone.output(), "the agent's call to end")
    acd = floor.acd
    wait_for(lambda: acd.agent("gin").status == "wrap-up", "the agent's wrap-up")
    call = the_call(database, acd.redis)
    assert ("end", "gin") in acd_events(acd, call.provider_call_id)


def test_a_caller_lost_with_a_killed_worker_is_ended_not_offered_to_agents(
    agent_floor: Callable[..., tuple[Floor, Baresip]],
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    floor, phone = agent_floor("hana", available=False)
    caller = start_call(floor, caller_ear, tmp_path, hold_ms=20_000)
    try:
        acd = floor.acd
        call = wait_for(lambda: the_call(database, acd.redis), "the call's record")
        wait_for(lambda: acd.queue("billing").waiting == 1, "the caller in line")
        worker = floor.processes[0]
        worker.kill()  # -9: no hang-up, no ACD report; the call is lost with the worker
        worker.wait(10)
        wait_for(
            lambda: not acd.redis.keys(acd.keys.prefix + "sip:alive:*"),
            "the dead worker's heartbeat to expire",
            deadline_s=ALIVE_TTL_S + DEADLINE_S,
        )

        acd.set_status("hana", "available", route=False)  # the router offers the call now
        wait_for(lambda: acd.call(call.provider_call_id).state == "ended", "the call's end")
    finally:
        caller.process.kill()
        caller.finish()
    assert acd.agent("hana").status == "available"
    assert "Incoming call" not in phone.output(), "an agent was rung for a lost caller"
    kinds = [kind for kind, _ in acd_events(acd, call.provider_call_id)]
    assert kinds == ["join", "offer", "abandon"], kinds


def test_a_caller_past_the_queues_maximum_wait_leaves_a_voicemail(
    waiting_floor: Callable[..., Floor],
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    floor = waiting_floor("iku", max_wait_seconds=MAX_WAIT_S, on_max_wait={"action": "voicemail"})
    # the caller speaks (the ear's tone) all along and hangs up 3 s into the recording
    done = start_call(floor, caller_ear, tmp_path, hold_ms=(MAX_WAIT_S + 3) * 1000).finish()
    assert done.returncode == 0, done.stdout.decode(errors="replace") + floor.output()

    recording = stored_recording(database, "the voicemail's recording row")
    assert recording.kind == "voicemail"
    assert recording.duration_ms is not None
    assert recording.duration_ms > 1000
    acd = floor.acd
    call = wait_for(
        lambda: (c := the_call(database, acd.redis)).outcome == "voicemail" and c,
        "the voicemail outcome",
    )
    assert recording.provider_call_id == call.provider_call_id
    kinds = [kind for kind, _ in acd_events(acd, call.provider_call_id)]
    assert kinds == ["join", "voicemail"], kinds
    assert "Traceback" not in floor.output(), floor.output()


def test_a_caller_past_the_maximum_wait_of_a_callback_queue_is_told_and_let_go(
    waiting_floor: Callable[..., Floor],
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    floor = waiting_floor("jun", max_wait_seconds=MAX_WAIT_S, on_max_wait={"action": "callback"})
    caller = start_call(floor, caller_ear, tmp_path, scenario="kokan_hangs_up.xml")
    done = caller.finish()
    assert done.returncode == 0, "the caller got no BYE: " + floor.output()

    acd = floor.acd
    call = the_call(database, acd.redis)
    check_called_back(acd, call.provider_call_id)
    assert "will be called back" in floor.output()
