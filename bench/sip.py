"""Kokan's SIP pool behind Kamailio against a pool of bare pjsua2 scripts, same load, same run.

sipp places the calls through a real Kamailio (the configuration `kokan sip
kamailio-config` writes, call-load dispatching) to `kokan sip --workers N`; then the same
load goes through a new Kamailio to N processes of bench/bare_pjsua.py (4 calls each, the
library's ceiling per process). Each call is answered, hears a prompt, presses 1 (RFC
4733 telephone-events) and hears music in a loop, is held, then hangs up. Kokan walks
the bench flow (menu -> queue with no agent, its hold music looped) through its engine,
Redis call state and the ACD; the bare script answers, plays, and loops the music.

sipp does the signalling. The callers' SDP names one RTP sink (a process of its own): it
counts the RTP each call receives per second and speaks for every caller from that same
address, one packet of audio for each it receives, and the key 2.5 s after the call's
first packet. (pjsua sends its RTP to wherever it hears from: audio or keys played by
sipp from its own media port would take the call's RTP away from the sink.)

Printed for each pool, from the whole seconds in which every call was up and past its key:

- calls held, ended, failed (no answer or no clean end) and refused with 503 (counted
  apart: sipp counts a 503 handled by the scenario as a success), sipp's exit status;
- the call rate: calls answered per second while sipp placed them (-r);
- the RTP each call heard: mean and lowest packets/s (50/s is 20 ms G.711 frames);
- CPU (user + system of every pool process, % of one core) per call and RSS per call
  and per process; Kamailio's CPU (and for Kokan, Redis's) beside them; the idle pool's
  CPU (measured before the first call) and so each call's cost above it;

then the verdicts and the CPU ratio. Kokan's pool supervisor counts in its CPU and RSS.

    .venv/bin/python -m bench.sip [--workers 50] [--calls 200] [--hold 60] [--rate 10]
    .venv/bin/python -m bench.sip --workers 4 --calls 16 --hold 10      # a quick run

Targets (issue 7): at least 200 concurrent calls across the pool with no failures, and
Kokan's CPU per call within 1.5x the bare script's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from acd.runtime import apply_config
from acd.services import AcdService
from bench.local_sip import RTP_PORTS, SIP_PORTS, answers_ok, free_port_run, stop_process
from ivr import kamailio
from ivr.publishing import publish
from ivr.sip_pool import layout
from ivr.sip_prompts import PromptCache
from ivr.validator import CheckContext
from kokan.config import RTP_PORTS_PER_CALL, SIP_MAX_CALLS, Settings, SipSettings
from kokan.db import Database
from kokan.embedded_redis import EmbeddedRedis, parent_death_signal
from kokan.migrate import upgrade
from kokan.redis_conn import connect

REPO = Path(__file__).resolve().parent.parent
SCENARIO = REPO / "tests" / "sip" / "bench_call.xml"
MUSIC = REPO / "flows" / "prompts" / "hold.wav"
PROMPT_TEXT = "Press one for music."
QUEUE = "bench"
BENCH_FLOW = f"""
start: menu
language: en
nodes:
  menu:
    type: menu
    prompt: {{en: {PROMPT_TEXT}}}
    options: {{"1": wait}}
    timeout: 30
    on_failure: bye
  wait:
    type: queue
    queue: {QUEUE}
  bye:
    type: hangup
