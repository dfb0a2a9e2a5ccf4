"""`kokan sip` answering real SIP calls from sipp on 127.0.0.1: prompts as RTP, keys by RFC
2833, voicemail, queue, hang-ups and SIGTERM with calls up."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import yaml
from sqlalchemy import select

from acd.events import EventLog
from acd.runtime import apply_config
from acd.services import AcdService
from bench import local_sip
from bench.local_sip import free_port_run
from ivr.call_store import LOCK_KEY, CallStore
from ivr.engine import CallState
from ivr.publishing import publish
from ivr.validator import CheckContext
from kokan.config import RTP_PORTS_PER_CALL, SIP_MAX_CALLS, QueueSettings, Settings
from kokan.db import Database
from recording.models import Recording, RecordingStatus
from recording.services import job_is_live, process_job_id, recordings_queue
from tests.conftest import REPO_ROOT, clean_environ, run_kokan
from tickets.cdr import CdrProjector
from tickets.models import Call

pytestmark = pytest.mark.media  # real SIP peers: the PostgreSQL pass leaves them out (./run)

SCENARIOS = Path(__file__).parent / "sip"
KOKAN = (sys.executable, "-m", "kokan")
PCAPS = Path("/usr/share/sip-tester")
CALLER = "0312345678"
DEADLINE_S = 15.0
POLL_S = 0.05
RTP_PORTS = RTP_PORTS_PER_CALL * SIP_MAX_CALLS
"""What a worker takes from its RTP base (kokan.config.RTP_PORTS_PER_CALL)."""
PCMA = 8
PCMA_SILENCE = 0xD5
"""A-law's zero sample: a packet of only this byte carries no prompt."""
PCAP_NAMES = {"#": "pound", "*": "star"}
"""sipp's pcap file names for the keys that are not digits."""
SPEAKER_STOP_S = 1.0
"""A caller's speaking thread stops within a packet of sipp's end; this only bounds a hang."""

MENU_FLOW = """
start: menu
language: en
nodes:
  menu:
    type: menu
    prompt: {en: Press one for sales.}
    options: {"1": sales}
    timeout: 10
    on_failure: bye
  sales:
    type: say
    text: {en: Sales.}
    next: menu2
  menu2:
    type: menu
    prompt: {en: Press two.}
    options: {"2": menu3}
    timeout: 10
    on_failure: bye
  menu3:
    type: menu
    prompt: {en: Thank you. Press nine.}
    options: {"9": bye}
    timeout: 10
    on_failure: bye
  bye:
    type: hangup
"""

VOICEMAIL_FLOW = """
start: message
language: en
nodes:
  message:
    type: voicemail
    prompt: {en: Leave a message.}
    max_length: 30
    finish_on_key: "#"
"""

TIMEOUT_FLOW = """
start: menu
language: en
nodes:
  menu:
    type: menu
    prompt: {en: Press one.}
    options: {"1": bye}
    timeout: 1
    retries: 2
    on_failure: bye
  bye:
    type: hangup
    prompt: {en: Goodbye.}
"""

QUEUE_FLOW = """
start: billing
language: en
nodes:
  billing:
    type: queue
    queue: billing
    prompt: {en: Please hold.}
"""


def _require_sipp() -> str:
    found = shutil.which("sipp")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("sipp is missing (Debian package sip-tester, in run's SYSTEM_PACKAGES)")
        pytest.skip("sipp is not installed (Debian package sip-tester)")
    return found


