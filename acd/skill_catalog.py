"""The skill catalog: the names queues may require and agents may have.

`config.yaml`'s `skills` are the start; admins add more through the API (kept in Redis,
where the ACD's queues and agents live). Read together, the file wins for what it names,
as it does for queues and agents. A skill a queue or an agent still uses cannot be
removed, nor one the file names (it would come back at the next start).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from acd.errors import AcdInvalidInput
from acd.schemas import NAME_PATTERN
from acd.services import AcdService
from kokan.config import Settings
from kokan.errors import Conflict
from kokan.redis_conn import redis_text

DESCRIPTION_MAX_CHARS = 200
"""A label for the admin's lists ("Billing questions, 請求"), not documentation."""


class SkillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX_CHARS)


class SkillInUse(Conflict):
    error_id = "acd-skill-in-use"


class SkillInFile(Conflict):
    error_id = "acd-skill-in-config-file"


def catalog(service: AcdService, settings: Settings) -> dict[str, str | None]:
    stored = {
        redis_text(name): redis_text(description) or None
        for name, description in service.redis.hgetall(service.keys.skills).items()
    }
    return dict(sorted({**stored, **settings.skills}.items()))


def check_known(skills: Mapping[str, int], known: Mapping[str, str | None]) -> None:
    """An empty catalog checks nothing: a small site may route on skills without a list."""
    unknown = sorted(set(skills) - set(known)) if known else []
    if unknown:
        raise AcdInvalidInput(
            f"skills: not in the skill catalog: {', '.join(unknown)}",
            problems=[{"field": "skills", "message": f"unknown skills: {', '.join(unknown)}"}],
        )


def _checked_name(name: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name):
        raise AcdInvalidInput(
            "name: use letters, digits, '_', '.', '-' (up to 64), starting with a letter or digit",
            problems=[{"field": "name", "message": "not a valid skill name"}],
        )
    return name


def put(service: AcdService, name: str, request: SkillRequest) -> None:
    service.redis.hset(service.keys.skills, _checked_name(name), request.description or "")


def users_of(service: AcdService, name: str) -> list[str]:
    """Queues and agents that name the skill, as `queue:<name>` / `agent:<id>`."""
    found = [
        f"queue:{queue}"
        for queue in service.queue_names()
        if name in service.queue_config(queue).skills
    ]
    found += [
        f"agent:{agent_id}"
        for agent_id in service.agent_ids()
        if name in service.agent(agent_id).skills
    ]
    return found


def remove(service: AcdService, settings: Settings, name: str) -> None:
    name = _checked_name(name)
    if name in settings.skills:
        raise SkillInFile(f"config.yaml lists the skill {name!r}: remove it there")
    using = users_of(service, name)
    if using:
        raise SkillInUse(f"the skill {name!r} is still used by {', '.join(using)}")
    service.redis.hdel(service.keys.skills, name)
