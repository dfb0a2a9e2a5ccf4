"""The transport-free IVR engine: (state, event) in -> (actions, new state) out.

Drivers (Twilio webhooks, the SIP endpoint, the simulator, flow tests) turn actions into
TwiML, audio or text and feed caller input back as events; the engine never does I/O of
its own except through the `Environment` it is given (clock and JSON fetches).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import jmespath

from ivr import model as m
from ivr.expressions import Scope, evaluate
from ivr.hours import is_open

MAX_HOPS = 200
"""Nodes one turn may pass without waiting for the caller; more means a runaway loop."""
MAX_DIGITS = 64
"""Longer keypad input is not something a caller typed; it is refused as invalid."""
MAX_SPEECH = 500
"""Characters of recognised speech kept; recognisers do not produce more for one answer."""
SPEECH_PUNCTUATION = " .,!?\u3002\u3001\uff01\uff1f"
"""Recognisers add sentence punctuation (also the Japanese forms); phrases are compared without it."""
MAX_VARIABLE_TEXT = 2_000
"""Variables fetched over http are cut to this, so a huge answer cannot bloat call state."""

log = logging.getLogger(__name__)

DEFAULT_APOLOGY = {
    "ja": "申し訳ございません。ただいまシステムに問題が発生しております。",
    "en": "We are sorry, something went wrong on our side.",
}
VOICEMAIL_INVITATION = {
    "ja": "発信音のあとにメッセージをお話しください。",
    "en": "Please leave a message after the tone.",
}


# ---- actions: what the caller should hear or what should happen to the call ----


@dataclass(frozen=True)
class Say:
    text: str
    language: str
    voice: str | None = None


@dataclass(frozen=True)
class Play:
    source: str
    """A path relative to the flows folder (prompts/x.wav) or an http(s) URL."""
    said: Say | None = None
    """The flow's words for the file, said instead when it is missing at run time."""


Audio = Say | Play


@dataclass(frozen=True)
class Listen:
    prompts: tuple[Audio, ...]
    digits: bool
    speech: bool
    timeout: int
    min_digits: int = 1
    max_digits: int = 1
    finish_on_key: str = ""
    hints: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    language: str = "ja"


@dataclass(frozen=True)
class Record:
    prompts: tuple[Audio, ...]
    max_length: int
    finish_on_key: str


@dataclass(frozen=True)
class Enqueue:
    queue: str
    priority: int
    skills: dict[str, int]


@dataclass(frozen=True)
class Transfer:
    target: str


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class RecordingControl:
    """Pause or resume the call's recording now (a `recording` node); silent for the caller."""

    action: str


Action = Say | Play | Listen | Record | Enqueue | Transfer | Hangup | RecordingControl


# ---- events: what the caller did ----


@dataclass(frozen=True)
class Input:
    digits: str | None = None
    speech: str | None = None


@dataclass(frozen=True)
class NoInput:
    pass


@dataclass(frozen=True)
class Recorded:
    url: str
    duration: int = 0


Event = Input | NoInput | Recorded


# ---- state ----


@dataclass
class Frame:
    flow: str
    version: int
    return_to: str