def _require_espeak() -> None:
    if shutil.which("espeak-ng") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("espeak-ng is missing (Debian package espeak-ng)")
        pytest.skip("espeak-ng is not installed")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both)."""
    return free_port_run(1, *local_sip.SIP_PORTS, tcp=True)


def free_rtp_base() -> int:
    """RTP_PORTS consecutive free UDP ports (pjsua binds them all at start)."""
    return free_port_run(RTP_PORTS, *local_sip.RTP_PORTS, tcp=False)


def wait_for(condition: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class RtpReceiver:
    """A UDP socket that the caller's SDP names, read on a thread of its own (`listening`):
    each packet Kokan sends the caller goes to `heard`."""

    sock: socket.socket
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def heard(self, packet: bytes) -> None:
        raise NotImplementedError

    def run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                packet = self.sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            self.heard(packet)


Receiver = TypeVar("Receiver", bound=RtpReceiver)


def listening(make: Callable[[socket.socket], Receiver]) -> Iterator[Receiver]:
    """A receiver fixture's body: a socket on 127.0.0.1 read until the test ends, then closed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    receiver = make(sock)
    thread = threading.Thread(target=receiver.run, daemon=True)
    thread.start()
    yield receiver
    receiver._stop.set()
    thread.join(2)
    sock.close()


@dataclass
class RtpSink(RtpReceiver):
    """Kokan's RTP to the caller, kept and counted."""

    packets: list[bytes] = field(default_factory=list)

    def heard(self, packet: bytes) -> None:
        self.packets.append(packet)

    def voiced(self) -> int:
        """PCMA packets carrying something other than silence: a prompt was playing."""
        return sum(
            1
            for p in self.packets
            if len(p) > 12 and p[1] & 0x7F == PCMA and any(b != PCMA_SILENCE for b in p[12:])
        )


@pytest.fixture
def rtp_sink() -> Iterator[RtpSink]:
    yield from listening(RtpSink)


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def sip_settings(settings: Settings, tmp_path: Path) -> Settings:
    flows_dir = tmp_path / "flows"
    (flows_dir / "prompts").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "flows" / "prompts" / "hold.wav", flows_dir / "prompts")
    return settings.model_copy(update={"flows_dir": flows_dir})


def publish_flow(database: Database, settings: Settings, source: str) -> None:
    context = CheckContext.for_directory(settings.flows_dir, ["billing"])
    with database.unit_of_work() as session:
        publish(session, "main", source, "flows/main.yaml", context, by="test")


@pytest.fixture
def start_worker(
    sip_settings: Settings, tmp_path: Path, redis_client: redis.Redis
) -> Iterator[Callable[..., Worker]]:
    _require_espeak()
    started: list[Worker] = []

    def start(
        host: str = "127.0.0.1", public: str | None = None, sip: dict[str, Any] | None = None
    ) -> Worker:
        """`sip`: more of the worker's `sip` settings (a trunk, the transfer mode...)."""
        port = free_port()
        config = {
            "data_dir": str(sip_settings.data_dir),
            "database_url": sip_settings.database_url,
            "redis_url": sip_settings.redis_url,
            "flows_dir": str(sip_settings.flows_dir),
            "queues": {"billing": {"hold_music": "prompts/hold.wav"}},
            "sip": {"rtp_port": free_rtp_base(), "public_address": public, **(sip or {})},
        }
        config_file = tmp_path / f"config-{port}.yaml"
        config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        log = tmp_path / f"worker-{port}.log"
        options = ["--sip-host", host, "--sip-port", str(port)]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [*KOKAN, "--config", str(config_file), "sip", *options],
                env=clean_environ(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(process, port, log)
        started.append(worker)
        wait_for(
            lambda: "SIP endpoint on" in worker.output() or process.poll() is not None,
            "the SIP worker to start",
        )
        assert process.poll() is None, worker.output()
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
            try:
                worker.process.wait(10)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()


@dataclass(frozen=True)
class Key:
    """A key the caller presses `after_ms` after the step before it, by RFC 2833 or SIP INFO."""

    key: str
    after_ms: int = 1000
    info: bool = False


def fill(template: str, **values: object) -> str:
    """Our ${name} placeholders only: sipp's own [$variable] syntax stays as it is."""
    for name, value in values.items():
        template = template.replace("${" + name + "}", str(value))
    assert "${" not in template, template
    return template


def _keys_xml(keys: Sequence[Key]) -> str:
    parts = []
    for index, key in enumerate(keys):
        fragment = (SCENARIOS / ("key_info.xml" if key.info else "key_rfc2833.xml")).read_text()
        pcap = PCAPS / f"dtmf_2833_{PCAP_NAMES.get(key.key, key.key)}.pcap"
        parts.append(fill(fragment, after_ms=key.after_ms, pcap=pcap, key=key.key, cseq=2 + index))
    return "".join(parts)


def caller_command(
    worker_port: int,
    scenario: Path,
    sink_port: int,
    errors: Path,
    *,
    timeout_s: int = 30,
    local: int | None = None,
) -> list[str]:
    """sipp placing one call from 127.0.0.1 as CALLER to the worker, its SDP naming
    `sink_port` for Kokan's RTP; a failure's reason goes to `errors`."""
    return [
        _require_sipp(),
        f"127.0.0.1:{worker_port}",
        "-sf",
        str(scenario),
        "-m",
        "1",
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port() if local is None else local),
        "-mi",
        "127.0.0.1",
        "-mp",
        str(free_rtp_base()),
        "-s",
        "kokan",
        "-timeout",
        f"{timeout_s}s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(errors),
        "-key",
        "caller",
        CALLER,
        "-key",
        "rtp_sink",
        str(sink_port),
    ]