"""
"""The call the issue describes: a prompt, one menu step, then a queue with no agent, where
the caller hears the queue's music in a loop until they hang up (as the bare script loops
its player): engine, Redis call state and the ACD all take part."""
QUEUE_SETTINGS = {"hold_music": f"prompts/{MUSIC.name}", "announce_every_seconds": None}
"""Music only: a position announcement would add a TTS file to one side and not the other."""

HOST = "127.0.0.1"
KEY_AFTER_MS = 2500
"""The prompt ("Press one for music.") lasts about 1.5 s; the key comes after it."""
PACKETS_PER_S = 50
"""G.711 in 20 ms frames: what every call must hear."""
CPU_RATIO_TARGET = 1.5
CONCURRENT_TARGET = 200
START_DEADLINE_S = 240.0
"""50 workers import Kokan, start pjsua and speak their apology prompt on 2 cores."""
STOP_WAIT_S = 60.0
POLL_S = 0.2
SAMPLE_S = 1.0
IDLE_S = 5.0
"""By default the pool's idle CPU is measured this long before the first call."""
"""CPU and memory are sampled once a second, as the sink counts RTP per second."""
SIPP_GRACE_S = 60.0
"""Beyond ramp + key + hold: the BYEs of a loaded pool, and sipp's own end."""
RTP_HEADER = struct.Struct("!BBHII")
RTP_VERSION = 0x80
PCMA = 8
SAMPLES_PER_PACKET = 160
"""20 ms at 8 kHz."""
PCMA_SILENCE = b"\xd5" * SAMPLES_PER_PACKET
"""20 ms of A-law silence: the caller's audio (its content does not matter to the cost)."""
TELEPHONE_EVENT = 101
"""The payload type the callers' SDP gives telephone-events."""
DTMF_KEY = 1
DTMF_VOLUME = 10
"""-10 dBm0, what phones send."""
DTMF_END_REPEATS = 3
"""RFC 4733: the end of an event is sent three times, in case one is lost."""
SINK_STOP = b"stop"
SINK_TICK_S = 0.02
"""The sink's longest wait for a packet: a key falls due within one frame."""
SINK_BUFFER = 4 << 20
"""200 calls x 50 packets/s arrive in bursts at every 20 ms tick of 50 pools' clocks."""


def fail(message: str) -> None:
    raise SystemExit(f"bench: {message}")


def require(program: str, package: str) -> str:
    found = shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin")
    if found is None:
        fail(f"{program} is missing (Debian package {package})")
    return str(found)


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(POLL_S)
    fail(f"timed out after {deadline_s:.0f} s waiting for {what}")


# -- the RTP sink: a process of its own ---------------------------------------------------


def key_events(caller: list[int]) -> list[bytes]:
    """The key 1 as RFC 4733 telephone-events in the caller's stream: three updates and
    the end packet sent three times, as phones send it; one timestamp for the event."""
    packets = []
    durations = [(n * SAMPLES_PER_PACKET, False) for n in (1, 2, 3)] + [
        (4 * SAMPLES_PER_PACKET, True)
    ] * DTMF_END_REPEATS
    for index, (duration, end) in enumerate(durations):
        caller[0] = (caller[0] + 1) & 0xFFFF
        marker = 0x80 if index == 0 else 0
        flags = (0x80 if end else 0) | DTMF_VOLUME
        header = RTP_HEADER.pack(
            RTP_VERSION, marker | TELEPHONE_EVENT, caller[0], caller[1], caller[2]
        )
        packets.append(header + struct.pack("!BBH", DTMF_KEY, flags, duration))
    caller[1] = (caller[1] + 4 * SAMPLES_PER_PACKET) & 0xFFFFFFFF
    return packets


