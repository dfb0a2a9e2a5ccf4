"""What an admin configures (queues, agents) and what a caller brings (a join request).

The same models validate `config.yaml` (through `kokan.config`) and, later, the JSON
API, so a queue means the same thing wherever it was written.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from acd.limits import (
    CALL_PRIORITY_MAX,
    CALL_PRIORITY_MIN,
    PROFICIENCY_MAX,
    PROFICIENCY_MIN,
    WEIGHT_MAX,
)
from acd.strategies import DEFAULT_STRATEGY, Strategy

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Queue, skill and agent names become parts of Redis keys and event fields: no colons,
commas or spaces, which the keys and the agent lists use as separators."""
CALL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$"
"""Twilio CallSids, SIP Call-IDs and chat ids fit; a comma or space never does."""

DEFAULT_WRAPUP_S = 10
"""Time to finish a note before the next call, short enough not to idle the floor."""
DEFAULT_RING_TIMEOUT_S = 20
"""About four rings: long enough to pick up a softphone, short for a waiting caller."""
DEFAULT_SHORT_ABANDON_S = 5
"""Callers gone within 5 s mostly misdialled; counted apart so they do not skew KPIs."""
DEFAULT_VOICE_CAPACITY = 1
DEFAULT_CHAT_CAPACITY = 3
DEFAULT_SMS_CAPACITY = 5
"""One call, three chats or five SMS threads at once: TaskRouter's and Connect's
usual routing-profile figures."""
MAX_CHAT_CAPACITY = 20
MAX_SMS_CAPACITY = 50
QUEUE_PRIORITY_MIN = -100
QUEUE_PRIORITY_MAX = 100


def _no_bool(value: Any) -> Any:
    # pydantic's lax mode reads YAML `true` as 1; a wrap-up of 1 s is never what was meant
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true/false")
    return value


