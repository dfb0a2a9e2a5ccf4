"""The flow language as typed models: a YAML flow is validated into these once.

Prompts accept three spellings so flows stay short to write:
``"text"`` (said in the call's language), ``{ja: "…", en: "…"}`` (one text per language),
or ``{say: …, play: …, voice: …}``; a list of these plays in order.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

NODE_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
"""Node names appear in URLs, logs and tests; keep them to safe identifiers."""
VARIABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
"""Variables are names inside expressions, so they must be identifiers."""
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
PROMPT_KEYS = {"say", "play", "voice"}
KEYPAD_KEY = r"^[0-9*#]$"
"""A menu option is one key of the phone's keypad."""
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

NodeName = Annotated[str, Field(pattern=NODE_NAME)]


def _no_bool(value: Any) -> Any:
    # pydantic's lax mode reads YAML `yes`/`true` as 1; a timeout of 1 is never what was meant
    if isinstance(value, bool):
        raise ValueError(
            "must be a number, not true/false (YAML reads an unquoted yes/no/on/off as true/false)"
        )
    return value


Number = Annotated[int, BeforeValidator(_no_bool)]
Seconds = Annotated[float, BeforeValidator(_no_bool)]
_ONLY_PATTERN_KEYS: dict[str, Any] = {"additionalProperties": False}
"""JSON Schema: a key not matching the name pattern is an error, as it is in the loader."""
KeypadKey = Annotated[str, Field(pattern=KEYPAD_KEY)]
VariableName = Annotated[str, Field(pattern=VARIABLE_NAME)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_TEXTS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "object",
            "description": "one text per language",
            "minProperties": 1,
            "propertyNames": {"pattern": r"^(\*|[a-z]{2,3}(-[A-Za-z0-9]{2,8})?)$"},
            "additionalProperties": {"type": "string", "minLength": 1},
        },
    ]
}
_PART_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1, "description": "said in the call's language"},
        {
            "type": "object",
            "description": "one text per language, e.g. {ja: …, en: …}",
            "minProperties": 1,
            "propertyNames": {
                "pattern": LANGUAGE_CODE.pattern,
                "not": {"enum": sorted(PROMPT_KEYS)},
            },
            "additionalProperties": {"type": "string", "minLength": 1},
        },
        {
            "type": "object",
            "description": "text to say or audio to play (a file under flows/ or a URL); "
            "beside play, say is what is said if the file is missing at run time",
            "properties": {
                "say": _TEXTS_SCHEMA,
                "play": _TEXTS_SCHEMA,
                "voice": {"type": "string"},
            },
            "additionalProperties": False,
            "anyOf": [{"required": ["say"]}, {"required": ["play"]}],
        },
    ]
}