@dataclass
class CallState:
    """Everything needed to continue a call on any process: JSON-serialisable by design."""

    call_id: str
    flow: str
    version: int
    caller: str
    called: str
    language: str
    node: str | None = None
    step: int = 0
    attempts: int = 0
    variables: dict[str, Any] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)
    stack: list[Frame] = field(default_factory=list)
    outcome: dict[str, Any] | None = None
    survey: str | None = None
    surveying: bool = False
    """The call is in its post-call survey: each turn reports the answers so far."""

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def to_json(self) -> dict[str, Any]:
        # written out rather than dataclasses.asdict: this runs on every webhook, and asdict
        # deep-copies every value recursively
        return {
            "call_id": self.call_id,
            "flow": self.flow,
            "version": self.version,
            "caller": self.caller,
            "called": self.called,
            "language": self.language,
            "node": self.node,
            "step": self.step,
            "attempts": self.attempts,
            "variables": dict(self.variables),
            "path": list(self.path),
            "stack": [
                {"flow": f.flow, "version": f.version, "return_to": f.return_to} for f in self.stack
            ],
            "outcome": dict(self.outcome) if self.outcome is not None else None,
            "survey": self.survey,
            "surveying": self.surveying,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallState:
        data = dict(data)
        data["stack"] = [Frame(**frame) for frame in data.get("stack", [])]
        return cls(**data)


@dataclass(frozen=True)
class Turn:
    state: CallState
    actions: tuple[Action, ...]


# ---- the engine's ports ----


class FlowSource(Protocol):
    def active(self, name: str) -> tuple[int, m.Flow]:
        """The version new calls use."""

    def version(self, name: str, version: int) -> m.Flow:
        """An exact version, for calls already in progress."""


FetchJson = Callable[[str, str, float], Any]
"""(method, url, timeout seconds) -> parsed JSON; raises on any failure."""


@dataclass(frozen=True)
class Environment:
    now: Callable[[], dt.datetime]
    fetch_json: FetchJson


class FlowRuntimeError(Exception):
    """Something inside a flow failed at run time; the caller gets the fallback."""


# ---- the engine ----


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
CALL_NAMES = ("caller", "called", "language")
"""Names of the call itself that expressions know; placeholders know them too."""


def _placeholder(state: CallState, name: str) -> Any:
    """A {name} in a prompt or URL: the call's variable, else the caller/called/language."""
    if name in state.variables:
        return state.variables[name]
    if name in CALL_NAMES:
        return getattr(state, name)
    return None


class Engine:
    def __init__(self, flows: FlowSource, environment: Environment) -> None:
        self.flows = flows
        self.environment = environment

    def start(self, flow_name: str, call_id: str, caller: str, called: str) -> Turn:
        version, flow = self.flows.active(flow_name)
        state = CallState(
            call_id=call_id,
            flow=flow_name,
            version=version,
            caller=caller,
            called=called,
            language=flow.language,
        )
        return self._guarded(state, lambda actions: self._run(state, flow, flow.start, actions))

    def start_survey(self, state: CallState) -> Turn | None:
        """After the agent leg: the survey flow a `survey` node chose, on the same call.
        Steps continue from the call's own, so a reply stored for an earlier step is never
        taken for the survey's; the caller's language and variables come along."""
        if not state.survey:
            return None
        version, flow = self.flows.active(state.survey)
        survey = CallState(
            call_id=state.call_id,
            flow=state.survey,
            version=version,
            caller=state.caller,
            called=state.called,
            language=state.language,
            step=state.step + 1,
            variables=dict(state.variables),
            surveying=True,
        )
        return self._guarded(survey, lambda actions: self._run(survey, flow, flow.start, actions))

    def resume(self, state: CallState, event: Event) -> Turn:
        state = CallState.from_json(state.to_json())  # never mutate the caller's copy
        if state.finished or state.node is None:
            outcome = state.outcome or {}
            if isinstance(event, Recorded) and outcome.get("kind") == "voicemail":
                # the fallback's voicemail: keep the recording with the outcome
                state.outcome = {**outcome, "recording": event.url, "seconds": event.duration}
                state.variables["voicemail_url"] = event.url
            return Turn(state, (Hangup(),))
        flow = self.flows.version(state.flow, state.version)
        node = flow.nodes[state.node]
        state.step += 1
        return self._guarded(state, lambda actions: self._answer(state, flow, node, event, actions))

    # -- internals --

    def _guarded(self, state: CallState, work: Callable[[list[Action]], None]) -> Turn:
        actions: list[Action] = []
        try:
            work(actions)
        except Exception as exc:
            log.exception(
                "flow %s v%s failed at %s: %s", state.flow, state.version, state.node, exc
            )
            return self.fallback(state)
        return Turn(state, tuple(actions))

    def fallback(self, state: CallState) -> Turn:
        """Apology, then the flow's fallback queue or a voicemail: never dead air."""
        try:
            flow: m.Flow | None = self.flows.version(state.flow, state.version)
        except Exception:
            flow = None
        language = state.language if state.language in DEFAULT_APOLOGY else "ja"
        prompts: list[Audio] = []
        if flow is not None and flow.fallback.prompt is not None:
            prompts.extend(self._render(flow.fallback.prompt, state, flow))
        else:
            prompts.append(Say(DEFAULT_APOLOGY[language], language))
        state.node = None
        if flow is not None and flow.fallback.queue:
            state.outcome = {
                "kind": "queued",
                "queue": flow.fallback.queue,
                "priority": 0,
                "skills": {},
                "fallback": True,
            }
            return Turn(state, (*prompts, Enqueue(flow.fallback.queue, 0, {})))
        state.outcome = {"kind": "voicemail", "fallback": True}
        prompts.append(Say(VOICEMAIL_INVITATION[language], language))
        return Turn(state, (Record(tuple(prompts), 120, "#"),))

    def apology(self, state: CallState) -> tuple[Say, ...]:
        """A short apology in the call's language: the spoken parts of the flow's fallback
        prompt, else Kokan's own (said where a prompt file has gone missing)."""
        try:
            flow: m.Flow | None = self.flows.version(state.flow, state.version)
        except Exception:
            flow = None
        if flow is not None and flow.fallback.prompt is not None:
            said = [
                a for a in self._render(flow.fallback.prompt, state, flow) if isinstance(a, Say)
            ]
            if said:
                return tuple(said)
        language = state.language if state.language in DEFAULT_APOLOGY else "ja"
        return (Say(DEFAULT_APOLOGY[language], language),)

    def _scope(self, state: CallState, flow: m.Flow) -> Scope:
        return Scope(
            flow=flow,
            variables=state.variables,
            caller=state.caller,
            called=state.called,
            language=state.language,
            now=self.environment.now(),
        )

    def _text(self, texts: dict[str, str], state: CallState, flow: m.Flow) -> tuple[str, str]:
        for language in (state.language, "*", flow.language):
            if language in texts:
                chosen = texts[language]
                spoken_in = state.language if language == "*" else language
                return self._fill(chosen, state), spoken_in
        language, text = next(iter(texts.items()))
        return self._fill(text, state), language

    def _fill(self, text: str, state: CallState) -> str:
        def value(match: re.Match[str]) -> str:
            found = _placeholder(state, match.group(1))
            return "" if found is None else str(found)

        return _PLACEHOLDER.sub(value, text)

    def _render(self, prompt: m.Prompt | None, state: CallState, flow: m.Flow) -> list[Audio]:
        rendered: list[Audio] = []
        for part in prompt.parts if prompt else ():
            if part.play is not None:  # a say beside it is its words (Play.said)
                source, _language = self._text(part.play, state, flow)
                rendered.append(Play(source, self._said(part.say, part.voice, state, flow)))
            elif part.say is not None:
                said = self._said(part.say, part.voice, state, flow)
                if said is not None:
                    rendered.append(said)
        return rendered

    def _said(
        self, texts: dict[str, str] | None, voice: str | None, state: CallState, flow: m.Flow
    ) -> Say | None:
        if not texts:
            return None
        text, language = self._text(texts, state, flow)
        return Say(text, language, voice or flow.voices.get(language))

    def _enter(self, state: CallState, name: str) -> None:
        state.path.append(name if not state.stack else f"{state.flow}:{name}")
        state.node = name
        state.attempts = 0

    def _run(self, state: CallState, flow: m.Flow, name: str, actions: list[Action]) -> None:
        """Walk nodes until one waits for the caller or the IVR part of the call ends."""
        for _hop in range(MAX_HOPS):
            self._enter(state, name)
            node = flow.nodes.get(name)
            if node is None:
                raise FlowRuntimeError(f"node {name!r} does not exist in {state.flow}")
            following = self._step(state, flow, node, actions)
            if following is None:
                return
            if isinstance(following, tuple):
                flow, name = following
            else:
                name = following
        raise FlowRuntimeError(f"more than {MAX_HOPS} nodes without caller input")

    def _step(
        self, state: CallState, flow: m.Flow, node: m.Node, actions: list[Action]
    ) -> str | tuple[m.Flow, str] | None:
        """Run one node; return the next node (or flow and node), or None to wait/stop."""
        if isinstance(node, m.SayNode):
            actions.extend(self._render(node.text, state, flow))
            return node.next
        if isinstance(node, m.PlayNode):
            actions.append(Play(node.file, self._said(node.text, None, state, flow)))
            return node.next
        if isinstance(node, m.MenuNode | m.GatherNode):
            actions.append(self._listen(node, state, flow, lead=()))
            return None
        if isinstance(node, m.BranchNode):
            scope = self._scope(state, flow)
            for rule in node.rules:
                if evaluate(rule.when, scope):
                    return rule.next
            return node.otherwise
        if isinstance(node, m.SetNode):
            for variable, expression in node.vars.items():
                value = (
                    evaluate(expression, self._scope(state, flow))
                    if isinstance(expression, str)
                    else expression
                )
                self._assign(state, variable, value)
            return node.next
        if isinstance(node, m.HttpNode):
            return self._http(node, state)
        if isinstance(node, m.QueueNode):
            if node.hours is not None and node.when_closed is not None:
                hours = flow.hours.get(node.hours)
                if hours is None:
                    raise FlowRuntimeError(f"queue node uses unknown hours {node.hours!r}")
                if not is_open(hours, self.environment.now(), flow.timezone):
                    return node.when_closed
            actions.extend(self._render(node.prompt, state, flow))
            priority = node.priority
            if isinstance(priority, str):
                priority = int(evaluate(priority, self._scope(state, flow)) or 0)
            state.outcome = {
                "kind": "queued",
                "queue": node.queue,
                "priority": priority,
                "skills": dict(node.skills),
            }
            policy = self._recording_policy(state, flow)
            if policy is not None:
                # the flow's policy wins over the queue's; the driver reads it from here
                state.outcome["recording"] = policy.mode
                if policy.mode != "never" and policy.consent:
                    text, language = self._text(policy.consent, state, flow)
                    actions.append(Say(text, language, flow.voices.get(language)))
                    state.outcome["consent_said"] = True
            state.node = None
            actions.append(Enqueue(node.queue, priority, dict(node.skills)))
            return None
        if isinstance(node, m.RecordingNode):
            actions.append(RecordingControl(node.action))
            return node.next
        if isinstance(node, m.VoicemailNode):
            prompts = self._render(node.prompt, state, flow)
            actions.append(Record(tuple(prompts), node.max_length, node.finish_on_key))
            return None
        if isinstance(node, m.TransferNode):
            actions.extend(self._render(node.prompt, state, flow))
            state.outcome = {"kind": "transferred", "to": node.to}
            state.node = None
            actions.append(Transfer(node.to))
            return None
        if isinstance(node, m.SurveyNode):
            state.survey = node.flow
            return node.next
        if isinstance(node, m.GotoNode):
            return node.to
        if isinstance(node, m.SubflowNode):
            state.stack.append(Frame(state.flow, state.version, node.next))
            version, subflow = self.flows.active(node.flow)
            state.flow, state.version = node.flow, version
            return (subflow, subflow.start)
        if isinstance(node, m.ReturnNode):
            if not state.stack:
                self._hang_up(state, actions)
                return None
            frame = state.stack.pop()
            state.flow, state.version = frame.flow, frame.version
            return (self.flows.version(frame.flow, frame.version), frame.return_to)
        if isinstance(node, m.HangupNode):
            actions.extend(self._render(node.prompt, state, flow))
            self._hang_up(state, actions)
            return None
        raise FlowRuntimeError(f"no behaviour for node type {type(node).__name__}")

    def _recording_policy(self, state: CallState, flow: m.Flow) -> m.FlowRecording | None:
        """The innermost flow that says how its calls are recorded: the current one, then
        the flows that called it as a subflow."""
        if flow.recording is not None:
            return flow.recording
        for frame in reversed(state.stack):
            caller = self.flows.version(frame.flow, frame.version)
            if caller.recording is not None:
                return caller.recording
        return None

    def _hang_up(self, state: CallState, actions: list[Action]) -> None:
        if state.outcome is None:
            state.outcome = {"kind": "hung-up"}
        state.node = None
        actions.append(Hangup())

    def _assign(self, state: CallState, variable: str, value: Any) -> None:
        if isinstance(value, str) and len(value) > MAX_VARIABLE_TEXT:
            value = value[:MAX_VARIABLE_TEXT]
        if not isinstance(value, str | int | float | bool | type(None)):
            value = str(value)[:MAX_VARIABLE_TEXT]
        state.variables[variable] = value
        if variable == "language" and isinstance(value, str) and m.LANGUAGE_CODE.fullmatch(value):
            state.language = value

    def _http(self, node: m.HttpNode, state: CallState) -> str:
        url = _PLACEHOLDER.sub(
            lambda match: urllib.parse.quote(
                str(_placeholder(state, match.group(1)) or ""), safe=""
            ),
            node.url,
        )
        try:
            answer = self.environment.fetch_json(node.method, url, node.timeout)
            for variable, expression in node.into.items():
                self._assign(state, variable, jmespath.search(expression, answer))
        except Exception as exc:
            log.warning("http node %s: %s %s failed: %s", state.node, node.method, url, exc)
            state.variables["http_error"] = type(exc).__name__
            return node.on_error
        return node.next

    def _listen(
        self,
        node: m.MenuNode | m.GatherNode,
        state: CallState,
        flow: m.Flow,
        lead: tuple[Audio, ...],
    ) -> Listen:
        prompts = (*lead, *self._render(node.prompt, state, flow))
        if isinstance(node, m.MenuNode):
            longest = max(len(key) for key in node.options)
            return Listen(
                prompts=prompts,
                digits=True,
                speech=False,
                timeout=node.timeout,
                min_digits=1,
                max_digits=longest,
                language=state.language,
            )
        return Listen(
            prompts=prompts,
            digits="digits" in node.input,
            speech="speech" in node.input,
            timeout=node.timeout,
            min_digits=node.min_digits,
            max_digits=node.max_digits,
            finish_on_key=node.finish_on_key,
            hints=node.hints,
            phrases=node.phrases,
            language=state.language,
        )

    def _answer(
        self, state: CallState, flow: m.Flow, node: m.Node, event: Event, actions: list[Action]
    ) -> None:
        if isinstance(node, m.VoicemailNode):
            if not isinstance(event, Recorded):
                raise FlowRuntimeError(
                    f"voicemail node got {type(event).__name__}, not a recording"
                )
            state.variables["voicemail_url"] = event.url
            state.variables["voicemail_seconds"] = event.duration
            state.outcome = {"kind": "voicemail", "recording": event.url, "seconds": event.duration}
            if node.next is None:
                self._hang_up(state, actions)
                return
            self._run(state, flow, node.next, actions)
            return
        if isinstance(node, m.MenuNode):
            choice = event.digits if isinstance(event, Input) else None
            if choice is not None and choice in node.options:
                self._run(state, flow, node.options[choice], actions)
                return
            self._retry(state, flow, node, event, actions)
            return
        if isinstance(node, m.GatherNode):
            value = self._gathered(node, event)
            if value is not None:
                self._assign(state, node.into, value)
                self._run(state, flow, node.next, actions)
                return
            self._retry(state, flow, node, event, actions)
            return
        raise FlowRuntimeError(f"node {state.node!r} does not wait for input")

    def _gathered(self, node: m.GatherNode, event: Event) -> str | None:
        if not isinstance(event, Input):
            return None
        if event.digits is not None and "digits" in node.input:
            digits = (
                event.digits.removesuffix(node.finish_on_key)
                if node.finish_on_key
                else event.digits
            )
            if (
                len(digits) <= MAX_DIGITS
                and digits.isascii()
                and digits.isdigit()
                and node.min_digits <= len(digits) <= node.max_digits
            ):
                return digits
            return None
        if event.speech is not None and "speech" in node.input:
            heard = " ".join(event.speech[:MAX_SPEECH].split()).strip(SPEECH_PUNCTUATION)
            if not heard:
                return None
            if node.phrases:
                wanted = {phrase.casefold(): phrase for phrase in node.phrases}
                return wanted.get(heard.casefold())
            return heard
        return None

    def _retry(
        self,
        state: CallState,
        flow: m.Flow,
        node: m.MenuNode | m.GatherNode,
        event: Event,
        actions: list[Action],
    ) -> None:
        attempts = state.attempts + 1
        if attempts >= node.retries:
            self._run(state, flow, node.on_failure, actions)
            return
        state.attempts = attempts
        if isinstance(event, NoInput) and isinstance(node, m.MenuNode) and node.timeout_prompt:
            lead = self._render(node.timeout_prompt, state, flow)
        else:
            lead = self._render(node.invalid_prompt, state, flow)
        actions.append(self._listen(node, state, flow, lead=tuple(lead)))
