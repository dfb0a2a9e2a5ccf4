"""A SIP caller queued by the flow is offered by `kokan router` to an agent whose softphone
(a real baresip) is rung by the `kokan sip` worker holding the caller, and bridged: the
agent's tone reaches the caller's RTP, the caller's voice reaches the agent, and the
hang-up moves the agent to wrap-up. A busy agent (sipp answering 486) sends the call on.
"""

from __future__ import annotations

import math
import signal
import socket
import struct
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from sqlalchemy import select

from acd.events import EventLog
from acd.runtime import apply_config
from acd.services import AcdService
from acd.sip_handoff import ALIVE_TTL_S, OWNER_KEY
from ivr.publishing import publish
from ivr.validator import CheckContext
from kokan.config import Settings
from kokan.db import Database
from recording.models import Recording, RecordingStatus
from tests.conftest import REPO_ROOT, clean_environ
from tests.sip_peers import TONE_HZ, Baresip, Peers, baresip_agents
from tests.test_sip_calls import (
    CALLER,
    DEADLINE_S,
    KOKAN,
    POLL_S,
    SCENARIOS,
    Key,
    _keys_xml,
    _require_espeak,
    _require_sipp,
    fill,
    free_port,
    free_rtp_base,
    publish_flow,
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

BRIDGE_FLOW = """
start: billing
language: en
nodes:
  billing:
    type: queue
    queue: billing
    prompt: {en: Please hold.}
"""


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
class CallerEar:
    """The socket the caller's SDP names: Kokan's RTP to the caller lands here."""

    sock: socket.socket
    packets: list[bytes] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                self.packets.append(self.sock.recv(2048))
            except TimeoutError:
                continue
            except OSError:
                return

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
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    ear = CallerEar(sock)
    thread = threading.Thread(target=ear.run, daemon=True)
    thread.start()
    yield ear
    ear._stop.set()
    thread.join(2)
    sock.close()


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
        flow: str = BRIDGE_FLOW,
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


@dataclass
class Caller:
    """sipp placing the call (SIP) while the ear's socket speaks the caller's tone (RTP)."""

    process: subprocess.Popen[bytes]
    command: list[str]
    speaker: threading.Thread
    log: Path

    def finish(self, timeout_s: float = 40) -> subprocess.CompletedProcess[bytes]:
        try:
            self.process.wait(timeout_s)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.speaker.join(PACKET_S * 10)
        output = self.log.read_bytes()
        return subprocess.CompletedProcess(self.command, self.process.returncode, output, output)


def start_call(
    floor: Floor,
    ear: CallerEar,
    tmp_path: Path,
    *,
    scenario: str = "call.xml",
    hold_ms: int = CALL_MS,
    keys: Sequence[Key] = (),
    speak: bool = True,
) -> Caller:
    """A caller who speaks a tone from the answer on (unless not `speak`) and presses
    `keys`; with call.xml they hang up `hold_ms` later, with kokan_hangs_up.xml they wait
    for Kokan's BYE. A caller with keys does not speak: measured here, sipp plays no
    pcap (the keys) in a call after the `exec command` that tells the test Kokan's RTP
    port."""
    port_file = tmp_path / "kokan-rtp-port"
    voice = (SCENARIOS / "caller_voice.xml").read_text(encoding="utf-8")
    filled = tmp_path / f"caller-{scenario}"
    text = (SCENARIOS / scenario).read_text(encoding="utf-8")
    spoken = fill(voice, port_file=port_file) if speak else ""
    values: dict[str, object] = {"keys": spoken + _keys_xml(keys)}
    if "${hold_ms}" in text:
        values["hold_ms"] = hold_ms
    filled.write_text(fill(text, **values), encoding="utf-8")
    local = free_port()
    command = [
        _require_sipp(),
        f"127.0.0.1:{floor.worker_port}",
        "-sf",
        str(filled),
        "-m",
        "1",
        "-i",
        "127.0.0.1",
        "-p",
        str(local),
        "-mi",
        "127.0.0.1",
        "-mp",
        str(free_rtp_base()),
        "-s",
        "kokan",
        "-timeout",
        "30s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(tmp_path / "sipp-caller-errors.log"),
        "-key",
        "caller",
        CALLER,
        "-key",
        "rtp_sink",
        str(ear.port),
    ]
    log = tmp_path / "sipp-caller.out"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)

    def talk() -> None:
        if not speak:
            return
        deadline = time.monotonic() + DEADLINE_S
        while not (port_file.is_file() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                return
            time.sleep(POLL_S)
        ear.speak(int(port_file.read_text()), SPEAK_MAX_S, until=lambda: process.poll() is not None)

    speaker = threading.Thread(target=talk, daemon=True)
    speaker.start()
    return Caller(process, command, speaker, log)


def call_in(floor: Floor, ear: CallerEar, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    """A caller who speaks a tone for CALL_MS after the answer, then hangs up."""
    return start_call(floor, ear, tmp_path).finish()


def busy_phone(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """sipp as an agent's phone that answers 486 Busy Here to one INVITE."""
    port = free_port()
    process = subprocess.Popen(
        [
            _require_sipp(),
            "-sf",
            str(SCENARIOS / "agent_busy.xml"),
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
    start_floor: Callable[..., Floor],
    baresip_agents: Peers,
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    phone = baresip_agents.agent("aiko")
    floor = start_floor({"aiko": {"queues": ["billing"], "sip_uri": phone.uri}})

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
    start_floor: Callable[..., Floor],
    baresip_agents: Peers,
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    phone = baresip_agents.agent("cho", auto_answer=False)
    floor = start_floor({"cho": {"queues": ["billing"], "sip_uri": phone.uri}})
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
    start_floor: Callable[..., Floor],
    baresip_agents: Peers,
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    phone = baresip_agents.agent("fumi")
    floor = start_floor({"fumi": {"queues": ["billing"], "sip_uri": phone.uri}})
    caller = start_call(floor, caller_ear, tmp_path, scenario="kokan_hangs_up.xml")
    wait_for(lambda: caller_ear.tone_packets() >= TONE_PACKETS, "the agent's voice")
    phone.stop()  # baresip hangs up its call as it exits
    done = caller.finish()
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
    start_floor: Callable[..., Floor],
    baresip_agents: Peers,
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    phone = baresip_agents.agent("gin")
    floor = start_floor({"gin": {"queues": ["billing"], "sip_uri": phone.uri}})
    caller = start_call(floor, caller_ear, tmp_path, scenario="kokan_hangs_up.xml")
    wait_for(lambda: caller_ear.tone_packets() >= TONE_PACKETS, "the agent's voice")

    worker = floor.processes[0]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 0, floor.output()
    assert "Aborted" not in floor.output()
    done = caller.finish()
    assert done.returncode == 0, "the caller got no BYE: " + floor.output()
    wait_for(lambda: "terminated" in phone.output(), "the agent's call to end")
    acd = floor.acd
    wait_for(lambda: acd.agent("gin").status == "wrap-up", "the agent's wrap-up")
    call = the_call(database, acd.redis)
    assert ("end", "gin") in acd_events(acd, call.provider_call_id)


def test_a_caller_lost_with_a_killed_worker_is_ended_not_offered_to_agents(
    start_floor: Callable[..., Floor],
    baresip_agents: Peers,
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    phone = baresip_agents.agent("hana")
    floor = start_floor({"hana": {"queues": ["billing"], "sip_uri": phone.uri}}, available=False)
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
    start_floor: Callable[..., Floor],
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    floor = start_floor(
        {"iku": {"queues": ["billing"], "sip_uri": "sip:iku@127.0.0.1:9"}},
        available=False,
        queue={"max_wait_seconds": MAX_WAIT_S, "on_max_wait": {"action": "voicemail"}},
    )
    # the caller speaks (the ear's tone) all along and hangs up 3 s into the recording
    done = start_call(floor, caller_ear, tmp_path, hold_ms=(MAX_WAIT_S + 3) * 1000).finish()
    assert done.returncode == 0, done.stdout.decode(errors="replace") + floor.output()

    def stored() -> Recording | None:
        with database.unit_of_work() as session:
            return session.scalar(
                select(Recording).where(
                    Recording.provider == "sip", Recording.status == RecordingStatus.STORED
                )
            )

    recording = wait_for(stored, "the voicemail's recording row")
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
    start_floor: Callable[..., Floor],
    caller_ear: CallerEar,
    database: Database,
    tmp_path: Path,
) -> None:
    floor = start_floor(
        {"jun": {"queues": ["billing"], "sip_uri": "sip:jun@127.0.0.1:9"}},
        available=False,
        queue={"max_wait_seconds": MAX_WAIT_S, "on_max_wait": {"action": "callback"}},
    )
    caller = start_call(floor, caller_ear, tmp_path, scenario="kokan_hangs_up.xml")
    done = caller.finish()
    assert done.returncode == 0, "the caller got no BYE: " + floor.output()

    acd = floor.acd
    call = the_call(database, acd.redis)
    task = acd.call(call.provider_call_id)
    assert (task.kind, task.state, task.callback_number) == ("callback", "waiting", CALLER)
    owner = acd.keys.prefix + OWNER_KEY.format(call=call.provider_call_id)
    assert not acd.redis.exists(owner), "the callback is the dialer's now, not the worker's"
    assert "will be called back" in floor.output()