def sink_main(connection: multiprocessing.connection.Connection, key_after_s: float) -> None:
    """Count each call's RTP per second and answer every packet with one of the caller's
    audio; `key_after_s` after a call's first packet, send its key."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SINK_BUFFER)
    sock.bind((HOST, 0))
    sock.settimeout(SINK_TICK_S)
    connection.send(sock.getsockname()[1])
    counts: defaultdict[int, Counter[tuple[str, int]]] = defaultdict(Counter)
    callers: dict[tuple[str, int], list[int]] = {}
    keys_due: deque[tuple[float, tuple[str, int]]] = deque()
    last_key = 0.0
    pack, clock = RTP_HEADER.pack, time.time
    while True:
        try:
            data, source = sock.recvfrom(2048)
        except TimeoutError:
            data, source = b"", ("", 0)
        now = clock()
        while keys_due and keys_due[0][0] <= now:
            _due, keyed = keys_due.popleft()
            last_key = now
            for packet in key_events(callers[keyed]):
                sock.sendto(packet, keyed)
        if not data:
            continue
        if data == SINK_STOP:
            break
        counts[int(now)][source] += 1
        caller = callers.get(source)
        if caller is None:  # seq, timestamp, ssrc of the caller's stream
            caller = callers[source] = [random.getrandbits(16), 0, random.getrandbits(32)]
            keys_due.append((now + key_after_s, source))
        caller[0] = (caller[0] + 1) & 0xFFFF
        caller[1] = (caller[1] + SAMPLES_PER_PACKET) & 0xFFFFFFFF
        sock.sendto(pack(RTP_VERSION, PCMA, caller[0], caller[1], caller[2]) + PCMA_SILENCE, source)
    connection.send(Heard({second: dict(sources) for second, sources in counts.items()}, last_key))
    sock.close()


@dataclass
class Heard:
    """What the sink counted: packets per second per call (by the pool's RTP address), and
    when the last caller pressed their key."""

    counts: dict[int, dict[tuple[str, int], int]]
    last_key: float


@dataclass
class Sink:
    process: multiprocessing.Process
    connection: multiprocessing.connection.Connection
    port: int

    def finish(self) -> Heard:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(SINK_STOP, (HOST, self.port))
        heard: Heard = self.connection.recv()
        self.process.join()
        return heard


@contextmanager
def rtp_sink() -> Iterator[Sink]:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(
        target=sink_main, args=(child, KEY_AFTER_MS / 1000), daemon=True
    )
    process.start()
    sink = Sink(process, parent, int(parent.recv()))
    try:
        yield sink
    finally:
        if process.is_alive():
            process.kill()
            process.join()


# -- CPU and memory ---------------------------------------------------------------------


@dataclass
class Sample:
    at: float
    pool_cpu_s: float
    pool_rss: int
    kamailio_cpu_s: float
    redis_cpu_s: float


def tree(pids: Sequence[int]) -> list[psutil.Process]:
    found: list[psutil.Process] = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            found += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return found


def cpu_and_rss(processes: Sequence[psutil.Process]) -> tuple[float, int]:
    cpu, rss = 0.0, 0
    for process in processes:
        try:
            with process.oneshot():
                times = process.cpu_times()
                cpu += times.user + times.system
                rss += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return cpu, rss


@dataclass
class Monitor:
    pool: Sequence[int]
    kamailio_pid: int
    redis_pid: int | None
    queued: Callable[[], int] | None = None
    """Kokan's callers waiting in the ACD queue: proof that every call took its menu step."""
    queued_peak: int = 0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pool = tree(self.pool)  # the workers are up before the load starts
        kam = tree([self.kamailio_pid])
        redis = tree([self.redis_pid]) if self.redis_pid else []
        while not self._stop.wait(SAMPLE_S - time.time() % SAMPLE_S):
            at = time.time()
            cpu, rss = cpu_and_rss(pool)
            self.samples.append(
                Sample(at, cpu, rss, cpu_and_rss(kam)[0], cpu_and_rss(redis)[0] if redis else 0)
            )
            if self.queued is not None:
                self.queued_peak = max(self.queued_peak, self.queued())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# -- one side of the run ----------------------------------------------------------------


@dataclass
class Side:
    name: str
    calls: int
    idle_s: float = IDLE_S
    held: int = 0
    ended: int = 0
    rejected: int = 0
    sipp_status: int = 0
    ramp_s: float = 0.0
    answer_rate: float = 0.0
    """Calls answered per second while sipp placed them (sipp's clock at each answer)."""
    processes: int = 0
    queued_peak: int | None = None
    idle_cpu_pct: float = 0.0
    """The whole pool's CPU with no call up (pjsua's poll loop in every process)."""

    @property
    def marginal_cpu_pct_per_call(self) -> float:
        return self.cpu_pct_per_call - self.idle_cpu_pct / self.calls

    window_s: float = 0.0
    mean_pps: float = 0.0
    lowest_pps: float = 0.0
    cpu_pct_per_call: float = 0.0
    rss_mb_per_call: float = 0.0
    rss_mb_per_process: float = 0.0
    kamailio_cpu_pct: float = 0.0
    redis_cpu_pct: float = 0.0

    @property
    def failed(self) -> int:
        return self.calls - self.ended


def start_kamailio(
    work: Path, name: str, settings: SipSettings
) -> tuple[subprocess.Popen[bytes], int]:
    folder = work / f"kam-{name}"
    port = free_port_run(1, *SIP_PORTS, tcp=False)
    destinations = kamailio.from_layout(layout(settings), settings)
    files = kamailio.write(folder, destinations, HOST, port)
    log = (folder / "kamailio.log").open("wb")
    process = subprocess.Popen(
        kamailio.command(files),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=parent_death_signal(),  # gone with the bench, even a killed one
    )
    wait_until(lambda: process.poll() is not None or answers_ok(port), "Kamailio", START_DEADLINE_S)
    if process.poll() is not None:
        fail(f"Kamailio exited; see {folder / 'kamailio.log'}")
    return process, port


def run_sipp(
    work: Path, name: str, proxy_port: int, sink: Sink, calls: int, rate: float, hold_s: float
) -> tuple[int, str]:
    sipp = require("sipp", "sip-tester")
    scenario = work / f"sipp-{name}.xml"
    text = SCENARIO.read_text(encoding="utf-8")
    text = text.replace("${hold_ms}", str(int((KEY_AFTER_MS / 1000 + hold_s) * 1000)))
    scenario.write_text(text, encoding="utf-8")
    local = free_port_run(1, *SIP_PORTS, tcp=False)
    media = free_port_run(4, *SIP_PORTS, tcp=False)
    log = work / f"sipp-{name}.log"
    ramp_s = calls / rate
    command = [
        sipp,
        f"{HOST}:{proxy_port}",
        "-sf",
        str(scenario),
        "-m",
        str(calls),
        "-l",
        str(calls),
        "-r",
        f"{rate:g}",
        "-i",
        HOST,
        "-p",
        str(local),
        "-mp",
        str(media),
        "-s",
        "kokan",
        "-timeout",
        f"{ramp_s + KEY_AFTER_MS / 1000 + hold_s + SIPP_GRACE_S:.0f}s",
        "-timeout_error",
        "-nostdin",
        "-trace_logs",
        "-log_file",
        str(log),
        "-trace_err",
        "-error_file",
        str(work / f"sipp-{name}-errors.log"),
        "-key",
        "caller",
        "0312345678",
        "-key",
        "rtp_sink",
        str(sink.port),
    ]
    done = subprocess.run(
        command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    return done.returncode, log.read_text(errors="replace") if log.exists() else ""


def analyse(side: Side, heard: Heard, samples: Sequence[Sample]) -> None:
    """The figures of the whole seconds in which every call was up and had pressed its key
    (hearing the queue's music), until the first call hung up."""
    counts = heard.counts
    if os.environ.get("BENCH_SIP_DEBUG"):
        for second in sorted(counts):
            sources = counts[second]
            print(f"  {second} sources {len(sources)} packets {sum(sources.values())}")
    full = sorted(s for s, sources in counts.items() if len(sources) >= side.calls)
    if not full:
        return
    side.ramp_s = float(full[0] - min(counts) + 1)
    window = range(max(full[0], int(heard.last_key)) + 1, full[-1])
    if len(window) < 1:
        return
    side.window_s = float(len(window))
    received: Counter[tuple[str, int]] = Counter()
    for second in window:
        received.update(counts.get(second, {}))
    busiest = received.most_common(side.calls)
    side.mean_pps = sum(n for _source, n in busiest) / side.window_s / side.calls
    side.lowest_pps = min(n for _source, n in busiest) / side.window_s
    inside = [s for s in samples if window.start <= s.at <= window.stop]
    if len(inside) >= 2:
        span = inside[-1].at - inside[0].at
        side.cpu_pct_per_call = (
            100 * (inside[-1].pool_cpu_s - inside[0].pool_cpu_s) / span / side.calls
        )
        side.kamailio_cpu_pct = 100 * (inside[-1].kamailio_cpu_s - inside[0].kamailio_cpu_s) / span
        side.redis_cpu_pct = 100 * (inside[-1].redis_cpu_s - inside[0].redis_cpu_s) / span
        middle = inside[len(inside) // 2]
        side.rss_mb_per_call = middle.pool_rss / side.calls / 1e6
        side.rss_mb_per_process = middle.pool_rss / side.processes / 1e6


def drive(
    side: Side,
    work: Path,
    settings: SipSettings,
    pool_pids: Callable[[], list[int]],
    redis_pid: int | None,
    rate: float,
    hold_s: float,
    queued: Callable[[], int] | None = None,
) -> None:
    proxy, proxy_port = start_kamailio(work, side.name, settings)
    try:
        with rtp_sink() as sink:
            monitor = Monitor(pool_pids(), proxy.pid, redis_pid, queued)
            pool = tree(pool_pids())
            side.processes = len(pool)
            idle_from = cpu_and_rss(pool)[0]
            time.sleep(side.idle_s)  # the pool with no call: its own cost, apart from the calls'
            side.idle_cpu_pct = 100 * (cpu_and_rss(pool)[0] - idle_from) / side.idle_s
            monitor.start()
            try:
                status, log = run_sipp(work, side.name, proxy_port, sink, side.calls, rate, hold_s)
            finally:
                monitor.stop()
            heard = sink.finish()
    finally:
        stop_process(proxy, STOP_WAIT_S)
    side.sipp_status = status
    side.held = len(re.findall(r"^ANSWERED ", log, re.MULTILINE))
    side.ended = len(re.findall(r"^ENDED ", log, re.MULTILINE))
    answered_ms = [int(tick) for tick in re.findall(r"^ANSWERED \S+ (\d+)", log, re.MULTILINE)]
    if len(answered_ms) > 1 and max(answered_ms) > min(answered_ms):
        side.answer_rate = (len(answered_ms) - 1) * 1000 / (max(answered_ms) - min(answered_ms))
    side.rejected = len(re.findall(r"^REJECTED ", log, re.MULTILINE))
    analyse(side, heard, monitor.samples)
    if queued is not None:
        side.queued_peak = monitor.queued_peak


def run_kokan_side(
    side: Side,
    work: Path,
    settings: SipSettings,
    redis: EmbeddedRedis,
    database_url: str,
    rate: float,
    hold_s: float,
) -> None:
    config = {
        "data_dir": str(work / "var"),
        "database_url": database_url,
        "redis_url": redis.url,
        "flows_dir": str(work / "flows"),
        "sip": {"host": HOST, "port": settings.port, "rtp_port": settings.rtp_port},
        "queues": {QUEUE: QUEUE_SETTINGS},
    }
    config_file = work / "kokan.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    client = connect(redis.url)
    try:  # the bench queue in the ACD, as `kokan router` does at its start
        apply_config(AcdService(client), Settings.model_validate(config))
    finally:
        client.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOKAN_")}
    with (work / "kokan-sip.log").open("wb") as log:
        pool = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kokan",
                "--config",
                str(config_file),
                "sip",
                "--workers",
                str(settings.workers),
            ],
            env=env,
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=parent_death_signal(),  # gone with the bench, even a killed one
        )
    try:
        ports = [slot.port for slot in layout(settings)]
        wait_until(
            lambda: pool.poll() is not None or all(answers_ok(p) for p in ports),
            f"{settings.workers} Kokan SIP workers",
            START_DEADLINE_S,
        )
        if pool.poll() is not None:
            fail(f"kokan sip exited with {pool.returncode}; see {work / 'kokan-sip.log'}")
        client = connect(redis.url)
        acd = AcdService(client)
        try:
            drive(
                side,
                work,
                settings,
                lambda: [pool.pid],
                redis.pid,
                rate,
                hold_s,
                lambda: acd.queue(QUEUE).waiting,
            )
        finally:
            client.close()
    finally:
        stop_process(pool, STOP_WAIT_S)


def run_bare_side(
    side: Side,
    work: Path,
    settings: SipSettings,
    prompt: Path,
    music: Path,
    rate: float,
    hold_s: float,
) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with (work / "bare.log").open("wb") as log:
            for slot in layout(settings):
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "bench.bare_pjsua",
                            "--host",
                            HOST,
                            "--port",
                            str(slot.port),
                            "--rtp-port",
                            str(slot.rtp_port),
                            "--prompt",
                            str(prompt),
                            "--music",
                            str(music),
                        ],
                        env=env,
                        cwd=REPO,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=parent_death_signal(),  # gone with the bench, even a killed one
                    )
                )
        ports = [slot.port for slot in layout(settings)]
        wait_until(
            lambda: (
                any(p.poll() is not None for p in processes) or all(answers_ok(p) for p in ports)
            ),
            f"{settings.workers} bare pjsua processes",
            START_DEADLINE_S,
        )
        if any(p.poll() is not None for p in processes):
            fail(f"a bare pjsua process exited; see {work / 'bare.log'}")
        drive(side, work, settings, lambda: [p.pid for p in processes], None, rate, hold_s)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            stop_process(process, STOP_WAIT_S)


