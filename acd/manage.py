"""Changes an admin or an agent makes through the API, under the rules `config.yaml` obeys.

A queue or agent sent to the API is validated by the very models that read
`config.yaml` (`QueueSettings`, `AgentSettings`) and against the same skill catalog, so
whatever the API accepts the file could have said. The changes go to Redis through
`AcdService`; `acd.runtime.apply_config` lays the file over them when `kokan serve` starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from acd.agent_users import AgentUsers
from acd.errors import AcdInvalidInput, UnknownQueue
from acd.results import AgentView
from acd.runtime import AcdRuntime
from acd.schemas import Overflow, Presence
from kokan.config import AgentSettings, QueueSettings

REASON_MAX_CHARS = 64
"""As `acd.schemas.StatusRequest` keeps it: a label on the floor view, not a note."""

_Model = TypeVar("_Model", bound=BaseModel)


class StatusChange(BaseModel):
    """What an agent (or their supervisor) sends to change the agent's status."""

    model_config = ConfigDict(extra="forbid")

    status: Presence
    reason: str | None = Field(default=None, max_length=REASON_MAX_CHARS)


def validated(model: type[_Model], body: Mapping[str, Any]) -> _Model:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise AcdInvalidInput.from_validation(exc) from None


def _check_skills(skills: Mapping[str, int], catalog: Mapping[str, object]) -> None:
    unknown = sorted(set(skills) - set(catalog)) if catalog else []
    if unknown:
        raise AcdInvalidInput(
            f"skills: not listed under skills in the configuration: {', '.join(unknown)}",
            problems=[{"field": "skills", "message": f"unknown skills: {', '.join(unknown)}"}],
        )


def put_queue(rt: AcdRuntime, name: str, body: Mapping[str, Any]) -> QueueSettings:
    queue = validated(QueueSettings, body)
    _check_skills(queue.skills, rt.settings.skills)
    try:
        rt.service.put_queue(name, queue)
    except UnknownQueue as exc:
        target = queue.on_max_wait.queue if isinstance(queue.on_max_wait, Overflow) else ""
        raise AcdInvalidInput(
            f"on_max_wait.queue: no queue named {target!r} to overflow to",
            problems=[{"field": "on_max_wait.queue", "message": exc.message}],
        ) from None
    return queue


def put_agent(rt: AcdRuntime, agent_id: str, body: Mapping[str, Any]) -> AgentSettings:
    agent = validated(AgentSettings, body)
    _check_skills(agent.skills, rt.settings.skills)
    rt.users.check_free(agent_id, agent.user)
    try:
        rt.service.put_agent(agent_id, agent)
    except UnknownQueue as exc:
        raise AcdInvalidInput(
            f"queues: {exc.message}", problems=[{"field": "queues", "message": exc.message}]
        ) from None
    rt.users.link(agent_id, agent.user)
    return agent


def remove_agent(rt: AcdRuntime, agent_id: str) -> None:
    """Refused (`AgentBusy`) while the agent holds calls or offers; then the link goes too."""
    rt.service.remove_agent(agent_id)
    rt.users.forget(agent_id)


def set_status(rt: AcdRuntime, agent_id: str, body: Mapping[str, Any]) -> AgentView:
    """Calls the change makes possible are offered by the router, which the service wakes."""
    change = validated(StatusChange, body)
    rt.service.set_status(agent_id, change.status, change.reason)
    return rt.service.agent(agent_id)


def agent_json(view: AgentView, users: AgentUsers) -> dict[str, Any]:
    """The agent as the API shows it, with the user who acts as them."""
    return {**view.to_json(), "user": users.user_for(view.agent_id)}