@dataclass
class SpeakingCaller:
    """sipp placing the call (SIP) while a thread speaks the caller's voice (RTP)."""

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
            self.speaker.join(SPEAKER_STOP_S)
        output = self.log.read_bytes()
        return subprocess.CompletedProcess(self.command, self.process.returncode, output, output)


Speak = Callable[[int, Callable[[], bool]], None]
"""The caller's voice: sent to Kokan's RTP port until the given test says the call is over."""


def start_speaking_caller(
    worker_port: int,
    receiver: RtpReceiver,
    tmp_path: Path,
    speak: Speak | None,
    *,
    scenario: str = "kokan_hangs_up.xml",
    keys: Sequence[Key] = (),
    hold_ms: int | None = None,
    name: str = "caller",
) -> SpeakingCaller:
    """sipp calls with `scenario` and presses `keys`, its SDP naming the receiver's socket;
    with `speak`, caller_voice.xml tells the test Kokan's RTP port and `speak` talks to it
    from that socket (a phone's media is one socket both ways) until sipp has finished."""
    port_file = tmp_path / "kokan-rtp-port"
    voice = (SCENARIOS / "caller_voice.xml").read_text(encoding="utf-8")
    text = (SCENARIOS / scenario).read_text(encoding="utf-8")
    values: dict[str, object] = {
        "keys": (fill(voice, port_file=port_file) if speak else "") + _keys_xml(keys)
    }
    if hold_ms is not None:
        values["hold_ms"] = hold_ms
    filled = tmp_path / f"{name}-{scenario}"
    filled.write_text(fill(text, **values), encoding="utf-8")
    errors = tmp_path / f"sipp-{name}-errors.log"
    command = caller_command(worker_port, filled, receiver.port, errors)
    log = tmp_path / f"sipp-{name}.out"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)

    def talk() -> None:
        if speak is None:
            return
        deadline = time.monotonic() + DEADLINE_S
        while not (port_file.is_file() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                return
            time.sleep(POLL_S)
        speak(int(port_file.read_text()), lambda: process.poll() is not None)

    speaker = threading.Thread(target=talk, daemon=True)
    speaker.start()
    return SpeakingCaller(process, command, speaker, log)


def sipp(
    worker: Worker,
    scenario: str,
    tmp_path: Path,
    sink: RtpSink,
    keys: Sequence[Key] = (),
    *,
    hold_ms: int = 500,
    background: bool = False,
) -> subprocess.Popen[bytes] | subprocess.CompletedProcess[bytes]:
    local = free_port()
    filled = tmp_path / f"{local}-{scenario}"
    text = (SCENARIOS / scenario).read_text(encoding="utf-8")
    filled.write_text(fill(text, keys=_keys_xml(keys), hold_ms=hold_ms), encoding="utf-8")
    errors = tmp_path / f"sipp-{local}-errors.log"
    command = caller_command(worker.port, filled, sink.port, errors, timeout_s=20, local=local)
    command += ["-trace_logs", "-log_file", str(tmp_path / f"sipp-{local}.log")]
    if background:
        return subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    return subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=30, check=False)


