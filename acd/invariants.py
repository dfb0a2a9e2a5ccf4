"""Audits of the ACD's promises, over the live state and over the event stream.

Both return a list of problems (empty when all is well). The concurrency tests run
them after thousands of racing operations; an operator can run them against a live
ACD (they only read), e.g. after a Redis failover.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

import redis

from acd.events import TERMINAL, Event, EventType
from acd.keys import DEFAULT_NAMESPACE, Keys
from acd.schemas import CHANNELS


def _s(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _members(client: redis.Redis, key: str) -> list[str]:
    return [_s(member) for member in cast("list[bytes]", client.zrange(key, 0, -1))]


def _routable(agent: dict[str, str], channel: str) -> bool:
    """The Python twin of `routable` in lib.lua."""

    def num(name: str) -> int:
        return int(agent.get(name) or 0)

    if agent.get("presence") != "available" or num("wrap_until") > 0:
        return False
    if channel == "voice":
        return num("cap:voice") >= 1 and all(num(f"load:{c}") == 0 for c in CHANNELS)
    return num("load:voice") == 0 and num(f"load:{channel}") < num(f"cap:{channel}")


def check_state(client: redis.Redis, namespace: str = DEFAULT_NAMESPACE) -> list[str]:
    """Loads equal held tasks, no agent holds two voice calls or voice beside other
    work, every index holds exactly the agents free for it, every line and offer
    agrees with its call."""
    keys = Keys(namespace)
    problems: list[str] = []
    calls_held: dict[str, list[str]] = {}
    for raw_id in client.smembers(keys.agents):
        agent_id = _s(raw_id)
        agent = {_s(k): _s(v) for k, v in client.hgetall(keys.agent(agent_id)).items()}
        tasks = sorted(_s(t) for t in client.smembers(keys.tasks(agent_id)))
        calls_held[agent_id] = tasks
        load: dict[str, int] = defaultdict(int)
        offered = active = 0
        for call_id in tasks:
            call = {_s(k): _s(v) for k, v in client.hgetall(keys.call(call_id)).items()}
            load[call.get("channel", "?")] += 1
            if call.get("state") == "offered" and agent_id in call.get("agents", "").split(","):
                offered += 1
            elif call.get("state") == "connected" and call.get("agent") == agent_id:
                active += 1
            else:
                problems.append(f"agent {agent_id} holds {call_id} in state {call.get('state')}")
        for channel in CHANNELS:
            if int(agent.get(f"load:{channel}") or 0) != load[channel]:
                problems.append(
                    f"agent {agent_id} {channel} load {agent.get(f'load:{channel}')} "
                    f"but holds {load[channel]}"
                )
        if int(agent.get("offered") or 0) != offered or int(agent.get("active") or 0) != active:
            problems.append(f"agent {agent_id} offered/active counters disagree with tasks")
        if load["voice"] > 1:
            problems.append(f"agent {agent_id} holds {load['voice']} voice calls")
        if load["voice"] and sum(load.values()) > load["voice"]:
            problems.append(f"agent {agent_id} has other work beside a voice call")
        skills = json.loads(agent.get("skills") or "{}")
        for queue in json.loads(agent.get("queues") or "[]"):
            indexed = json.loads(_s(client.hget(keys.queue(queue), "skills_ix")) or "{}")
            for channel in CHANNELS:
                # the voice family holds the wholly free; the others those who can
                # take one more of their channel but no voice call (see lib.lua)
                free = _routable(agent, channel) and (
                    channel == "voice" or not _routable(agent, "voice")
                )
                expected = {keys.avail(channel, queue): free} | {
                    keys.avail(channel, queue, skill, level): free and skill in indexed
                    for skill, level in skills.items()
                }
                for index, want in expected.items():
                    present = client.zscore(index, agent_id) is not None
                    if present != want:
                        problems.append(
                            f"agent {agent_id} {'in' if present else 'missing from'} {index}"
                        )
    in_line: dict[str, set[str]] = defaultdict(set)
    for call_id in _members(client, keys.offers):
        call = {_s(k): _s(v) for k, v in client.hgetall(keys.call(call_id)).items()}
        if call.get("state") != "offered":
            problems.append(f"offer of {call_id} left in state {call.get('state')}")
            continue
        in_line[call["queue"]].add(call_id)
        for agent_id in call.get("agents", "").split(","):
            if call_id not in calls_held.get(agent_id, []):
                problems.append(f"call {call_id} offered to {agent_id}, who does not hold it")
    for queue in _members(client, keys.queues):
        for call_id in _members(client, keys.waiting(queue)):
            fields = cast("list[bytes | None]", client.hmget(keys.call(call_id), "state", "queue"))
            state, call_queue = (_s(v) for v in fields)
            if state != "waiting" or call_queue != queue:
                problems.append(f"call {call_id} in line for {queue} but {state} in {call_queue}")
            in_line[queue].add(call_id)
        described = {_s(c) for c in cast("list[bytes]", client.hkeys(keys.reqs(queue)))}
        if described != in_line[queue]:
            problems.append(
                f"{queue}: routing lines for {sorted(described - in_line[queue])[:5]} "
                f"left over, missing for {sorted(in_line[queue] - described)[:5]}"
            )
    return problems


@dataclass
class Replay:
    """What the event stream says happened, call by call and agent by agent."""

    joined: set[str] = field(default_factory=set)
    terminal: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    offers: int = 0
    answers: int = 0
    abandons: int = 0
    problems: list[str] = field(default_factory=list)


def check_events(events: Iterable[Event], require_all_ended: bool = True) -> Replay:
    """Replay the stream in order and check, at every offer: the call was not already
    offered or connected (one agent per call, unless ring-all named several at once),
    and no agent named had a voice call, was in wrap-up, or was not available. At the
    end: each call closed exactly once."""
    replay = Replay()
    ringing: dict[str, set[str]] = {}
    connected: dict[str, str] = {}
    channel_of: dict[str, str] = {}
    voice_held: dict[str, set[str]] = defaultdict(set)
    wrapping: set[str] = set()
    presence: dict[str, str] = {}

    def free(agent_id: str, call_id: str) -> None:
        voice_held[agent_id].discard(call_id)

    for event in events:
        call_id = event.get("call")
        kind = event.type
        if kind == EventType.JOIN:
            if call_id in replay.joined:
                replay.problems.append(f"{call_id} joined twice")
            replay.joined.add(call_id)
            channel_of[call_id] = event.get("channel")
        elif kind == EventType.OFFER:
            replay.offers += 1
            agents = [a for a in event.get("agent").split(",") if a]
            if call_id in ringing or call_id in connected:
                replay.problems.append(f"{call_id} offered again while offered or connected")
            for agent_id in agents:
                if channel_of.get(call_id) == "voice" and voice_held[agent_id]:
                    replay.problems.append(
                        f"{agent_id} offered voice call {call_id} while holding "
                        f"{sorted(voice_held[agent_id])}"
                    )
                if agent_id in wrapping:
                    replay.problems.append(f"{agent_id} offered {call_id} during wrap-up")
                if presence.get(agent_id) != "available":
                    replay.problems.append(
                        f"{agent_id} offered {call_id} while {presence.get(agent_id)}"
                    )
                if channel_of.get(call_id) == "voice":
                    voice_held[agent_id].add(call_id)
            ringing[call_id] = set(agents)
        elif kind == EventType.ANSWER:
            replay.answers += 1
            agent_id = event.get("agent")
            offered_to = ringing.pop(call_id, set())
            if agent_id not in offered_to:
                replay.problems.append(f"{call_id} answered by {agent_id}, not offered to them")
            for other in offered_to - {agent_id}:
                free(other, call_id)
            connected[call_id] = agent_id
        elif kind == EventType.NO_ANSWER:
            agent_id = event.get("agent")
            offered_to = ringing.get(call_id, set())
            if agent_id not in offered_to:
                replay.problems.append(f"no-answer from {agent_id} for {call_id} not offered")
            offered_to.discard(agent_id)
            free(agent_id, call_id)
            if not offered_to:
                ringing.pop(call_id, None)
        elif kind in TERMINAL:
            replay.terminal[call_id] += 1
            if kind == EventType.ABANDON:
                replay.abandons += 1
            for agent_id in ringing.pop(call_id, set()):
                free(agent_id, call_id)
            agent_id = connected.pop(call_id, "")
            if agent_id:
                free(agent_id, call_id)
        elif kind == EventType.WRAP_UP:
            wrapping.add(event.get("agent"))
        elif kind == EventType.WRAP_UP_END:
            wrapping.discard(event.get("agent"))
        elif kind == EventType.STATUS:
            presence[event.get("agent")] = event.get("presence")
    for call_id, times in replay.terminal.items():
        if times != 1:
            replay.problems.append(f"{call_id} ended {times} times")
        if call_id not in replay.joined:
            replay.problems.append(f"{call_id} ended without joining")
    if require_all_ended:
        never = sorted(replay.joined - set(replay.terminal))
        if never:
            replay.problems.append(f"{len(never)} calls never ended, e.g. {never[:5]}")
    return replay
