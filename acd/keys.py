"""Every Redis key of the ACD, named once, for Python and for the Lua scripts alike.

All keys of one ACD share the hash tag `{namespace}`: a routing decision reserves an
agent who may serve any queue, so the scripts must reach every queue, agent and call of
the ACD in one atomic step; on Redis Cluster one ACD therefore lives in one slot. The
scripts build keys from the prefix and the suffixes below (the loader hands them the
same strings), so a key's shape is written in exactly one place.
"""

from __future__ import annotations

DEFAULT_NAMESPACE = "main"
"""One ACD per Redis unless a deployment runs several (tenants, tests) side by side."""

PREFIX = "kokan:acd:{{{namespace}}}:"
"""The namespace in braces is the hash tag: every key of one ACD in one cluster slot."""

AGENTS = "agents"
"""SET of agent ids, for listings; routing never scans it."""
QUEUES = "queues"
"""ZSET queue -> queue priority, so routing serves higher-priority queues first."""
AGENT = "agent:"
"""HASH per agent (suffix: id): live state, plus the skills, queues and capacities that
decide where they are indexed; read whole by every script that changes the agent."""
PROFILE = "profile:"
"""HASH per agent: skill levels (sk:<skill>), weight, contact, name, order; kept out of
the state hash so the hot read of an agent stays small."""
TASKS = "tasks:"
"""SET per agent (suffix: id): the calls offered to or held by the agent."""
QUEUE = "queue:"
"""HASH per queue (suffix: name): its JSON configuration, strategy, round-robin memory."""
MEMBERS = "members:"
"""ZSET per queue (suffix: name): agent -> position, for fixed order and round-robin."""
AVAIL = "avail:"
"""ZSET per mode:queue and mode:queue:skill:level: the candidate index, agents free now,
scored by the queue's strategy, so a decision reads matching agents only. Mode "voice"
holds the wholly free; "chat" / "sms" those with room for one more of that channel but
not for a voice call (see modes_of in scripts/lib.lua)."""
WAITING = "waiting:"
"""ZSET per queue: waiting call -> place in line (priority, then arrival)."""
REQS = "reqs:"
"""HASH per queue: call -> what routing needs of it (channel, times, preferred agent,
skills) in one string, so a decision reads a whole chunk of the line in one HMGET."""
SINCE = "since:"
"""ZSET per queue: waiting call -> join time, so the longest wait is one read."""
STATS = "stats:"
"""HASH per queue: counters (joined, answered, abandoned, short abandons, waits)."""
CALL = "call:"
"""HASH per call (suffix: call id): queue, priority, skills, state, offer, times."""
OFFERS = "offers"
"""ZSET call -> offer deadline: any process's sweep finds offers whose maker died."""
WRAPUPS = "wrapups"
"""ZSET agent -> end of wrap-up: the sweep makes the agent available again."""
MAXWAIT = "maxwait"
"""ZSET call -> end of its allowed wait: the sweep overflows it, or voicemail, or callback."""
SEQ = "seq"
"""Counter giving each call its arrival number: oldest first within a priority."""
EVENTS = "events"
"""STREAM of every state change, for the live floor, KPIs and call-detail records."""
RECENT = "recent:"
"""STRING per caller number (suffix: E.164): the agent who last answered them, kept
RECENT_AGENT_TTL_S, so their next call in a queue with a preferred-agent wait may wait
for that agent first."""
SKILLS = "skills"
"""HASH skill -> description: the skills admins added through the API; `config.yaml`'s
`skills` are laid over them when read (the file wins for what it names)."""
WAKE = "wake"
"""LIST the router blocks on: a process that changed the floor but leaves routing to the
router pushes here, so the decision is made at once instead of at the next tick."""
WAKE_MAX_LEN = 16
"""Pushes kept at most: one is enough to wake the router, the rest are trimmed."""

LUA_SUFFIXES = {
    "K_AGENTS": AGENTS,
    "K_QUEUES": QUEUES,
    "K_AGENT": AGENT,
    "K_PROFILE": PROFILE,
    "K_TASKS": TASKS,
    "K_QUEUE": QUEUE,
    "K_MEMBERS": MEMBERS,
    "K_AVAIL": AVAIL,
    "K_WAITING": WAITING,
    "K_REQS": REQS,
    "K_SINCE": SINCE,
    "K_STATS": STATS,
    "K_CALL": CALL,
    "K_OFFERS": OFFERS,
    "K_WRAPUPS": WRAPUPS,
    "K_MAXWAIT": MAXWAIT,
    "K_SEQ": SEQ,
    "K_EVENTS": EVENTS,
    "K_RECENT": RECENT,
}
"""The names the Lua scripts know these suffixes by."""

CALL_TTL_S = 24 * 3600
"""No call waits or talks for a day; a call whose process and caller both vanished
without a hangup is forgotten rather than kept forever."""
ENDED_CALL_TTL_S = 3600
"""An ended call is kept an hour, so a late duplicate hangup or answer gets
'call-ended' instead of 'unknown call'."""


def prefix(namespace: str) -> str:
    return PREFIX.format(namespace=namespace)


class Keys:
    """The concrete keys of one ACD, for the Python side (views, tests, the bench)."""

    def __init__(self, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.namespace = namespace
        self.prefix = prefix(namespace)

    @property
    def anchor(self) -> str:
        """Passed as KEYS[1] to every script, so a cluster client sends it to the ACD's slot."""
        return self.prefix + EVENTS

    @property
    def agents(self) -> str:
        return self.prefix + AGENTS

    @property
    def queues(self) -> str:
        return self.prefix + QUEUES

    @property
    def offers(self) -> str:
        return self.prefix + OFFERS

    @property
    def wrapups(self) -> str:
        return self.prefix + WRAPUPS

    @property
    def maxwait(self) -> str:
        return self.prefix + MAXWAIT

    @property
    def events(self) -> str:
        return self.prefix + EVENTS

    @property
    def skills(self) -> str:
        return self.prefix + SKILLS

    @property
    def wake(self) -> str:
        return self.prefix + WAKE

    def agent(self, agent_id: str) -> str:
        return self.prefix + AGENT + agent_id

    def profile(self, agent_id: str) -> str:
        return self.prefix + PROFILE + agent_id

    def tasks(self, agent_id: str) -> str:
        return self.prefix + TASKS + agent_id

    def queue(self, name: str) -> str:
        return self.prefix + QUEUE + name

    def members(self, queue: str) -> str:
        return self.prefix + MEMBERS + queue

    def avail(self, channel: str, queue: str, skill: str | None = None, level: int = 0) -> str:
        key = f"{self.prefix}{AVAIL}{channel}:{queue}"
        return key if skill is None else f"{key}:{skill}:{level}"

    def waiting(self, queue: str) -> str:
        return self.prefix + WAITING + queue

    def reqs(self, queue: str) -> str:
        return self.prefix + REQS + queue

    def since(self, queue: str) -> str:
        return self.prefix + SINCE + queue

    def stats(self, queue: str) -> str:
        return self.prefix + STATS + queue

    def call(self, call_id: str) -> str:
        return self.prefix + CALL + call_id