def sipp_log(tmp_path: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in tmp_path.glob("sipp-*.log"))


def the_call(database: Database, redis_client: redis.Redis) -> Call:
    def found() -> Call | None:
        CdrProjector(redis_client, database).drain()
        with database.unit_of_work() as session:
            return session.scalar(select(Call).where(Call.provider == "sip"))

    call: Call = wait_for(found, "the call's record")
    return call


def no_lock(redis_client: redis.Redis, call_id: str) -> bool:
    return not redis_client.exists(LOCK_KEY.format(call=f"sip:{call_id}"))


def stored_recording(database: Database, what: str) -> Recording:
    """The SIP call's recording row, waited for until it is stored."""

    def stored() -> Recording | None:
        with database.unit_of_work() as session:
            return session.scalar(
                select(Recording).where(
                    Recording.provider == "sip", Recording.status == RecordingStatus.STORED
                )
            )

    recording: Recording = wait_for(stored, what)
    return recording


def ivr_state(database: Database, redis_client: redis.Redis) -> tuple[Call, CallState]:
    """The call's record and where its flow left it."""
    call = the_call(database, redis_client)
    state = CallStore(redis_client, "sip").load(call.provider_call_id)
    assert state is not None
    return call, state


@pytest.fixture
def place_call(
    start_worker: Callable[..., Worker],
    sip_settings: Settings,
    database: Database,
    rtp_sink: RtpSink,
    tmp_path: Path,
) -> Callable[..., Worker]:
    """`place_call(flow, scenario, keys=(), hold_ms=500, **start_worker's options)`: `flow`
    published (None: nothing more), a worker started, and sipp's call to it run to its end
    without an error; the worker, whose log the test reads."""

    def place(
        flow: str | None,
        scenario: str,
        keys: Sequence[Key] = (),
        *,
        hold_ms: int = 500,
        **options: Any,
    ) -> Worker:
        if flow is not None:
            publish_flow(database, sip_settings, flow)
        worker = start_worker(**options)
        done = sipp(worker, scenario, tmp_path, rtp_sink, keys, hold_ms=hold_ms)
        assert done.returncode == 0, sipp_log(tmp_path) + worker.output()
        return worker

    return place


@pytest.fixture
def ongoing_call(
    start_worker: Callable[..., Worker],
    sip_settings: Settings,
    database: Database,
    rtp_sink: RtpSink,
    tmp_path: Path,
) -> Callable[[str], tuple[Worker, subprocess.Popen[bytes]]]:
    """`ongoing_call(flow)`: `flow` published, a worker started, and a caller on it (sipp in
    the background) who waits for Kokan's BYE."""

    def start(flow: str) -> tuple[Worker, subprocess.Popen[bytes]]:
        publish_flow(database, sip_settings, flow)
        worker = start_worker()
        caller = sipp(worker, "kokan_hangs_up.xml", tmp_path, rtp_sink, background=True)
        assert isinstance(caller, subprocess.Popen)
        return worker, caller

    return start


def stop_with_sigterm(worker: Worker, caller: subprocess.Popen[bytes], tmp_path: Path) -> None:
    """SIGTERM with a call up: the worker exits cleanly and the caller gets its BYE."""
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(10) == 0, worker.output()
    assert caller.wait(10) == 0, sipp_log(tmp_path)  # it got Kokan's BYE and answered it


# ---- the tests ----


