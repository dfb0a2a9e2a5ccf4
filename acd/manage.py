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

from acd import skill_catalog
from acd.agent_users import AgentUsers
from acd.errors import AcdInvalidInput, UnknownQueue
from acd.queue_settings import SETTINGS_FIELD, hold_music_problem
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


def _check_skills(rt: AcdRuntime, skills: Mapping[str, int]) -> None:
    skill_catalog.check_known(skills, skill_catalog.catalog(rt.service, rt.settings))


def put_queue(rt: AcdRuntime, name: str, body: Mapping[str, Any]) -> QueueSettings:
    queue = validated(QueueSettings, body)
    _check_skills(rt, queue.skills)
    problem = hold_music_problem(rt.settings, queue.hold_music)
    if problem is not None:
        raise AcdInvalidInput(
            f"hold_music: {problem}", problems=[{"field": "hold_music", "message": problem}]
        )
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
    _check_skills(rt, agent.skills)
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


def queue_config_json(rt: AcdRuntime, name: str) -> dict[str, Any]:
    """The stored routing, and whether `config.yaml` names the queue (then the file's
    values come back at the next start, whatever the API changed)."""
    routing = rt.service.queue_config(name)
    stored = rt.service.redis.hget(rt.service.keys.queue(name), SETTINGS_FIELD)
    config = QueueSettings.model_validate_json(stored) if stored else routing
    return {
        "name": name,
        "config": config.model_dump(mode="json"),
        "in_config_file": name in rt.settings.queues,
    }


def agent_config_json(rt: AcdRuntime, agent_id: str) -> dict[str, Any]:
    config = rt.service.agent_config(agent_id)
    return {
        "agent_id": agent_id,
        "config": {**config.model_dump(mode="json"), "user": rt.users.user_for(agent_id)},
        "in_config_file": agent_id in rt.settings.agents,
    }


def skills_json(rt: AcdRuntime) -> dict[str, Any]:
    known = skill_catalog.catalog(rt.service, rt.settings)
    return {
        "skills": [
            {"name": name, "description": description, "in_config_file": name in rt.settings.skills}
            for name, description in known.items()
        ]
    }


def put_skill(rt: AcdRuntime, name: str, body: Mapping[str, Any]) -> None:
    skill_catalog.put(rt.service, name, validated(skill_catalog.SkillRequest, body))


def remove_skill(rt: AcdRuntime, name: str) -> None:
    skill_catalog.remove(rt.service, rt.settings, name)