class PromptPart(Strict):
    """One thing the caller hears: text to speak, or audio to play, per language."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # the schema describes what is written in YAML, not the normalised model
        return dict(_PART_SCHEMA)

    say: dict[str, str] | None = None
    play: dict[str, str] | None = None
    voice: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"say": {"*": value}}
        if isinstance(value, dict) and value and not (set(value) & PROMPT_KEYS):
            return {"say": value}
        if isinstance(value, dict):
            value = dict(value)
            for key in ("say", "play"):
                if isinstance(value.get(key), str):
                    value[key] = {"*": value[key]}
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> PromptPart:
        # say beside play: the words said when the file is missing at run time
        if self.say is None and self.play is None:
            raise ValueError("a prompt has say or play (or play with say as its words)")
        for texts in (self.say, self.play):
            _check_texts(texts)
        return self


def _check_texts(texts: dict[str, str] | None) -> None:
    for language, text in (texts or {}).items():
        if language != "*" and not LANGUAGE_CODE.fullmatch(language):
            raise ValueError(f"{language!r} is not a language code (like ja or en-US)")
        if not text.strip():
            raise ValueError("a prompt text must not be empty")


class Prompt(Strict):
    parts: tuple[PromptPart, ...]

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "description": "a text, {language: text}, {say|play: …}, or a list of these",
            "anyOf": [
                _PART_SCHEMA,
                {"type": "array", "minItems": 1, "items": _PART_SCHEMA},
            ],
        }

    @model_validator(mode="before")
    @classmethod
    def _wrap(cls, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"parts"}:
            return value
        if isinstance(value, list):
            return {"parts": value}
        return {"parts": [value]}


class SayNode(Strict):
    type: Literal["say"]
    text: Prompt
    next: NodeName


class PlayNode(Strict):
    type: Literal["play"]
    file: str = Field(min_length=1, description="a file under flows/prompts/ or an http(s) URL")
    text: Annotated[dict[str, str] | None, WithJsonSchema(_TEXTS_SCHEMA)] = Field(
        default=None,
        description="what the file says, as text or {language: text}: spoken instead when "
        "the file is missing at run time",
    )
    next: NodeName

    @field_validator("text", mode="before")
    @classmethod
    def _text_spellings(cls, value: Any) -> Any:
        return {"*": value} if isinstance(value, str) else value

    @field_validator("text")
    @classmethod
    def _texts(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        _check_texts(value)
        return value


class MenuNode(Strict):
    type: Literal["menu"]
    prompt: Prompt
    options: dict[KeypadKey, NodeName] = Field(min_length=1, json_schema_extra=_ONLY_PATTERN_KEYS)
    timeout: Number = Field(default=5, ge=1, le=60, description="seconds to wait for a key")
    retries: Number = Field(default=3, ge=1, le=10, description="attempts before on_failure")
    invalid_prompt: Prompt | None = None
    timeout_prompt: Prompt | None = None
    on_failure: NodeName

    @field_validator("options", mode="before")
    @classmethod
    def _keys_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(key): target for key, target in value.items()}
        return value


class GatherNode(Strict):
    type: Literal["gather"]
    prompt: Prompt
    into: VariableName
    input: Literal["digits", "speech", "digits speech"] = "digits"
    min_digits: Number = Field(default=1, ge=1, le=64)
    max_digits: Number = Field(default=32, ge=1, le=64)
    finish_on_key: Literal["#", "*", ""] = "#"
    timeout: Number = Field(default=5, ge=1, le=60)
    retries: Number = Field(default=2, ge=1, le=10)
    hints: tuple[str, ...] = ()
    phrases: tuple[str, ...] = Field(
        default=(), description="speech is accepted only when it is one of these"
    )
    invalid_prompt: Prompt | None = None
    next: NodeName
    on_failure: NodeName

    @model_validator(mode="after")
    def _lengths(self) -> GatherNode:
        if self.min_digits > self.max_digits:
            raise ValueError("min_digits is larger than max_digits")
        return self


class Rule(Strict):
    when: str = Field(min_length=1, description="an expression, e.g. open('office')")
    next: NodeName


class BranchNode(Strict):
    type: Literal["branch"]
    rules: tuple[Rule, ...] = Field(min_length=1)
    otherwise: NodeName


class SetNode(Strict):
    type: Literal["set"]
    vars: dict[VariableName, str | int | float | bool] = Field(
        min_length=1,
        description="strings are expressions; quote text as \"'text'\"",
        json_schema_extra=_ONLY_PATTERN_KEYS,
    )
    next: NodeName


class HttpNode(Strict):
    type: Literal["http"]
    url: str = Field(description="may use {variable} placeholders, URL-encoded on use")
    method: Literal["GET", "POST"] = "GET"
    timeout: Seconds = Field(default=3.0, gt=0, le=10)
    into: dict[VariableName, str] = Field(
        default_factory=dict, description="variable: JMESPath into the JSON answer"
    )
    next: NodeName
    on_error: NodeName

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class QueueNode(Strict):
    type: Literal["queue"]
    queue: str = Field(min_length=1)
    priority: Number | str = Field(default=0, description="a number, or an expression")
    skills: dict[str, Annotated[Number, Field(ge=1, le=5)]] = Field(default_factory=dict)
    prompt: Prompt | None = None
    hours: NodeName | None = Field(
        default=None, description="this queue's own opening hours (a name under the flow's hours)"
    )
    when_closed: NodeName | None = Field(
        default=None, description="where callers go while the queue's hours say closed"
    )

    @model_validator(mode="after")
    def _closed_route(self) -> QueueNode:
        if (self.hours is None) != (self.when_closed is None):
            raise ValueError("hours and when_closed go together: where do callers go when closed?")
        return self


class VoicemailNode(Strict):
    type: Literal["voicemail"]
    prompt: Prompt | None = None
    max_length: Number = Field(default=120, ge=5, le=3600, description="seconds")
    finish_on_key: Literal["#", "*", ""] = "#"
    next: NodeName | None = None


class TransferNode(Strict):
    type: Literal["transfer"]
    to: str = Field(description="an E.164 number (+81…) or a sip: URI")
    prompt: Prompt | None = None

    @field_validator("to")
    @classmethod
    def _target(cls, value: str) -> str:
        if not (re.fullmatch(r"\+[1-9][0-9]{6,14}", value) or value.startswith("sip:")):
            raise ValueError("must be an E.164 number like +81312345678 or a sip: URI")
        return value


class SurveyNode(Strict):
    type: Literal["survey"]
    flow: NodeName = Field(description="the survey flow the caller enters after the agent leg")
    next: NodeName


class RecordingNode(Strict):
    """Pause the call's recording (before a card number) or resume it; the paused span is
    silence in the file and is listed in the recording's metadata. Nothing happens when
    the call is not being recorded."""

    type: Literal["recording"]
    action: Literal["pause", "resume"]
    next: NodeName


class GotoNode(Strict):
    type: Literal["goto"]
    to: NodeName


class SubflowNode(Strict):
    type: Literal["subflow"]
    flow: NodeName
    next: NodeName


class ReturnNode(Strict):
    """Ends a subflow: the call goes back to the calling flow's `next` (a hangup at top level)."""

    type: Literal["return"]