def test_a_caller_hears_the_menu_and_keys_walk_the_flow(
    place_call: Callable[..., Worker],
    database: Database,
    redis_client: redis.Redis,
    rtp_sink: RtpSink,
) -> None:
    place_call(MENU_FLOW, "call.xml", [Key("1"), Key("2")])

    assert rtp_sink.voiced() > 20, "the menu prompt did not reach the caller as RTP"
    call = the_call(database, redis_client)
    assert (call.from_number, call.to_number) == (CALLER, "kokan")
    state = wait_for(
        lambda: (
            (s := CallStore(redis_client, "sip").load(call.provider_call_id))
            and s.node == "menu3"
            and s
        ),
        "the second key to reach menu3",
    )
    assert state.path == ["menu", "sales", "menu2", "menu3"]
    wait_for(lambda: the_call(database, redis_client).ended_at is not None, "the call's end")
    assert no_lock(redis_client, call.provider_call_id)


def test_the_sdp_and_contact_carry_the_configured_address_not_a_guessed_one(
    place_call: Callable[..., Worker], tmp_path: Path
) -> None:
    # bound to every interface: without the published address pjsua would put the
    # machine's first interface into Contact and SDP
    place_call(
        MENU_FLOW,
        "call.xml",
        [Key("1", after_ms=200)],
        host="0.0.0.0",  # noqa: S104
        public="127.0.0.1",
    )
    log = sipp_log(tmp_path)
    assert "SDP-CONNECTION 127.0.0.1" in log, log
    assert "CONTACT 127.0.0.1" in log, log


def test_a_voicemail_is_recorded_stored_and_handed_to_conversion(
    place_call: Callable[..., Worker],
    sip_settings: Settings,
    database: Database,
    redis_client: redis.Redis,
) -> None:
    place_call(VOICEMAIL_FLOW, "kokan_hangs_up.xml", [Key("#", after_ms=3000)])

    recording = stored_recording(database, "the voicemail's recording row")
    assert recording.kind == "voicemail"
    assert recording.storage_key is not None
    assert (sip_settings.recordings_dir / recording.storage_key).is_file()
    assert recording.duration_ms is not None
    assert recording.duration_ms > 300
    assert job_is_live(recordings_queue(redis_client), process_job_id(recording.id))
    call = the_call(database, redis_client)
    wait_for(
        lambda: the_call(database, redis_client).outcome == "voicemail", "the voicemail outcome"
    )
    assert recording.provider_call_id == call.provider_call_id
    assert no_lock(redis_client, call.provider_call_id)


def test_hanging_up_during_the_voicemail_keeps_the_message(
    place_call: Callable[..., Worker], database: Database, redis_client: redis.Redis
) -> None:
    place_call(VOICEMAIL_FLOW, "call.xml", hold_ms=3000)  # BYE while recording

    def stored() -> Recording | None:
        with database.unit_of_work() as session:
            return session.scalar(select(Recording).where(Recording.provider == "sip"))

    recording = wait_for(stored, "the voicemail's recording row")
    assert recording.status == RecordingStatus.STORED
    call = the_call(database, redis_client)
    wait_for(lambda: the_call(database, redis_client).ended_at is not None, "the call's end")
    assert the_call(database, redis_client).outcome == "voicemail"
    assert no_lock(redis_client, call.provider_call_id)


def test_a_queued_caller_hears_the_queues_music_until_hanging_up(
    place_call: Callable[..., Worker],
    sip_settings: Settings,
    database: Database,
    redis_client: redis.Redis,
    rtp_sink: RtpSink,
) -> None:
    acd = AcdService(redis_client)
    queues = {"billing": QueueSettings(hold_music="prompts/hold.wav")}
    apply_config(acd, sip_settings.model_copy(update={"queues": queues}))  # as the router does
    place_call(QUEUE_FLOW, "call.xml", hold_ms=3000)

    assert rtp_sink.voiced() > 50, "the caller heard neither the prompt nor the music"
    wait_for(lambda: the_call(database, redis_client).ended_at is not None, "the call's end")
    call = the_call(database, redis_client)
    assert call.queue == "billing"
    assert acd.queue("billing").waiting == 0
    # no agent ever came: the ACD held the call in line until the caller gave up
    kinds = [e.type for e in EventLog(redis_client).all() if e.get("call") == call.provider_call_id]
    assert kinds == ["join", "abandon"], kinds
    wait_for(lambda: the_call(database, redis_client).outcome == "abandoned", "the abandon")


