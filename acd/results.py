"""What the ACD service answers: offers to dial, outcomes, and views for the floor.

Plain frozen dataclasses with `to_json`, so the coming JSON API and `kokan acd status`
render them without knowing Redis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Offer:
    """A call offered to agents and reserved for them until `deadline_ms`: the transport
    connects the call (or, for a callback, dials `callback_number`) to the agent and
    reports answer or no-answer."""

    call_id: str
    queue: str
    agents: tuple[str, ...]
    kind: str
    """"call", or "callback" (a task: dial the caller back)."""
    channel: str
    deadline_ms: int
    callback_number: str | None
    attempt: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Joined:
    call_id: str
    queue: str
    position: int
    offers: tuple[Offer, ...] = ()


@dataclass(frozen=True)
class Answered:
    call_id: str
    agent_id: str
    wait_ms: int
    duplicate: bool
    """The same agent answered twice (a repeated webhook): nothing changed."""


@dataclass(frozen=True)
class Ended:
    call_id: str
    result: str
    """completed | abandoned | short-abandon | cancelled | callback-kept"""
    agents: tuple[str, ...]
    offers: tuple[Offer, ...] = ()


@dataclass(frozen=True)
class Requeued:
    call_id: str
    requeued: bool
    """False while other agents of a ring-all offer still ring."""
    offers: tuple[Offer, ...] = ()


@dataclass(frozen=True)
class MaxWait:
    call_id: str
    action: str
    """overflow (to `queue`) | voicemail (the transport takes the caller there) | callback"""
    queue: str


@dataclass(frozen=True)
class Expired:
    call_id: str
    queue: str
    agents: tuple[str, ...]


@dataclass(frozen=True)
class TickReport:
    expired: tuple[Expired, ...] = ()
    wrapped_up: tuple[str, ...] = ()
    max_waits: tuple[MaxWait, ...] = ()
    offers: tuple[Offer, ...] = ()


@dataclass(frozen=True)
class AgentView:
    agent_id: str
    name: str | None
    status: str
    presence: str
    reason: str
    since_ms: int
    idle_since_ms: int
    wrap_until_ms: int
    load: dict[str, int]
    capacity: dict[str, int]
    skills: dict[str, int]
    queues: list[str]
    calls_today: int
    talk_ms_today: int
    tasks: list[str]
    contact: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QueueView:
    name: str
    waiting: int
    longest_wait_ms: int
    agents_by_status: dict[str, int]
    stats: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CallView:
    call_id: str
    state: str
    """waiting | offered | connected | ended"""
    queue: str
    kind: str
    channel: str
    priority: int
    position: int | None
    agents: tuple[str, ...]
    joined_ms: int
    answered_ms: int | None
    result: str | None
    callback_number: str | None = None
    """For a callback task: the number the agent's leg dials."""
    caller: str | None = None
    """The caller's number as the transport gave it (the agent's screen pop looks it up)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
