"""The ACD's rules, for every process that touches calls and agents.

`AcdService` is the one door: the IVR's queue node, the Twilio and SIP drivers, the
coming JSON API and CLI all call it. Each method validates its input, runs one atomic
script, and — when that freed an agent or queued a call — runs the routing script for
the queues concerned, returning the offers the caller must now dial. All state is in
Redis; any number of processes may hold a service for the same ACD at once.

Time-driven work (offers whose process died, wrap-ups ending, max waits, relaxation
steps and preferred-agent windows running out) is done by `tick()`, which any process
may call at any moment, as often as it likes: it only acts on deadlines stored in Redis.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, TypeVar

import redis
from pydantic import BaseModel, TypeAdapter, ValidationError
from redis.commands.core import Script

from acd.clock import Clock
from acd.errors import AcdInvalidInput, UnknownAgent, UnknownCall, UnknownQueue, raise_for
from acd.keys import DEFAULT_NAMESPACE, WAKE_MAX_LEN, Keys
from acd.limits import ROUTE_MAX_OFFERS, SWEEP_BATCH
from acd.lua import Scripts
from acd.queue_settings import SETTINGS_FIELD
from acd.results import (
    AgentView,
    Answered,
    CallView,
    Ended,
    Expired,
    Joined,
    MaxWait,
    Offer,
    QueueView,
    Requeued,
    TickReport,
)
from acd.schemas import (
    CHANNELS,
    AgentConfig,
    AgentStatus,
    CallId,
    Channel,
    JoinRequest,
    Name,
    Overflow,
    Presence,
    QueueConfig,
    StatusRequest,
    ToVoicemail,
)
from kokan.config import QueueSettings

NAME_CACHE_SIZE = 65_536
"""Queue and agent names seen recently, already checked: routing names the same few
hundred names over and over, and a pydantic check per call costs more than Redis."""
ROUTE_MAX_ROUNDS = 100
"""Routing scripts per service call at most (x ROUTE_MAX_OFFERS offers); the next tick
carries on, so one caller never spins on a floor of thousands of free agents."""

_Model = TypeVar("_Model", bound=BaseModel)
_call_id: TypeAdapter[str] = TypeAdapter(CallId)
_name: TypeAdapter[str] = TypeAdapter(Name)


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_text(item) for item in value]
    return value


def _validated(model: type[_Model], **data: Any) -> _Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise AcdInvalidInput.from_validation(exc) from None


@lru_cache(maxsize=NAME_CACHE_SIZE)
def _is_valid(adapter: TypeAdapter[str], value: str) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


def _checked(adapter: TypeAdapter[str], value: str, what: str) -> str:
    if not isinstance(value, str) or not _is_valid(adapter, value):
        raise AcdInvalidInput(f"{what}: not a valid name: {value!r}")
    return value


def _offers(raw: Sequence[Any]) -> tuple[Offer, ...]:
    return tuple(
        Offer(
            call_id=item[0],
            queue=item[1],
            kind=item[2],
            channel=item[3],
            deadline_ms=int(item[4]),
            callback_number=item[5] or None,
            attempt=int(item[6]),
            agents=tuple(item[7:]),
        )
        for item in raw
    )


class AcdService:
    def __init__(
        self,
        client: redis.Redis,
        namespace: str = DEFAULT_NAMESPACE,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        day_offset_minutes: int = 0,
        defer_routing: bool = False,
    ) -> None:
        """`clock` None: the Redis server's clock. `day_offset_minutes`: where "today"
        starts for fewest-calls and least-talk-time (540 for Japan). `defer_routing`: a
        process that cannot dial the offers it would make (a web worker) wakes the
        router instead of routing, so every offer is made where it will be dialed."""
        self.redis = client
        self.keys = Keys(_checked(_name, namespace, "namespace"))
        self.scripts = Scripts.register(client)
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - spreads load, not a secret
        self.day_offset_ms = day_offset_minutes * 60_000
        self.defer_routing = defer_routing

    # -- plumbing -----------------------------------------------------------------

    def _run(self, script: Script, *args: str | int) -> list[Any]:
        now = "" if self.clock is None else str(int(self.clock()))
        seed = self.rng.getrandbits(30) + 1  # within the scripts' Park-Miller 1..2^31-2
        common: list[str | int] = [self.keys.prefix, now, seed, self.day_offset_ms]
        reply = _text(script(keys=[self.keys.anchor], args=[*common, *args]))
        if reply[0] == "E":
            raise_for(reply[1], reply[2])
        return list(reply[1:])

    # -- configuration ------------------------------------------------------------

    def put_queue(self, name: str, config: QueueConfig) -> None:
        name = _checked(_name, name, "queue")
        if isinstance(config.on_max_wait, Overflow) and config.on_max_wait.queue != name:
            self._require_queue(config.on_max_wait.queue)
        self._run(
            self.scripts.put_queue,
            name,
            config.routing_json(),
            str(config.strategy),
            config.priority,
        )
        # the rest (music, announcements, recording) for the hold loops: acd.queue_settings
        whole = (
            config
            if isinstance(config, QueueSettings)
            else QueueSettings.model_validate(config.model_dump())
        )
        self.redis.hset(self.keys.queue(name), SETTINGS_FIELD, whole.model_dump_json())

    def put_agent(self, agent_id: str, config: AgentConfig) -> None:
        agent_id = _checked(_name, agent_id, "agent")
        self._run(
            self.scripts.put_agent,
            agent_id,
            json.dumps(config.skills, separators=(",", ":"), sort_keys=True),
            json.dumps(config.queues, separators=(",", ":")),
            config.capacity.voice,
            config.capacity.chat,
            config.capacity.sms,
            config.weight,
            "" if config.order is None else config.order,
            config.contact_json(),
            config.name or "",
        )

    def remove_agent(self, agent_id: str) -> None:
        self._run(self.scripts.remove_agent, _checked(_name, agent_id, "agent"))

    def configure(
        self, queues: Mapping[str, QueueConfig], agents: Mapping[str, AgentConfig]
    ) -> None:
        """Apply `config.yaml`'s queues and agents (queues first: agents name them).
        Agents keep their live state; nothing is removed that the config omits."""
        placeholder = ToVoicemail(action="voicemail")
        for name, config in queues.items():
            if not self.redis.hexists(self.keys.queue(name), "cfg"):
                # every queue exists before any overflow to it is checked
                self.put_queue(name, config.model_copy(update={"on_max_wait": placeholder}))
        for name, config in queues.items():
            self.put_queue(name, config)
        for agent_id, agent in agents.items():
            self.put_agent(agent_id, agent)

    def _require_queue(self, name: str) -> None:
        if not self.redis.hexists(self.keys.queue(name), "cfg"):
            raise UnknownQueue(f"no queue named {name!r}")

    # -- agents ---------------------------------------------------------------------

    def set_status(
        self, agent_id: str, presence: Presence | str, reason: str | None = None, route: bool = True
    ) -> tuple[Offer, ...]:
        """Available, break (with a reason) or offline; available also ends a wrap-up
        early and a not-ready after a ring-out. Returns the offers it made possible."""
        request = _validated(StatusRequest, agent_id=agent_id, presence=presence, reason=reason)
        reason_kept = (request.reason or "").strip() if request.presence is Presence.BREAK else ""
        (queues,) = self._run(
            self.scripts.set_status, request.agent_id, str(request.presence), reason_kept
        )
        if route and request.presence is Presence.AVAILABLE:
            return self._route_after_change(json.loads(queues))
        return ()

    # -- calls ----------------------------------------------------------------------

    def join(
        self,
        call_id: str,
        queue: str,
        *,
        priority: int = 0,
        skills: Mapping[str, int] | None = None,
        channel: Channel | str = Channel.VOICE,
        preferred_agent: str | None = None,
        simple: bool = False,
        caller: str | None = None,
        route: bool = True,
    ) -> Joined:
        request = _validated(
            JoinRequest,
            call_id=call_id,
            queue=queue,
            priority=priority,
            skills=dict(skills or {}),
            channel=channel,
            preferred_agent=preferred_agent,
            simple=simple,
            caller=caller,
        )
        (position,) = self._run(
            self.scripts.join,
            request.call_id,
            request.queue,
            request.priority,
            json.dumps(request.skills, separators=(",", ":"), sort_keys=True),
            str(request.channel),
            request.preferred_agent or "",
            "1" if request.simple else "0",
            request.caller or "",
        )
        offers = self._route_after_change([request.queue]) if route else ()
        return Joined(request.call_id, request.queue, int(position), offers)

    def join_outcome(
        self,
        call_id: str,
        outcome: Mapping[str, Any],
        *,
        caller: str | None = None,
        preferred_agent: str | None = None,
    ) -> Joined:
        """Queue a call the IVR handed over: its `{kind: queued, queue, priority,
        skills}` outcome."""
        if outcome.get("kind") != "queued":
            raise AcdInvalidInput(f"not a queued outcome: {outcome.get('kind')!r}")
        return self.join(
            call_id,
            str(outcome.get("queue", "")),
            priority=outcome.get("priority", 0),
            skills=outcome.get("skills") or {},
            caller=caller,
            preferred_agent=preferred_agent,
        )

    def decide(self, queue: str) -> Offer | None:
        """One routing decision on one queue: its best waiting call to its best agent."""
        reply = self._run(self.scripts.route, 1, _checked(_name, queue, "queue"))
        offers = _offers(reply)
        return offers[0] if offers else None

    def route(
        self, queues: Iterable[str] | None = None, limit: int | None = None
    ) -> tuple[Offer, ...]:
        """Offer waiting calls to free agents in these queues (all when None), higher
        queue priority first, until one side runs out (or `limit` offers are made)."""
        names = [_checked(_name, queue, "queue") for queue in queues] if queues is not None else []
        if queues is not None and not names:
            return ()
        made: list[Offer] = []
        for _round in range(ROUTE_MAX_ROUNDS):
            most = ROUTE_MAX_OFFERS if limit is None else min(ROUTE_MAX_OFFERS, limit - len(made))
            if most <= 0:
                break
            batch = _offers(self._run(self.scripts.route, most, *names))
            made.extend(batch)
            if len(batch) < most:
                break
        return tuple(made)

    def _route_after_change(self, queues: Iterable[str]) -> tuple[Offer, ...]:
        if self.defer_routing:
            self.wake()
            return ()
        return self.route(queues)

    def wake(self) -> None:
        """Ask the router to route now (it also routes on its own every tick)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(self.keys.wake, 1)
        pipe.ltrim(self.keys.wake, 0, WAKE_MAX_LEN - 1)
        pipe.execute()

    def wait_for_wake(self, timeout_s: float) -> bool:
        """Block until a process asks for routing or `timeout_s` passes; True when woken."""
        woken = self.redis.blpop([self.keys.wake], timeout=timeout_s)
        if woken is not None:
            self.redis.delete(self.keys.wake)  # one routing pass serves every pending wake
        return woken is not None

    def answer(self, call_id: str, agent_id: str) -> Answered:
        call_id = _checked(_call_id, call_id, "call")
        agent_id = _checked(_name, agent_id, "agent")
        outcome, wait = self._run(self.scripts.answer, call_id, agent_id)
        return Answered(call_id, agent_id, int(wait), duplicate=outcome == "duplicate")

    def no_answer(self, call_id: str, agent_id: str, route: bool = True) -> Requeued:
        """The dialing process saw the agent not answer in time (or decline)."""
        call_id = _checked(_call_id, call_id, "call")
        outcome, queue, queues = self._run(
            self.scripts.no_answer, call_id, _checked(_name, agent_id, "agent")
        )
        offers = self._route_after_change({queue, *json.loads(queues)}) if route else ()
        return Requeued(call_id, outcome == "requeued", offers)

    def hangup(self, call_id: str, route: bool = True) -> Ended:
        """The caller or the agent hung up: an abandon while waiting or ringing, the end
        of the call once answered. A second hangup is `CallEnded`."""
        return self._end(call_id, "hangup", route)

    def cancel(self, call_id: str, route: bool = True) -> Ended:
        """Withdraw a task (a callback no longer wanted), whatever its state."""
        return self._end(call_id, "cancel", route)

    def _end(self, call_id: str, mode: str, route: bool) -> Ended:
        call_id = _checked(_call_id, call_id, "call")
        result, agents, queues = self._run(self.scripts.hangup, call_id, mode)
        offers = self._route_after_change(json.loads(queues)) if route else ()
        return Ended(call_id, result, tuple(a for a in agents.split(",") if a), offers)

    def request_callback(self, call_id: str, number: str) -> int:
        """The waiting caller asks to be called back; returns the task's place in line."""
        call_id = _checked(_call_id, call_id, "call")
        if not number or len(number) > 64:
            raise AcdInvalidInput("a callback needs the number to call")
        (position,) = self._run(self.scripts.callback, call_id, number)
        return int(position)

    # -- time -----------------------------------------------------------------------

    def tick(self, route: bool = True) -> TickReport:
        """Apply every deadline that has passed, then route all queues."""
        expired: list[Expired] = []
        wrapped: list[str] = []
        waits: list[MaxWait] = []
        while True:
            done, wrapped_now, waited, more = self._run(self.scripts.sweep, SWEEP_BATCH)
            expired += [Expired(c, q, tuple(a.split(","))) for c, q, a in done]
            wrapped += wrapped_now
            waits += [MaxWait(c, action, q) for c, action, q in waited]
            if more != "1":
                break
        offers = self.route() if route else ()
        return TickReport(tuple(expired), tuple(wrapped), tuple(waits), offers)

    # -- views ----------------------------------------------------------------------

    def queue_names(self) -> list[str]:
        return [_text(name) for name in self.redis.zrevrange(self.keys.queues, 0, -1)]

    def agent_ids(self) -> list[str]:
        return sorted(_text(agent) for agent in self.redis.smembers(self.keys.agents))

    def agent(self, agent_id: str) -> AgentView:
        agent_id = _checked(_name, agent_id, "agent")
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.agent(agent_id))
        pipe.hgetall(self.keys.profile(agent_id))
        pipe.smembers(self.keys.tasks(agent_id))
        raw, raw_profile, tasks = pipe.execute()
        if not raw:
            raise UnknownAgent(f"no agent named {agent_id!r}")
        a = {_text(k): _text(v) for k, v in raw.items()}
        profile = {_text(k): _text(v) for k, v in raw_profile.items()}
        day = self._today()
        return AgentView(
            agent_id=agent_id,
            name=profile.get("name") or None,
            status=a["status"],
            presence=a["presence"],
            reason=a.get("reason", ""),
            since_ms=int(a.get("since", 0)),
            idle_since_ms=int(a.get("idle_since", 0)),
            wrap_until_ms=int(a.get("wrap_until", 0)),
            load={str(c): int(a.get(f"load:{c}", 0)) for c in CHANNELS},
            capacity={str(c): int(a.get(f"cap:{c}", 0)) for c in CHANNELS},
            skills=json.loads(a["skills"]),
            queues=json.loads(a["queues"]),
            calls_today=int(a.get("calls", 0)) if int(a.get("calls_day", -1)) == day else 0,
            talk_ms_today=int(a.get("talk_ms", 0)) if int(a.get("talk_day", -1)) == day else 0,
            tasks=sorted(_text(t) for t in tasks),
            contact=json.loads(profile.get("contact") or "{}"),
        )

    def _today(self) -> int:
        now = self.clock() if self.clock is not None else self._server_ms()
        return (now + self.day_offset_ms) // 86_400_000

    def _server_ms(self) -> int:
        seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def queue(self, name: str) -> QueueView:
        name = _checked(_name, name, "queue")
        pipe = self.redis.pipeline(transaction=False)
        pipe.hexists(self.keys.queue(name), "cfg")
        pipe.zcard(self.keys.waiting(name))
        pipe.zrange(self.keys.since(name), 0, 0, withscores=True)
        pipe.zrange(self.keys.members(name), 0, -1)
        pipe.hgetall(self.keys.stats(name))
        exists, waiting, oldest, members, stats = pipe.execute()
        if not exists:
            raise UnknownQueue(f"no queue named {name!r}")
        now = self.clock() if self.clock is not None else self._server_ms()
        longest = max(0, now - int(oldest[0][1])) if oldest else 0
        pipe = self.redis.pipeline(transaction=False)
        for member in members:
            pipe.hget(self.keys.agent(_text(member)), "status")
        by_status = {str(status): 0 for status in AgentStatus}
        for status in pipe.execute():
            if status is not None:
                by_status[_text(status)] = by_status.get(_text(status), 0) + 1
        return QueueView(
            name=name,
            waiting=int(waiting),
            longest_wait_ms=longest,
            agents_by_status=by_status,
            stats={_text(k): int(v) for k, v in stats.items()},
        )

    def queue_config(self, name: str) -> QueueConfig:
        """The routing the queue was given, as stored (the file's or the API's)."""
        name = _checked(_name, name, "queue")
        stored = self.redis.hget(self.keys.queue(name), "cfg")
        if stored is None:
            raise UnknownQueue(f"no queue named {name!r}")
        return QueueConfig.model_validate_json(stored)

    def agent_config(self, agent_id: str) -> AgentConfig:
        """The agent as `put_agent` was given it, rebuilt from the state and profile hashes."""
        view = self.agent(agent_id)
        weight, order = self.redis.hmget(self.keys.profile(view.agent_id), "weight", "order")
        return AgentConfig.model_validate(
            {
                "name": view.name,
                "skills": view.skills,
                "queues": view.queues,
                "capacity": view.capacity,
                "weight": int(weight or 1),
                "order": int(order) if order not in (None, b"", "") else None,
                **view.contact,
            }
        )

    def call(self, call_id: str) -> CallView:
        call_id = _checked(_call_id, call_id, "call")
        raw = self.redis.hgetall(self.keys.call(call_id))
        if not raw:
            raise UnknownCall(f"no call {call_id!r} in the ACD")
        c = {_text(k): _text(v) for k, v in raw.items()}
        position = None
        if c["state"] == "waiting":
            rank = self.redis.zrank(self.keys.waiting(c["queue"]), call_id)
            position = rank + 1 if isinstance(rank, int) else None
        return CallView(
            call_id=call_id,
            state=c["state"],
            queue=c["queue"],
            kind=c.get("kind", "call"),
            channel=c.get("channel", "voice"),
            priority=int(c.get("priority", 0)),
            position=position,
            agents=tuple(a for a in c.get("agents", "").split(",") if a),
            joined_ms=int(c.get("joined", 0)),
            answered_ms=int(c["answered"]) if c.get("answered") else None,
            result=c.get("result") or None,
            callback_number=c.get("callback") or None,
            caller=c.get("caller") or None,
        )