def test_sigterm_with_a_call_up_hangs_it_up_and_exits_cleanly(
    ongoing_call: Callable[[str], tuple[Worker, subprocess.Popen[bytes]]],
    database: Database,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    worker, caller = ongoing_call(MENU_FLOW)
    call = the_call(database, redis_client)
    wait_for(lambda: CallStore(redis_client, "sip").load(call.provider_call_id), "the call")

    stop_with_sigterm(worker, caller, tmp_path)
    assert "Aborted" not in worker.output()
    wait_for(lambda: the_call(database, redis_client).ended_at is not None, "the call's end")
    assert no_lock(redis_client, call.provider_call_id)


def test_sigterm_during_a_voicemail_keeps_what_was_recorded(
    ongoing_call: Callable[[str], tuple[Worker, subprocess.Popen[bytes]]],
    sip_settings: Settings,
    database: Database,
    tmp_path: Path,
) -> None:
    worker, caller = ongoing_call(VOICEMAIL_FLOW)
    spool = sip_settings.resolved_data_dir / "sip-voicemail"
    wait_for(
        lambda: any(p.stat().st_size > 4096 for p in spool.glob("*.wav")),
        "the voicemail to be recording",
    )

    stop_with_sigterm(worker, caller, tmp_path)
    with database.unit_of_work() as session:  # kept before the worker exited
        recording = session.scalar(select(Recording).where(Recording.provider == "sip"))
        assert recording is not None
        assert recording.status == RecordingStatus.STORED
    assert not list(spool.glob("*.wav"))


def test_keys_sent_as_sip_info_walk_the_flow_too(
    place_call: Callable[..., Worker], database: Database, redis_client: redis.Redis
) -> None:
    place_call(MENU_FLOW, "call.xml", [Key("1", info=True), Key("2", info=True)])

    _call, state = ivr_state(database, redis_client)
    assert state.path == ["menu", "sales", "menu2", "menu3"]


def test_a_silent_caller_times_out_through_the_retries_to_on_failure(
    place_call: Callable[..., Worker], database: Database, redis_client: redis.Redis
) -> None:
    place_call(TIMEOUT_FLOW, "kokan_hangs_up.xml")

    call, state = ivr_state(database, redis_client)
    assert state.path == ["menu", "bye"]
    wait_for(
        lambda: the_call(database, redis_client).outcome == "completed-in-ivr", "the IVR outcome"
    )
    assert no_lock(redis_client, call.provider_call_id)


def test_a_call_kokan_cannot_run_hears_an_apology_not_silence(
    place_call: Callable[..., Worker],
    database: Database,
    redis_client: redis.Redis,
    rtp_sink: RtpSink,
) -> None:
    # no flow published: the engine cannot start the call
    worker = place_call(None, "call.xml", hold_ms=2500)

    assert rtp_sink.voiced() > 50, "the caller heard no apology"
    assert "could not start the call" in worker.output()
    call = the_call(database, redis_client)
    assert call.provider_call_id in worker.output()  # logged with the call's id


def test_a_sip_port_in_use_stops_kokan_sip_with_one_clear_line(
    sip_settings: Settings, database: Database
) -> None:
    _require_espeak()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        done = run_kokan(
            "sip",
            "--sip-port",
            str(port),
            env={
                "DATABASE_URL": str(sip_settings.database_url),
                "REDIS_URL": str(sip_settings.redis_url),
                "KOKAN_DATA_DIR": str(sip_settings.data_dir),
            },
        )
    assert done.returncode == 2, done.stderr
    assert f"kokan: sip.host/sip.port: cannot listen on 127.0.0.1:{port} over UDP" in done.stderr
    assert "Traceback" not in done.stderr