def report(side: Side, hold_s: float) -> None:
    print(
        f"{side.name:<6} calls {side.calls}: held {side.held}, ended {side.ended}, "
        f"failed {side.failed}, refused 503 {side.rejected}, sipp status {side.sipp_status}"
    )
    print(
        f"       answered at {side.answer_rate:.1f} calls/s, all {side.calls} heard within "
        f"{side.ramp_s:.0f} s; all up, past the key, together for {side.window_s:.0f} s "
        f"(hold {hold_s:g} s)"
    )
    print(
        f"       RTP heard per call: mean {side.mean_pps:.1f} packets/s, lowest "
        f"{side.lowest_pps:.1f} (target {PACKETS_PER_S})"
    )
    print(
        f"       CPU per call {side.cpu_pct_per_call:.2f} % of a core "
        f"(pool {side.cpu_pct_per_call * side.calls:.0f} %), RSS per call "
        f"{side.rss_mb_per_call:.1f} MB ({side.processes} processes, "
        f"{side.rss_mb_per_process:.1f} MB each); idle pool {side.idle_cpu_pct:.1f} %, "
        f"so {side.marginal_cpu_pct_per_call:.2f} % per call above idle; "
        f"Kamailio {side.kamailio_cpu_pct:.1f} %"
        + (f", Redis {side.redis_cpu_pct:.1f} %" if side.name == "kokan" else "")
    )
    if side.queued_peak is not None:
        print(f"       took the menu step: at most {side.queued_peak} callers waiting in the queue")


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=50, help="processes in each pool")
    parser.add_argument("--calls", type=int, default=200, help="concurrent calls")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds every call is held")
    parser.add_argument("--rate", type=float, default=10.0, help="new calls per second")
    parser.add_argument(
        "--idle", type=float, default=IDLE_S, help="seconds the idle pool's CPU is measured"
    )
    parser.add_argument("--no-bare", action="store_true", help="Kokan's pool only")
    parser.add_argument(
        "--keep", action="store_true", help="keep the logs' folder (always kept after a failure)"
    )
    args = parser.parse_args()
    if min(args.workers, args.calls) < 1 or min(args.hold, args.rate, args.idle) <= 0:
        fail("--workers, --calls, --hold, --rate and --idle must be positive")
    if args.calls > args.workers * SIP_MAX_CALLS:
        fail(
            f"--calls {args.calls}: {args.workers} workers hold at most "
            f"{args.workers * SIP_MAX_CALLS} ({SIP_MAX_CALLS} each)"
        )
    require("sipp", "sip-tester")
    require("espeak-ng", "espeak-ng")
    kamailio.kamailio_program()

    work = Path(tempfile.mkdtemp(prefix="kokan-bench-sip-", dir="/tmp"))
    keep = args.keep
    redis = EmbeddedRedis(work / "var")
    try:
        (work / "flows" / "prompts").mkdir(parents=True)
        shutil.copy(MUSIC, work / "flows" / "prompts" / MUSIC.name)
        redis.start()
        database_url = f"sqlite:///{work / 'var' / 'kokan.db'}"
        database = Database(database_url)
        upgrade(database)
        with database.unit_of_work() as session:
            publish(
                session,
                "main",
                BENCH_FLOW,
                "flows/main.yaml",
                CheckContext.for_directory(work / "flows", [QUEUE]),
                by="bench",
            )
        database.dispose()
        # the bare script plays the very files Kokan plays: converted once to 8 kHz
        prompts = PromptCache(work / "bare", work / "flows")
        prompt, music = prompts.spoken(PROMPT_TEXT, "en"), prompts.file(f"prompts/{MUSIC.name}")

        def settings() -> SipSettings:
            return SipSettings(
                host=HOST,
                port=free_port_run(args.workers, *SIP_PORTS, tcp=True),
                rtp_port=free_port_run(
                    RTP_PORTS_PER_CALL * SIP_MAX_CALLS * args.workers, *RTP_PORTS, tcp=False
                ),
                workers=args.workers,
            )

        print(
            f"{args.calls} calls at {args.rate:g}/s through Kamailio to {args.workers} "
            f"processes of {SIP_MAX_CALLS} calls, each held {args.hold:g} s after the prompt "
            f"and key 1 (2 cores: {os.cpu_count()}; sipp, Kamailio and the RTP sink share them)",
            flush=True,
        )
        kokan = Side("kokan", args.calls, args.idle)
        run_kokan_side(kokan, work, settings(), redis, database_url, args.rate, args.hold)
        report(kokan, args.hold)
        bare = Side("bare", args.calls, args.idle)
        if not args.no_bare:
            run_bare_side(bare, work, settings(), prompt, music, args.rate, args.hold)
            report(bare, args.hold)
        print()
        held = kokan.failed == 0 and kokan.rejected == 0 and kokan.window_s > 0
        print(
            f"concurrent calls held by Kokan's pool with no failures: "
            f"{args.calls if held else 0} for {kokan.window_s:.0f} s "
            f"(target >= {CONCURRENT_TARGET}): {verdict(held and args.calls >= CONCURRENT_TARGET)}"
        )
        rtp_ok = kokan.lowest_pps >= PACKETS_PER_S * 0.95
        print(
            f"RTP per call from Kokan: lowest {kokan.lowest_pps:.1f} packets/s "
            f"(target {PACKETS_PER_S}): {verdict(rtp_ok)}"
        )
        if kokan.cpu_pct_per_call > 0 and bare.cpu_pct_per_call > 0:
            ratio = kokan.cpu_pct_per_call / bare.cpu_pct_per_call
            print(
                f"CPU per call, Kokan / bare pjsua: {ratio:.2f} "
                f"(target <= {CPU_RATIO_TARGET}): {verdict(ratio <= CPU_RATIO_TARGET)}"
            )
            if bare.marginal_cpu_pct_per_call > 0:
                print(
                    "CPU per call above the idle pool, Kokan / bare pjsua: "
                    f"{kokan.marginal_cpu_pct_per_call / bare.marginal_cpu_pct_per_call:.2f}"
                )
        failures = (
            kokan.failed + kokan.rejected + (0 if args.no_bare else bare.failed + bare.rejected)
        )
        print(f"failed calls: {failures}")
        keep = keep or failures > 0
        return 0 if failures == 0 else 1
    finally:
        redis.stop()
        if keep:
            print(f"logs kept in {work} (sipp, Kamailio, the pools)")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
