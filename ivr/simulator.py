"""A pretend call through the engine: used by `kokan flows simulate` and by flow tests."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ivr.engine import (
    Action,
    Engine,
    Enqueue,
    Environment,
    Event,
    FlowSource,
    Hangup,
    Input,
    Listen,
    NoInput,
    Play,
    Record,
    Recorded,
    Say,
    Transfer,
    Turn,
)

MAX_TURNS = 100
"""A scripted call that has not ended after this many answers is stuck in a loop."""
SIMULATED_CALLED = "+81312345678"


class UnknownUrl(Exception):
    pass


def canned_fetcher(answers: Mapping[str, Any]) -> Callable[[str, str, float], Any]:
    """Flow tests describe the http node's server by its answers; unknown URLs fail like a 404."""

    def fetch(method: str, url: str, timeout: float) -> Any:
        if url not in answers:
            raise UnknownUrl(f"{method} {url}: no answer given in the test")
        answer = answers[url]
        if isinstance(answer, dict) and answer.get("error"):
            raise UnknownUrl(f"{method} {url}: {answer['error']}")
        return answer

    return fetch


def parse_input(text: str) -> Event:
    """`1`, `123#`: keys; `speech:はい`: words; `timeout`: silence; `record[:URL]`: a voicemail."""
    text = str(text)
    if text == "timeout":
        return NoInput()
    if text.startswith("speech:"):
        return Input(speech=text.removeprefix("speech:"))
    if text == "record" or text.startswith("record:"):
        url = (
            text.removeprefix("record").removeprefix(":") or "https://recordings.invalid/voicemail"
        )
        return Recorded(url=url, duration=5)
    return Input(digits=text)


def describe(action: Action) -> Iterator[str]:
    """What the caller hears or what happens, one line each, for terminals and test results."""
    if isinstance(action, Say):
        yield f"[{action.language}] {action.text}"
    elif isinstance(action, Play):
        yield f"(plays {action.source})"
    elif isinstance(action, Listen):
        for prompt in action.prompts:
            yield from describe(prompt)
    elif isinstance(action, Record):
        for prompt in action.prompts:
            yield from describe(prompt)
        yield f"(beep: recording up to {action.max_length} s)"
    elif isinstance(action, Enqueue):
        yield f"(queued to {action.queue}, priority {action.priority}, skills {action.skills})"
    elif isinstance(action, Transfer):
        yield f"(transferred to {action.target})"
    elif isinstance(action, Hangup):
        yield "(hangs up)"


def heard(actions: tuple[Action, ...]) -> list[str]:
    """Only the spoken and played prompts, in order."""
    found: list[str] = []
    for action in actions:
        prompts: tuple[Action, ...] = (action,)
        if isinstance(action, Listen | Record):
            prompts = action.prompts
        for prompt in prompts:
            if isinstance(prompt, Say):
                found.append(prompt.text)
            elif isinstance(prompt, Play):
                found.append(prompt.source)
    return found


def waiting_for(turn: Turn) -> str | None:
    for action in turn.actions:
        if isinstance(action, Listen):
            return "speech" if action.speech and not action.digits else "keys"
        if isinstance(action, Record):
            return "recording"
    return None


def outcome_text(outcome: dict[str, Any] | None) -> str:
    if outcome is None:
        return "the call is still in the flow"
    kind = outcome.get("kind")
    if kind == "queued":
        skills = ", ".join(f"{k}≥{v}" for k, v in outcome.get("skills", {}).items()) or "none"
        return (
            f"queued to {outcome['queue']} with priority {outcome['priority']} and skills {skills}"
        )
    if kind == "voicemail":
        return "voicemail"
    if kind == "transferred":
        return f"transferred to {outcome['to']}"
    return "hung up"


@dataclass
class Simulation:
    """Drives one pretend call; records the path, the prompts heard and the outcome."""

    engine: Engine
    flow: str
    caller: str
    called: str = SIMULATED_CALLED
    turns: list[Turn] = field(default_factory=list)

    def start(self) -> Turn:
        turn = self.engine.start(self.flow, "simulated-call", self.caller, self.called)
        self.turns.append(turn)
        return turn

    def answer(self, event: Event) -> Turn:
        turn = self.engine.resume(self.turns[-1].state, event)
        self.turns.append(turn)
        return turn

    @property
    def finished(self) -> bool:
        return bool(self.turns) and (
            self.turns[-1].state.finished and waiting_for(self.turns[-1]) is None
        )

    @property
    def heard(self) -> list[str]:
        return [text for turn in self.turns for text in heard(turn.actions)]

    @property
    def path(self) -> list[str]:
        return list(self.turns[-1].state.path) if self.turns else []


@dataclass
class Transcript:
    """A scripted call written down, for callers without a terminal (the admin API)."""

    lines: list[str]
    path: list[str]
    heard: list[str]
    outcome: dict[str, Any] | None
    variables: dict[str, Any]
    waiting_for: str | None
    unused_inputs: list[str]


def run_scripted(simulation: Simulation, inputs: list[str]) -> Transcript:
    """Answer each wait with the next input, as `kokan flows simulate --inputs` does; stop
    when the call ends or the inputs run out, and say which happened."""
    remaining = list(inputs)
    lines: list[str] = []
    turn = simulation.start()
    while True:
        for action in turn.actions:
            lines.extend(describe(action))
        wanted = waiting_for(turn)
        if wanted is None or not remaining:
            break
        answer = remaining.pop(0)
        lines.append(f"> {answer}")
        turn = simulation.answer(parse_input(answer))
    return Transcript(
        lines=lines,
        path=simulation.path,
        heard=simulation.heard,
        outcome=turn.state.outcome,
        variables=dict(turn.state.variables),
        waiting_for=wanted,
        unused_inputs=remaining,
    )


def fixed_clock(at: dt.datetime) -> Callable[[], dt.datetime]:
    return lambda: at


def make_engine(flows: FlowSource, at: dt.datetime, answers: Mapping[str, Any]) -> Engine:
    return Engine(flows, Environment(now=fixed_clock(at), fetch_json=canned_fetcher(answers)))


def parse_moment(text: str) -> dt.datetime:
    """ISO 8601 with an offset (2026-12-31T20:00+09:00); a naive time is refused."""
    moment = dt.datetime.fromisoformat(re.sub(r"\s+", "T", text.strip(), count=1))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r}: give a UTC offset, e.g. 2026-12-31T20:00+09:00")
    return moment