class HangupNode(Strict):
    type: Literal["hangup"]
    prompt: Prompt | None = None


Node = Annotated[
    SayNode
    | PlayNode
    | MenuNode
    | GatherNode
    | BranchNode
    | SetNode
    | HttpNode
    | QueueNode
    | VoicemailNode
    | TransferNode
    | SurveyNode
    | RecordingNode
    | GotoNode
    | SubflowNode
    | ReturnNode
    | HangupNode,
    Field(discriminator="type"),
]

NODE_TYPES = [
    "say",
    "play",
    "menu",
    "gather",
    "branch",
    "set",
    "http",
    "queue",
    "voicemail",
    "transfer",
    "survey",
    "recording",
    "goto",
    "subflow",
    "return",
    "hangup",
]
TERMINAL_TYPES = {"queue", "transfer", "hangup", "return"}
"""Nodes where the IVR's part of the call ends (voicemail ends unless it has a next)."""


class Hours(Strict):
    """Opening hours: weekly ranges in a time zone, minus public holidays and closed days."""

    timezone: str | None = None
    weekly: dict[str, str] = Field(description="mon-fri: '09:00-18:00', sat: '10:00-14:00'")
    holidays: str | None = Field(default=None, description="country code, e.g. JP")
    closed: tuple[dt.date, ...] = ()

    @field_validator("weekly")
    @classmethod
    def _weekly(cls, value: dict[str, str]) -> dict[str, str]:
        for days, ranges in value.items():
            expand_days(days)
            parse_ranges(ranges)
        return value


def expand_days(spec: str) -> list[int]:
    """'mon-fri' -> [0..4]; 'sat,sun' -> [5, 6]."""
    result: list[int] = []
    for part in spec.lower().split(","):
        part = part.strip()
        first, _, last = part.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ValueError(f"{spec!r}: days are mon..sun, as 'mon-fri' or 'sat,sun'")
        start, end = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        if end < start:
            raise ValueError(f"{spec!r}: a day range goes forward (mon-fri, not fri-mon)")
        result.extend(range(start, end + 1))
    return result


