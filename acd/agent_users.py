"""Which signed-in user acts as which ACD agent.

The rule: a user with the agent role acts as the agent whose id equals their username,
unless an agent names a `user:` — an explicit link wins, both ways: the linked user acts
as that agent, and nobody acts as an agent through its id alone once the agent is linked
to someone else. The links sit beside the ACD's own keys (same hash tag), so they live
and die with the ACD's state; usernames are compared without case, as users are unique
without case (`admin.services.create_user`).
"""

from __future__ import annotations

from redis.commands.core import Script

from acd.errors import UnknownAgent
from acd.services import AcdService
from kokan.errors import Conflict
from kokan.redis_conn import redis_text

USER_OF = "user-of"
"""HASH agent id -> username, for agents linked explicitly (`user:`)."""
AGENT_OF = "agent-of"
"""HASH lowercased username -> agent id: the same links the other way, so a request finds
its agent in one read, whatever the number of agents."""

_LINK = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then
  local holder = redis.call('HGET', KEYS[2], ARGV[3])
  if holder and holder ~= ARGV[1] then
    return holder
  end
end
if old then
  redis.call('HDEL', KEYS[2], string.lower(old))
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
end
return false
"""
"""Link (or unlink, with an empty user) in one step, refusing a user another agent holds."""


class UserTaken(Conflict):
    error_id = "acd-user-taken"


class NoAgentForUser(UnknownAgent):
    error_id = "acd-no-agent-for-user"


class AgentUsers:
    def __init__(self, service: AcdService) -> None:
        self.service = service
        self.user_of_key = service.keys.prefix + USER_OF
        self.agent_of_key = service.keys.prefix + AGENT_OF
        self._link: Script = service.redis.register_script(_LINK)

    def check_free(self, agent_id: str, user: str | None) -> None:
        """Refuse, before anything changes, a user already linked to another agent."""
        if user is None:
            return
        holder = self.service.redis.hget(self.agent_of_key, user.lower())
        if holder is not None and redis_text(holder) != agent_id:
            raise UserTaken(f"user {user!r} already acts as agent {redis_text(holder)!r}")

    def link(self, agent_id: str, user: str | None) -> None:
        holder = self._link(
            keys=[self.user_of_key, self.agent_of_key],
            args=[agent_id, user or "", (user or "").lower()],
        )
        if holder:
            raise UserTaken(f"user {user!r} already acts as agent {redis_text(holder)!r}")

    def forget(self, agent_id: str) -> None:
        self.link(agent_id, None)

    def user_for(self, agent_id: str) -> str | None:
        """The user who acts as this agent, by the same rule as `agent_for`."""
        pipe = self.service.redis.pipeline(transaction=False)
        pipe.hget(self.user_of_key, agent_id)
        pipe.hget(self.agent_of_key, agent_id.lower())
        linked, holder = pipe.execute()
        if linked is not None:
            return redis_text(linked)
        if holder is None or redis_text(holder) == agent_id:
            return agent_id
        return None

    def agent_for(self, username: str) -> str:
        """The agent this user acts as; `NoAgentForUser` when there is none."""
        pipe = self.service.redis.pipeline(transaction=False)
        pipe.hget(self.agent_of_key, username.lower())
        pipe.hget(self.user_of_key, username)
        pipe.sismember(self.service.keys.agents, username)
        linked, own_link, exists = pipe.execute()
        if linked is not None:
            return redis_text(linked)
        if exists and (own_link is None or redis_text(own_link).lower() == username.lower()):
            return username
        raise NoAgentForUser(f"user {username!r} is not an ACD agent")
