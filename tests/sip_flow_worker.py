"""A SIP media worker for the flow tests over SIP (tests/test_sip_flowtests.py).

The real endpoint (ivr.sip_adapter) and the real driver (ivr.sip_driver) answer the calls;
what differs from `kokan sip` is only what a flow test needs and production must not have,
so it lives here and not behind an option of `kokan sip`:

- each call runs on the engine a flow test case would run on (`ivr.simulator.make_engine`:
  the case's fixed clock, its canned http answers, the working flow files), chosen by the
  user dialled, `flowtest-<key>` (pjsua hands the driver the To URI without its
  parameters); the engine is given the engine runner's called number instead, so a flow
  sees the same `called` in both;
- the driver's phase (starting, prompting, listening, recording…), the step it is on and
  what it waits for are written to Redis after every loop turn, so the test presses keys
  when the call waits for them and waits for timeouts without guessing;
- the text of every prompt the driver hands to the endpoint to play is appended to a Redis
  list per call: what the caller was played, in order.

The path, the outcome and the variables are read by the test from the call's state as the
driver stored it (ivr.call_store), as for any SIP call.

    python -m tests.sip_flow_worker --config worker.yaml flows/tests/main.yaml …
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from ivr.call_store import CallStore
from ivr.engine import Audio, CallState, Engine, Environment, Event, FlowSource, Say, Turn
from ivr.flowtests import Case, load_tests
from ivr.simulator import SIMULATED_CALLED, make_engine, waiting_for
from ivr.sip_adapter import SipEndpoint
from ivr.sip_driver import PROVIDER, Driver, Phase, kokan_call_id
from ivr.sip_prompts import PromptCache
from ivr.sources import DirectoryFlows
from ivr.twiml import APOLOGY
from kokan.config import SipSettings, load
from kokan.redis_conn import connect

STATUS_KEY = "kokan:test:sip-flows:status:{call}"
"""Hash: phase, step, waiting (keys / speech / recording / ""), finish (a Record's key)."""
HEARD_KEY = "kokan:test:sip-flows:heard:{call}"
"""List: the texts (or files) of the prompts played to the call, in order."""
CASE_USER = re.compile(r"sips?:flowtest-([0-9]+-[0-9]+)@")
"""The case a call plays, the user dialled: flowtest-<test file index>-<case index>."""
KEY_TTL_S = 3600
WAITS = (Phase.PROMPTING, Phase.LISTENING, Phase.RECORDING)
"""Phases in which `Driver.then` is what the call waits for."""

log = logging.getLogger(__name__)

Cases = dict[str, tuple[str, Case]]


def load_cases(files: Sequence[Path]) -> Cases:
    """Every case of the test files, by the key the test dials it with."""
    cases: Cases = {}
    for file_index, path in enumerate(files):
        tests = load_tests(path)
        for case_index, case in enumerate(tests.cases):
            cases[f"{file_index}-{case_index}"] = (tests.flow, case)
    return cases


def _unbound_clock() -> dt.datetime:
    raise RuntimeError("a call that is not a flow test case")


def _unbound_fetch(method: str, url: str, timeout: float) -> Any:
    raise RuntimeError("a call that is not a flow test case")


class CaseEngines(Engine):
    """The engine of each call's case (make_engine, as the engine runner builds it)."""

    def __init__(self, flows: FlowSource, cases: Cases) -> None:
        super().__init__(flows, Environment(now=_unbound_clock, fetch_json=_unbound_fetch))
        self.cases = cases
        self.calls: dict[str, Engine] = {}

    def bind(self, call_id: str, key: str) -> str:
        """The call plays case `key`: its engine from now on; returns the case's flow."""
        flow, case = self.cases[key]
        self.calls[call_id] = make_engine(self.flows, case.at, case.http)
        return flow

    def _of(self, call_id: str) -> Engine:
        engine = self.calls.get(call_id)
        if engine is None:
            raise RuntimeError(f"call {call_id} plays no flow test case")
        return engine

    def start(self, flow_name: str, call_id: str, caller: str, called: str) -> Turn:
        return self._of(call_id).start(flow_name, call_id, caller, SIMULATED_CALLED)

    def start_survey(self, state: CallState) -> Turn | None:
        return self._of(state.call_id).start_survey(state)

    def resume(self, state: CallState, event: Event) -> Turn:
        return self._of(state.call_id).resume(state, event)

    def fallback(self, state: CallState) -> Turn:
        return self._of(state.call_id).fallback(state)


class NotingPrompts(PromptCache):
    """The prompt cache, remembering which text (or flow file) each audio file says."""

    def __init__(self, data_dir: Path, flows_dir: Path) -> None:
        super().__init__(data_dir, flows_dir)
        self.says: dict[Path, str] = {}

    def audio(self, item: Audio) -> Path:
        path = super().audio(item)
        # as ivr.simulator.heard names a prompt: the text said, or the file played
        self.says[path] = item.text if isinstance(item, Say) else item.source
        return path


class ObservedEndpoint(SipEndpoint):
    """The pjsua2 endpoint; each play also appends the prompts' texts to the call's list."""

    def __init__(self, settings: SipSettings, prompts: NotingPrompts, client: redis.Redis) -> None:
        super().__init__(settings)
        self.prompts = prompts
        self.client = client

    def play(self, leg: str, files: Sequence[Path], *, loop: bool = False) -> None:
        super().play(leg, files, loop=loop)
        call_id = self.driver.call_id_of(leg) if self.driver is not None else None
        texts = [self.prompts.says[path] for path in files if path in self.prompts.says]
        if call_id is not None and texts:
            key = HEARD_KEY.format(call=call_id)
            pipe = self.client.pipeline(transaction=False)
            pipe.rpush(key, *texts)
            pipe.expire(key, KEY_TTL_S)
            pipe.execute()


class ObservedDriver(Driver):
    """The driver, binding each call to its case and publishing its phase after each turn."""

    def __init__(self, engines: CaseEngines, client: redis.Redis, **wiring: Any) -> None:
        super().__init__(engine=engines, flow_for_number=self._arriving_flow, **wiring)
        self.engines = engines
        self.client = client
        self._arriving = ""
        self._published: dict[str, tuple[str, int, str, str]] = {}

    def _arriving_flow(self, called: str) -> str:
        return self._arriving

    def incoming(self, leg: str, sip_call_id: str, remote_uri: str, local_uri: str) -> None:
        found = CASE_USER.search(local_uri)
        self._arriving = ""
        if found is not None and found.group(1) in self.engines.cases:
            self._arriving = self.engines.bind(kokan_call_id(sip_call_id), found.group(1))
        else:
            log.warning("a call to %s names no flow test case", local_uri)
        super().incoming(leg, sip_call_id, remote_uri, local_uri)

    def digit(self, leg: str, key: str) -> None:
        session = self.sessions.get(leg)
        phase = session.phase.value if session is not None else "no call"
        log.info("key %s (%s, %s)", key, self.call_id_of(leg), phase)  # for a failing case
        super().digit(leg, key)

    def tick(self, now: float) -> None:
        super().tick(now)
        self.publish()

    def publish(self) -> None:
        """Each call's phase, step and wait, written when they change."""
        current: dict[str, tuple[str, int, str, str]] = {}
        for session in self.sessions.values():
            state, then = session.state, session.then
            waiting = finish = ""
            if state is not None and then is not None and session.phase in WAITS:
                waiting = waiting_for(Turn(state, (then,))) or ""
                finish = getattr(then, "finish_on_key", "") if waiting == "recording" else ""
            step = state.step if state is not None else -1
            current[session.call_id] = (session.phase.value, step, waiting, finish)
        for call_id, (_phase, step, _waiting, _finish) in self._published.items():
            if call_id not in current:
                current[call_id] = (Phase.ENDED.value, step, "", "")
        changed = {k: v for k, v in current.items() if self._published.get(k) != v}
        if not changed:
            return
        pipe = self.client.pipeline(transaction=False)
        for call_id, (phase, step, waiting, finish) in changed.items():
            key = STATUS_KEY.format(call=call_id)
            pipe.hset(key, mapping={"phase": phase, "step": step, "waiting": waiting})
            pipe.hset(key, "finish", finish)
            pipe.expire(key, KEY_TTL_S)
        pipe.execute()
        self._published = {k: v for k, v in current.items() if v[0] != Phase.ENDED.value}


def build(config: Path, test_files: Sequence[Path]) -> tuple[ObservedEndpoint, Callable[[], None]]:
    settings = load(config).settings
    if settings.redis_url is None:
        raise SystemExit("the flow test worker needs redis_url in its configuration")
    client = connect(settings.redis_url)
    data_dir = settings.resolved_data_dir
    flows = DirectoryFlows(settings.flows_dir, frozenset(settings.queues))  # as `flows test`
    prompts = NotingPrompts(data_dir, settings.flows_dir)
    endpoint = ObservedEndpoint(settings.sip, prompts, client)
    driver = ObservedDriver(
        CaseEngines(flows, load_cases(test_files)),
        client,
        store=CallStore(client, namespace=PROVIDER),
        media=endpoint,
        prompts=prompts,
        hold_music=lambda _queue: None,
        recordings_dir=data_dir / "sip-voicemail",
        keep_voicemail=lambda call_id, path, seconds: log.info("voicemail %s kept", path),
        clock=time.monotonic,
    )
    endpoint.driver = driver

    def prepare() -> None:  # as SipWorker.prepare: a broken TTS shows before the first call
        for say in APOLOGY:
            prompts.audio(say)
        prompts.beep()

    return endpoint, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description="a SIP worker playing flow test cases")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("tests", type=Path, nargs="+")
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    endpoint, prepare = build(options.config, options.tests)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    prepare()
    endpoint.start()
    endpoint.run(stop)


if __name__ == "__main__":
    main()