def parse_ranges(spec: str) -> list[tuple[dt.time, dt.time]]:
    """'09:00-12:00, 13:00-18:00' -> [(09:00, 12:00), (13:00, 18:00)]; 'closed' -> []."""
    if spec.strip().lower() == "closed":
        return []
    ranges: list[tuple[dt.time, dt.time]] = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", part)
        if not match:
            raise ValueError(f"{spec!r}: hours are 'HH:MM-HH:MM', comma-separated")
        h1, m1, h2, m2 = (int(group) for group in match.groups())
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
            raise ValueError(f"{spec!r}: not a time of day")
        start = dt.time(h1, m1)
        end = dt.time.max if h2 == 24 else dt.time(h2, m2)
        if end <= start:
            raise ValueError(f"{spec!r}: a range must end after it starts")
        ranges.append((start, end))
    return ranges


class Fallback(Strict):
    """What a caller hears when something inside Kokan fails, before voicemail or a queue."""

    prompt: Prompt | None = None
    queue: str | None = Field(
        default=None,
        description="queue the caller joins; without one, the caller leaves a voicemail",
    )


RecordingMode = Literal["always", "never", "on_demand"]
_RECORDING_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "enum": ["always", "never", "on_demand"]},
        {
            "type": "object",
            "properties": {
                "mode": {"type": "string", "enum": ["always", "never", "on_demand"]},
                "consent": {
                    "type": "object",
                    "description": "one text per language, said at the queue node",
                    "propertyNames": {"pattern": LANGUAGE_CODE.pattern},
                    "additionalProperties": {"type": "string", "minLength": 1},
                },
            },
            "required": ["mode"],
            "additionalProperties": False,
        },
    ]
}


class FlowRecording(Strict):
    """Whether calls of this flow are recorded once an agent answers. Set, it wins over the
    queue's own `record` (config.yaml `queues.<name>.record`); unset, the queue decides.
    `consent` is said at the flow's queue nodes, in the caller's language."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return dict(_RECORDING_SCHEMA)

    mode: RecordingMode
    consent: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _short_spelling(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value

    @field_validator("consent")
    @classmethod
    def _consent(cls, value: dict[str, str]) -> dict[str, str]:
        for language, text in value.items():
            if not LANGUAGE_CODE.fullmatch(language):
                raise ValueError(f"{language!r} is not a language code (like ja or en-US)")
            if not text.strip():
                raise ValueError("a consent text must not be empty")
        return value


class Flow(Strict):
    start: NodeName
    language: str = Field(default="ja", description="the language before the caller picks one")
    timezone: str = "Asia/Tokyo"
    voices: dict[str, str] = Field(default_factory=dict, description="language: TTS voice")
    hours: dict[NodeName, Hours] = Field(default_factory=dict, json_schema_extra=_ONLY_PATTERN_KEYS)
    fallback: Fallback = Fallback()
    recording: FlowRecording | None = Field(
        default=None,
        description="always | never | on_demand, or {mode, consent}; wins over the queue's",
    )
    nodes: dict[NodeName, Node] = Field(min_length=1, json_schema_extra=_ONLY_PATTERN_KEYS)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        if not LANGUAGE_CODE.fullmatch(value):
            raise ValueError(f"{value!r} is not a language code (like ja or en-US)")
        return value


def transitions(node: BaseModel) -> list[tuple[str, str]]:
    """(field, target) for every node this node can lead to."""
    found: list[tuple[str, str]] = []
    for field in ("next", "on_failure", "on_error", "otherwise", "to", "when_closed"):
        target = getattr(node, field, None)
        if isinstance(target, str) and not isinstance(node, TransferNode):
            found.append((field, target))
    if isinstance(node, MenuNode):
        found.extend((f"options.{key}", target) for key, target in node.options.items())
    if isinstance(node, BranchNode):
        found.extend((f"rules.{index}.next", rule.next) for index, rule in enumerate(node.rules))
    return found
