"""The flow tests (flows/tests/*.yaml) played as real SIP calls give what the engine gives.

Every case is one SIP call from a pjsua2 caller (tests/sip_caller.py: the case's `from` as
the From user) into a SIP media worker running the real endpoint and driver
(tests/sip_flow_worker.py: the case's clock and http answers, as the engine runner has
them). Keys go as RFC 2833 events once the driver waits for them (its phase, watched in
Redis: a key may cut a menu's prompt short, as on Twilio); "timeout" sends nothing until
the driver's own timer moves the call on; "record" speaks a second of tone once the
driver records, then presses the voicemail's finish key. The path, outcome and variables
are the call state the driver stored, the prompts heard are those it handed to the
endpoint to play, and `ivr.flowtests.judge` (the engine runner's own comparison) judges
them against the case; each case's path, prompts and outcome must also equal the engine
runner's.

The cases run four at a time (a worker's pjsua call slots); prompts are espeak-ng's and
play in real time, so the module takes as long as its slowest case (a silent caller who
hears a long Japanese prompt twice), not the sum.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from bench.local_sip import RTP_PORTS, SIP_PORTS, answers_ok, free_port_run, stop_process
from ivr.call_store import CallStore
from ivr.flowtests import Case, Played, ended_early, judge, load_tests, play_case
from ivr.sip_driver import PROVIDER, kokan_call_id
from ivr.sources import DirectoryFlows
from kokan.config import load as load_config
from kokan.redis_conn import connect
from tests.conftest import REPO_ROOT, clean_environ
from tests.sip_flow_worker import HEARD_KEY, STATUS_KEY
from tests.sip_peers import write_tone

pytestmark = pytest.mark.media  # real SIP peers: the PostgreSQL pass leaves them out (./run)

FLOWS_DIR = REPO_ROOT / "flows"
TEST_FILES = sorted((FLOWS_DIR / "tests").glob("*.yaml"))
CALLERS = 4
"""Cases played at once: the worker's pjsua call slots (sip.max_calls)."""
START_S = 20.0
"""A worker or a caller imports pjsua2 and opens its ports: a second or two on a busy box."""
TURN_S = 20.0
"""A key's turn: the engine's step, the save to Redis, the next prompt; milliseconds, but
the first play of a prompt waits for espeak-ng on a loaded machine."""
SILENCE_S = 90.0
"""A "timeout" turn: the whole prompt (espeak-ng reads Japanese slowly) plus the node's
timeout; espeak-ng reads the example flows' Japanese menus for 10-30 s each."""
POLL_S = 0.02
SPOKEN_TONE_S = 1
"""What a caller says into a voicemail: enough for pjsua to write a real recording."""
HEARD_LEVEL = 500
"""Of 32767: a sample louder than this in the caller's own recording is a prompt heard
(G.711 silence decodes to single digits)."""
TRANSPORT_KEYS = frozenset({"recording", "seconds", "voicemail_url", "voicemail_seconds"})
"""A voicemail's URL and length belong to the transport (Twilio's URL, the SIP worker's
file), not to the flow: compared with the engine runner's without them."""


def _require(program: str, package: str) -> None:
    if shutil.which(program) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{program} is missing (Debian package {package})")
        pytest.skip(f"{program} is not installed (Debian package {package})")


def _cases() -> list[tuple[str, str, Case]]:
    """(key, flow, case) for every case; the key is how the worker knows it (its file and
    place: tests/sip_flow_worker.load_cases numbers them the same way)."""
    found = []
    for file_index, path in enumerate(TEST_FILES):
        tests = load_tests(path)
        for case_index, case in enumerate(tests.cases):
            found.append((f"{file_index}-{case_index}", tests.flow, case))
    return found


CASES = _cases()


def not_over_sip(case: Case) -> str | None:
    """Why a case cannot be played over SIP yet (None: it can)."""
    spoken = [text for text in case.inputs if text.startswith("speech:")]
    if spoken:
        return f"not run over SIP (speech): the SIP driver's speech capture is separate work; inputs {spoken}"
    return None


# ---- the processes ----


