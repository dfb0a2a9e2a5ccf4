"""The audits themselves: each one reports the damage it exists to catch."""

from __future__ import annotations

import random

import pytest
import redis

from acd.clock import ManualClock
from acd.events import Event, EventLog
from acd.invariants import check_events, check_state
from acd.schemas import AgentConfig, QueueConfig
from acd.services import AcdService


@pytest.fixture
def acd(redis_client: redis.Redis) -> AcdService:
    service = AcdService(redis_client, clock=ManualClock(), rng=random.Random(1))
    service.put_queue("q", QueueConfig(wrapup_seconds=0))
    for agent_id in ("a", "b"):
        service.put_agent(agent_id, AgentConfig(queues=["q"], skills={"network": 2}))
        service.set_status(agent_id, "available")
    return service


def test_a_busy_agent_left_in_the_index_is_reported(acd: AcdService) -> None:
    acd.join("c1", "q")
    assert check_state(acd.redis) == []
    acd.redis.zadd(acd.keys.avail("voice", "q"), {"a": 0})
    assert any("agent a in" in problem for problem in check_state(acd.redis))


def test_a_load_that_disagrees_with_held_calls_is_reported(acd: AcdService) -> None:
    acd.join("c1", "q")
    acd.redis.hset(acd.keys.agent("a"), "load:voice", 0)
    assert any("voice load" in problem for problem in check_state(acd.redis))


def test_a_line_entry_without_its_call_is_reported(acd: AcdService) -> None:
    acd.redis.zadd(acd.keys.waiting("q"), {"ghost": 1})
    problems = check_state(acd.redis)
    assert any("ghost" in problem for problem in problems)


def event(kind: str, **fields: str) -> Event:
    return Event(id="0-0", type=kind, at_ms=0, fields=fields)


def test_double_bookings_and_double_endings_are_reported() -> None:
    available = [event("status", agent=a, presence="available") for a in ("a", "b")]
    two_calls_one_agent = [
        *available,
        event("join", call="c1", channel="voice"),
        event("join", call="c2", channel="voice"),
        event("offer", call="c1", agent="a"),
        event("offer", call="c2", agent="a"),
    ]
    problems = check_events(two_calls_one_agent, require_all_ended=False).problems
    assert any("while holding" in p for p in problems)
    one_call_two_offers = [
        *available,
        event("join", call="c1", channel="voice"),
        event("offer", call="c1", agent="a"),
        event("offer", call="c1", agent="b"),
    ]
    problems = check_events(one_call_two_offers, require_all_ended=False).problems
    assert any("offered again" in p for p in problems)
    ended_twice = [
        event("join", call="c1", channel="voice"),
        event("abandon", call="c1"),
        event("end", call="c1"),
    ]
    assert any("ended 2 times" in p for p in check_events(ended_twice).problems)
    never_ended = [event("join", call="c1", channel="voice")]
    assert any("never ended" in p for p in check_events(never_ended).problems)


def test_a_real_history_replays_clean(acd: AcdService) -> None:
    acd.join("c1", "q")
    acd.answer("c1", "a")
    acd.hangup("c1")
    acd.join("c2", "q")
    acd.hangup("c2")
    replay = check_events(EventLog(acd.redis).all())
    assert replay.problems == []
    assert (replay.offers, replay.answers, replay.abandons) == (2, 1, 1)
