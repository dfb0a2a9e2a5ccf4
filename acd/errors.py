"""What the ACD refuses, each with a stable error_id an API client can branch on.

The scripts answer `{'E', code, detail}`; `raise_for` turns the code into one of these,
so an impossible order of events (answer after hangup, hangup twice) is a clear 409
and never a half-applied change.
"""

from __future__ import annotations

from typing import Any

from kokan.errors import Conflict, InvalidInput, NotFound


class AcdInvalidInput(InvalidInput):
    error_id = "acd-invalid-input"


class UnknownQueue(NotFound):
    error_id = "acd-unknown-queue"


class UnknownAgent(NotFound):
    error_id = "acd-unknown-agent"


class UnknownCall(NotFound):
    error_id = "acd-unknown-call"


class CallExists(Conflict):
    error_id = "acd-call-exists"


class CallEnded(Conflict):
    error_id = "acd-call-ended"


class NotOffered(Conflict):
    """The call is not (or no longer) offered to this agent: the offer expired, went to
    someone else, or never existed."""

    error_id = "acd-not-offered"


class AlreadyAnswered(Conflict):
    error_id = "acd-already-answered"


class NotWaiting(Conflict):
    error_id = "acd-not-waiting"


class AgentBusy(Conflict):
    """The agent still holds calls or offers, so cannot log off or be removed."""

    error_id = "acd-agent-busy"


SCRIPT_ERRORS: dict[str, tuple[type[Conflict | NotFound], str]] = {
    "unknown-queue": (UnknownQueue, "no queue named {detail!r}"),
    "unknown-agent": (UnknownAgent, "no agent named {detail!r}"),
    "unknown-call": (UnknownCall, "no call {detail!r} in the ACD"),
    "call-exists": (CallExists, "call {detail!r} is already in the ACD"),
    "call-ended": (CallEnded, "call {detail!r} has already ended"),
    "not-offered": (NotOffered, "call {detail!r} is not offered to this agent"),
    "already-answered": (AlreadyAnswered, "call {detail!r} was answered by another agent"),
    "not-waiting": (NotWaiting, "call {detail!r} is not waiting in a queue"),
    "agent-busy": (AgentBusy, "agent {detail!r} still has calls or offers"),
}


def raise_for(code: str, detail: str, **context: Any) -> None:
    """Raise the error a script reported; an unknown code is a bug in a script."""
    try:
        cls, template = SCRIPT_ERRORS[code]
    except KeyError:
        raise RuntimeError(f"ACD script returned an unknown error {code!r} ({detail})") from None
    raise cls(template.format(detail=detail), **context)