class Peer:
    """A child process speaking JSON lines: commands in, events out (read on a thread)."""

    def __init__(self, process: subprocess.Popen[str], log: Path) -> None:
        self.process = process
        self.log = log
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.put(json.loads(line))
        self.events.put({"event": "exited"})

    def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def expect(self, *wanted: str, within: float = TURN_S) -> dict[str, Any]:
        """The next event of one of the kinds wanted; others in between are dropped."""
        deadline = time.monotonic() + within
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the caller sent none of {wanted}: {self.output()}")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if event["event"] in wanted:
                return event
            if event["event"] in ("error", "exited"):
                raise AssertionError(f"caller: {event}\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_caller(folder: Path, index: int) -> Peer:
    log = folder / f"caller-{index}.log"
    sip = free_port_run(1, *SIP_PORTS, tcp=False)
    rtp = free_port_run(8, *RTP_PORTS, tcp=False)
    with open(log, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.sip_caller", "--port", str(sip), "--rtp-port", str(rtp)],
            cwd=REPO_ROOT,
            env=clean_environ(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    peer = Peer(process, log)
    peer.expect("ready", within=START_S)
    return peer


def start_worker(folder: Path, redis_url: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port_run(1, *SIP_PORTS, tcp=True)
    config = {
        "data_dir": str(folder / "var"),
        "redis_url": redis_url,
        "flows_dir": str(FLOWS_DIR),
        "queues": yaml.safe_load((REPO_ROOT / "config.yaml").read_text(encoding="utf-8"))["queues"],
        "sip": {
            "host": "127.0.0.1",
            "port": port,
            "rtp_port": free_port_run(8, *RTP_PORTS, tcp=False),
        },
    }
    config_file = folder / "worker.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = folder / "worker.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.sip_flow_worker", "--config", str(config_file)]
            + [str(path) for path in TEST_FILES],
            cwd=REPO_ROOT,
            env=clean_environ(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_S
    while not answers_ok(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process, 5)
            raise AssertionError(f"the SIP worker did not start:\n{log.read_text()}")
        time.sleep(POLL_S)
    return process, port, log


# ---- one case, one call ----


@dataclass
class SipRun:
    played: Played | None = None
    skipped: str | None = None
    heard_wav: Path | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Status:
    phase: str
    step: int
    waiting: str
    finish: str


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def waits_out(text: str) -> bool:
    """An input that waits for the whole prompt (and a timeout): silence or a voicemail."""
    return text == "timeout" or text.startswith("record")


def status(client: redis.Redis, call_id: str) -> Status | None:
    found = client.hgetall(STATUS_KEY.format(call=call_id))
    if not found:
        return None
    text = {_text(k): _text(v) for k, v in found.items()}
    return Status(text["phase"], int(text["step"]), text["waiting"], text.get("finish", ""))


def wait_status(
    client: redis.Redis, call_id: str, good: Callable[[Status], bool], what: str, within: float
) -> Status:
    deadline = time.monotonic() + within
    while True:
        found = status(client, call_id)
        if found is not None and good(found):
            return found
        if found is not None and found.phase == "ended":
            return found  # the call is over: nothing more will change
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; the call is at {found}")
        time.sleep(POLL_S)


def settled(step: int) -> Callable[[Status], bool]:
    """The turn answering input `step` has been played out: the driver waits, holds, ends."""
    return lambda s: s.step >= step and s.phase != "starting"


def play_over_sip(
    caller: Peer, client: redis.Redis, port: int, key: str, case: Case, folder: Path, tone: Path
) -> SipRun:
    run = SipRun(heard_wav=folder / f"heard-{key}.wav")
    uri = f"sip:flowtest-{key}@127.0.0.1:{port}"
    caller.send(op="call", uri=uri, caller=case.caller, heard=str(run.heard_wav))
    call_id = kokan_call_id(caller.expect("calling")["sip_call_id"])
    answered = caller.expect("confirmed", "disconnected")
    if answered["event"] == "disconnected":
        raise AssertionError(f"the worker refused the call (SIP {answered.get('status')})")
    failures: list[str] = []
    for index, text in enumerate(case.inputs, start=1):
        now = wait_status(client, call_id, settled(index - 1), f"turn {index - 1}", TURN_S)
        if not now.waiting or now.phase == "ended":
            failures.append(ended_early(index, text))
            break
        if text == "timeout":
            wait_status(client, call_id, settled(index), f"timeout {index}", SILENCE_S)
            continue
        if text == "record" or text.startswith("record:"):
            recording = wait_status(
                client, call_id, lambda s: s.phase == "recording", "the recording", SILENCE_S
            )
            caller.send(op="speak", file=str(tone))
            caller.expect("spoken")
            if recording.finish:
                caller.send(op="keys", keys=recording.finish[0])
            else:
                caller.send(op="hangup")
        else:
            caller.send(op="keys", keys=text)
        wait_status(client, call_id, settled(index), f"the answer to input {index}", TURN_S)
    last = wait_status(client, call_id, settled(len(case.inputs)), "the last turn", TURN_S)
    state = CallStore(client, PROVIDER).load(call_id)
    heard = [_text(item) for item in client.lrange(HEARD_KEY.format(call=call_id), 0, -1)]
    if last.phase != "ended":
        caller.send(op="hangup")
    caller.expect("disconnected")
    # the worker's side of the call is over too (its pjsua slot and RTP ports are free)
    # before this caller places the next case's call
    wait_status(client, call_id, lambda s: s.phase == "ended", "the call's end", TURN_S)
    assert state is not None, f"no state stored for {call_id}"
    run.played = Played(
        path=list(state.path),
        heard=heard,
        outcome=state.outcome,
        variables=dict(state.variables),
        waiting_for=last.waiting or None,
        failures=failures,
    )
    return run


def hang_up_if_up(caller: Peer) -> None:
    """After a failed case: the caller's call is ended before the next case uses it."""
    caller.send(op="hangup")
    with contextlib.suppress(AssertionError):  # no call was up (the error event said so)
        caller.expect("disconnected", within=5)


# ---- the fixture playing every case, and one test per case ----


@pytest.fixture(scope="module")
def sip_runs(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, SipRun]]:
    _require("espeak-ng", "espeak-ng")
    folder = tmp_path_factory.mktemp("sip-flowtests")
    client = connect(redis_url)
    tone = write_tone(folder / "voice.wav", seconds=SPOKEN_TONE_S)
    worker, port, worker_log = start_worker(folder, redis_url)
    callers: queue.Queue[Peer] = queue.Queue()
    started: list[Peer] = []
    runs: dict[str, SipRun] = {}
    try:
        for index in range(CALLERS):
            peer = start_caller(folder, index)
            started.append(peer)
            callers.put(peer)

        def one(key: str, case: Case) -> None:
            reason = not_over_sip(case)
            if reason is not None:
                runs[key] = SipRun(skipped=reason)
                return
            caller = callers.get()
            began = time.monotonic()
            try:
                runs[key] = play_over_sip(caller, client, port, key, case, folder, tone)
            except Exception as exc:  # reported by the case's own test, with the logs
                runs[key] = SipRun(
                    error=f"{exc}\n--- worker log ---\n{worker_log.read_text()[-4000:]}"
                )
                hang_up_if_up(caller)
            finally:
                runs[key].seconds = time.monotonic() - began
                callers.put(caller)

        # the slowest first (silences and voicemails wait for whole prompts)
        order = sorted(CASES, key=lambda c: -sum(waits_out(text) for text in c[2].inputs))
        with ThreadPoolExecutor(CALLERS) as pool:
            for future in [pool.submit(one, key, case) for key, _flow, case in order]:
                future.result()
        yield runs
    finally:
        for peer in started:
            with contextlib.suppress(OSError):  # it exited already
                peer.send(op="quit")
        for peer in started:
            stop_process(peer.process, 10)  # type: ignore[arg-type]
        stop_process(worker, 10)
        client.close()


@pytest.fixture(scope="module")
def repo_flows() -> DirectoryFlows:
    settings = load_config(REPO_ROOT / "config.yaml", environ={}).settings
    return DirectoryFlows(FLOWS_DIR, frozenset(settings.queues))


def _without_transport(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {k: v for k, v in values.items() if k not in TRANSPORT_KEYS}


def loudest(path: Path) -> int:
    with wave.open(str(path), "rb") as heard:
        samples = array.array("h", heard.readframes(heard.getnframes()))
    return max((abs(s) for s in samples), default=0)


@pytest.mark.parametrize(
    ("key", "flow", "case"), [pytest.param(*case, id=case[2].name) for case in CASES]
)
def test_the_case_over_sip_gives_what_the_engine_gives(
    sip_runs: dict[str, SipRun], repo_flows: DirectoryFlows, key: str, flow: str, case: Case
) -> None:
    run = sip_runs[key]
    if run.skipped is not None:
        pytest.skip(run.skipped)
    assert run.error is None, run.error
    assert run.played is not None
    sip = run.played
    engine = play_case(repo_flows, flow, case)
    expect = case.expect
    if expect.outcome is not None and "recording" in expect.outcome:
        # the URL the case gave its recording is Twilio's; over SIP it is the worker's file
        expect = expect.model_copy(update={"outcome": _without_transport(expect.outcome)})
        recording = (sip.outcome or {}).get("recording", "")
        assert str(recording).startswith("file://"), sip.outcome
    assert judge(expect, sip) == [], f"{run.seconds:.1f} s; heard {sip.heard}"
    assert sip.path == engine.path
    assert sip.heard == engine.heard
    assert _without_transport(sip.outcome) == _without_transport(engine.outcome)
    assert _without_transport(sip.variables) == _without_transport(engine.variables)
    assert sip.waiting_for == engine.waiting_for
    assert run.heard_wav is not None
    assert loudest(run.heard_wav) > HEARD_LEVEL, "the caller's RTP carried no prompt"