Whole = Annotated[int, BeforeValidator(_no_bool)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
CallId = Annotated[str, StringConstraints(pattern=CALL_ID_PATTERN)]
Proficiency = Annotated[int, Field(ge=PROFICIENCY_MIN, le=PROFICIENCY_MAX, strict=True)]
"""Strict: a level is written as a number; "3" or true is a mistake worth reporting."""
Skills = dict[Name, Proficiency]


class Channel(StrEnum):
    VOICE = "voice"
    CHAT = "chat"
    SMS = "sms"


CHANNELS = tuple(Channel)


class Presence(StrEnum):
    """What an agent sets; the ACD overlays offered / on-call / wrap-up / not-ready."""

    AVAILABLE = "available"
    BREAK = "break"
    OFFLINE = "offline"


class AgentStatus(StrEnum):
    OFFLINE = "offline"
    AVAILABLE = "available"
    BREAK = "break"
    OFFERED = "offered"
    ON_CALL = "on-call"
    WRAP_UP = "wrap-up"
    NOT_READY = "not-ready"
    """Set by the ACD after a ring with no answer (app_queue's autopause)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RelaxStep(Strict):
    """After this wait, ask less of the agent: a lower level, or any agent of the queue."""

    after_seconds: Whole = Field(ge=1, le=86_400)
    min_proficiency: Proficiency | None = Field(
        default=None, description="every required level is capped at this"
    )
    any_agent: bool = Field(default=False, description="drop the skill requirement entirely")

    @model_validator(mode="after")
    def _one_change(self) -> RelaxStep:
        if (self.min_proficiency is None) == (not self.any_agent):
            raise ValueError("a step sets either min_proficiency or any_agent: true")
        return self


class Overflow(Strict):
    action: Literal["overflow"]
    queue: Name


class ToVoicemail(Strict):
    action: Literal["voicemail"]


class ToCallback(Strict):
    action: Literal["callback"]


OnMaxWait = Annotated[Overflow | ToVoicemail | ToCallback, Field(discriminator="action")]


class QueueConfig(BaseModel):
    """How one queue routes: who may take its calls, in what order, and for how long."""

    model_config = ConfigDict(extra="forbid")

    priority: Whole = Field(
        default=0,
        ge=QUEUE_PRIORITY_MIN,
        le=QUEUE_PRIORITY_MAX,
        description="agents in several queues serve the higher one first",
    )
    skills: Skills = Field(default_factory=dict, description="skill -> minimum proficiency 1-5")
    relax: list[RelaxStep] = Field(
        default_factory=list, description="steps by wait time, ascending"
    )
    strategy: Strategy = DEFAULT_STRATEGY
    wrapup_seconds: Whole = Field(default=DEFAULT_WRAPUP_S, ge=0, le=3600)
    ring_timeout_seconds: Whole = Field(default=DEFAULT_RING_TIMEOUT_S, ge=5, le=300)
    max_wait_seconds: Whole | None = Field(
        default=None, ge=10, le=86_400, description="unset: callers wait as long as they hold"
    )
    on_max_wait: OnMaxWait = Field(
        default=ToVoicemail(action="voicemail"), description="overflow, voicemail or callback"
    )
    short_abandon_seconds: Whole = Field(default=DEFAULT_SHORT_ABANDON_S, ge=0, le=600)
    preferred_agent_wait_seconds: Whole = Field(
        default=0, ge=0, le=3600, description="how long a call waits for its preferred agent"
    )
    prefer_novice: bool = Field(
        default=False, description="simple calls go to the lowest proficiency that fits"
    )
    autopause: bool = Field(
        default=True, description="an agent who lets an offer ring out is set not-ready"
    )

    @field_validator("relax")
    @classmethod
    def _ascending(cls, steps: list[RelaxStep]) -> list[RelaxStep]:
        times = [step.after_seconds for step in steps]
        if times != sorted(set(times)):
            raise ValueError("steps must be in ascending after_seconds, each time once")
        return steps

    def routing_json(self) -> str:
        """What the scripts read: the routing fields only, no nulls (cjson's null is truthy)."""
        fields = set(QueueConfig.model_fields)
        return json.dumps(
            self.model_dump(mode="json", include=fields, exclude_none=True),
            separators=(",", ":"),
            sort_keys=True,
        )


class Capacity(Strict):
    voice: Whole = Field(default=DEFAULT_VOICE_CAPACITY, ge=0, le=1)
    chat: Whole = Field(default=DEFAULT_CHAT_CAPACITY, ge=0, le=MAX_CHAT_CAPACITY)
    sms: Whole = Field(default=DEFAULT_SMS_CAPACITY, ge=0, le=MAX_SMS_CAPACITY)


class AgentConfig(BaseModel):
    """One agent: what they can do, where they take calls, how much at once."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=100)
    skills: Skills = Field(default_factory=dict, description="skill -> proficiency 1-5")
    queues: list[Name] = Field(default_factory=list)
    capacity: Capacity = Capacity()
    weight: Whole = Field(default=1, ge=1, le=WEIGHT_MAX, description="for weighted_random")
    order: Whole | None = Field(
        default=None, ge=0, lt=1_000_000, description="position for fixed_order / round_robin"
    )
    sip_uri: str | None = Field(default=None, pattern=r"^sips?:[^\s]+$")
    twilio_identity: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.@+-]{1,121}$")
    phone: str | None = Field(default=None, pattern=r"^\+[1-9][0-9]{6,14}$")

    @field_validator("queues")
    @classmethod
    def _unique(cls, queues: list[str]) -> list[str]:
        if len(set(queues)) != len(queues):
            raise ValueError("a queue is listed twice")
        return queues

    def contact_json(self) -> str:
        return json.dumps(
            {
                key: value
                for key, value in (
                    ("sip_uri", self.sip_uri),
                    ("twilio_identity", self.twilio_identity),
                    ("phone", self.phone),
                )
                if value
            },
            separators=(",", ":"),
        )


class JoinRequest(Strict):
    """A call (or chat, or SMS thread) asking for an agent."""

    call_id: CallId
    queue: Name
    priority: Whole = Field(default=0, ge=CALL_PRIORITY_MIN, le=CALL_PRIORITY_MAX)
    skills: Skills = Field(default_factory=dict, description="on top of the queue's own")
    channel: Channel = Channel.VOICE
    preferred_agent: Name | None = None
    simple: bool = Field(default=False, description="an easy call: may go to a novice")
    caller: str | None = Field(default=None, max_length=64, description="number for callbacks")


class StatusRequest(Strict):
    agent_id: Name
    presence: Presence
    reason: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _reason_for_breaks(self) -> StatusRequest:
        if self.presence is Presence.BREAK and not (self.reason or "").strip():
            raise ValueError("a break needs a reason (lunch, training, ...)")
        return self
