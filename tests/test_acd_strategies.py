"""Each routing strategy picks the agent its definition names, on constructed floors."""

from __future__ import annotations

import random
from collections import Counter
from itertools import count

import pytest
import redis

from acd.clock import ManualClock
from acd.invariants import check_state
from acd.schemas import AgentConfig, QueueConfig
from acd.services import AcdService
from acd.strategies import Strategy

_ids = count(1)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def acd(redis_client: redis.Redis, clock: ManualClock) -> AcdService:
    return AcdService(redis_client, clock=clock, rng=random.Random(20261101))


def floor(
    acd: AcdService,
    clock: ManualClock,
    strategy: Strategy,
    agents: dict[str, AgentConfig] | list[str],
    **queue: object,
) -> None:
    """Queue `q` with the strategy (no wrap-up), agents made available one second apart
    in the order given (so the first is the longest idle)."""
    acd.put_queue(
        "q", QueueConfig.model_validate({"strategy": strategy, "wrapup_seconds": 0, **queue})
    )
    configs = agents if isinstance(agents, dict) else {a: AgentConfig(queues=["q"]) for a in agents}
    for agent_id, config in configs.items():
        acd.put_agent(agent_id, config)
    for agent_id in configs:
        acd.set_status(agent_id, "available")
        clock.advance(1)


def call_to(acd: AcdService, clock: ManualClock, talk_s: float = 0) -> str:
    """One call through the queue: offered, answered, talked, hung up; who took it."""
    call_id = f"c{next(_ids)}"
    joined = acd.join(call_id, "q")
    assert len(joined.offers) == 1, joined
    (agent_id,) = joined.offers[0].agents
    acd.answer(call_id, agent_id)
    clock.advance(talk_s)
    acd.hangup(call_id)
    clock.advance(1)
    return agent_id


def offered_to(acd: AcdService) -> tuple[str, ...]:
    """Offer one call and take it back (an abandon frees the agent untouched)."""
    call_id = f"c{next(_ids)}"
    joined = acd.join(call_id, "q")
    assert len(joined.offers) == 1, joined
    acd.hangup(call_id)
    return joined.offers[0].agents


def test_longest_idle_picks_the_agent_free_longest(acd: AcdService, clock: ManualClock) -> None:
    floor(acd, clock, Strategy.LONGEST_IDLE, ["a", "b", "c"])
    assert call_to(acd, clock) == "a"
    # a just finished a call: now b has been idle longest, then c, then a again
    assert [call_to(acd, clock) for _ in range(4)] == ["b", "c", "a", "b"]


def test_longest_idle_skips_agents_without_the_skill(acd: AcdService, clock: ManualClock) -> None:
    floor(
        acd,
        clock,
        Strategy.LONGEST_IDLE,
        {
            "a": AgentConfig(queues=["q"], skills={"network": 1}),
            "b": AgentConfig(queues=["q"], skills={"network": 3}),
            "c": AgentConfig(queues=["q"], skills={"network": 5}),
        },
        skills={"network": 3},
    )
    assert call_to(acd, clock) == "b"
    assert call_to(acd, clock) == "c"
    assert call_to(acd, clock) == "b"


def test_fewest_calls_counts_today_only(acd: AcdService, clock: ManualClock) -> None:
    floor(acd, clock, Strategy.FEWEST_CALLS, ["a", "b", "c"])
    # build the day: a 3 calls, b 1 call, c 2 calls (made with fixed order, same queue)
    acd.put_queue("q", QueueConfig(strategy=Strategy.FIXED_ORDER, wrapup_seconds=0))
    for expected in ["a", "a", "a"]:
        assert call_to(acd, clock) == expected
    acd.set_status("a", "break", "training")
    assert call_to(acd, clock) == "b"
    acd.set_status("b", "break", "training")
    assert [call_to(acd, clock), call_to(acd, clock)] == ["c", "c"]
    for agent_id in ("a", "b"):
        acd.set_status(agent_id, "available")
    acd.put_queue("q", QueueConfig(strategy=Strategy.FEWEST_CALLS, wrapup_seconds=0))
    assert [acd.agent(a).calls_today for a in "abc"] == [3, 1, 2]
    assert call_to(acd, clock) == "b"  # 1 call, now 2
    assert call_to(acd, clock) == "b"  # ties with c at 2; b before c by name
    assert call_to(acd, clock) == "c"  # c 2, b 3, a 3
    # the next morning b's and c's counts are yesterday's; a takes one call today first
    clock.advance(24 * 3600)
    acd.put_queue("q", QueueConfig(strategy=Strategy.FIXED_ORDER, wrapup_seconds=0))
    assert call_to(acd, clock) == "a"
    acd.put_queue("q", QueueConfig(strategy=Strategy.FEWEST_CALLS, wrapup_seconds=0))
    assert acd.agent("a").calls_today == 1
    assert acd.agent("b").calls_today == 0
    assert call_to(acd, clock) == "b"  # b and c both have none today; b first by name


def test_least_talk_time_picks_the_least_talked_today(acd: AcdService, clock: ManualClock) -> None:
    floor(acd, clock, Strategy.FIXED_ORDER, ["a", "b", "c"])
    assert call_to(acd, clock, talk_s=300) == "a"
    acd.set_status("a", "break", "lunch")
    assert call_to(acd, clock, talk_s=60) == "b"
    assert call_to(acd, clock, talk_s=60) == "b"
    acd.set_status("b", "break", "lunch")
    assert call_to(acd, clock, talk_s=200) == "c"
    for agent_id in ("a", "b"):
        acd.set_status(agent_id, "available")
    acd.put_queue("q", QueueConfig(strategy=Strategy.LEAST_TALK_TIME, wrapup_seconds=0))
    # talk today: a 300 s, b 120 s, c 200 s
    assert acd.agent("b").talk_ms_today == 120_000
    assert call_to(acd, clock, talk_s=100) == "b"  # b 220 s now
    assert call_to(acd, clock, talk_s=10) == "c"  # c 210 s now
    assert call_to(acd, clock, talk_s=10) == "c"  # c 210 < b 220
    assert call_to(acd, clock) == "b"


def test_round_robin_remembers_the_last_agent(acd: AcdService, clock: ManualClock) -> None:
    floor(acd, clock, Strategy.ROUND_ROBIN, ["a", "b", "c", "d"])
    assert [call_to(acd, clock) for _ in range(5)] == ["a", "b", "c", "d", "a"]
    acd.set_status("c", "break", "coffee")
    assert [call_to(acd, clock) for _ in range(4)] == ["b", "d", "a", "b"]
    # memory survives a new service (another process) on the same Redis
    other = AcdService(acd.redis, clock=clock, rng=random.Random(1))
    acd.set_status("c", "available")
    joined = other.join("rr-other", "q")
    assert joined.offers[0].agents == ("c",)


def test_fixed_order_always_starts_at_the_top(acd: AcdService, clock: ManualClock) -> None:
    floor(
        acd,
        clock,
        Strategy.FIXED_ORDER,
        {
            "late": AgentConfig(queues=["q"]),
            "second": AgentConfig(queues=["q"], order=2),
            "first": AgentConfig(queues=["q"], order=1),
        },
    )
    assert [call_to(acd, clock) for _ in range(3)] == ["first", "first", "first"]
    first_call = acd.join("busy-first", "q")
    assert first_call.offers[0].agents == ("first",)
    assert offered_to(acd) == ("second",)
    acd.set_status("second", "break", "meeting")
    assert offered_to(acd) == ("late",)


def test_random_spreads_evenly(acd: AcdService, clock: ManualClock) -> None:
    floor(acd, clock, Strategy.RANDOM, ["a", "b", "c"])
    picks = Counter(offered_to(acd)[0] for _ in range(600))
    assert set(picks) == {"a", "b", "c"}
    assert all(140 <= picks[a] <= 260 for a in "abc"), picks


def test_weighted_random_follows_the_weights(acd: AcdService, clock: ManualClock) -> None:
    floor(
        acd,
        clock,
        Strategy.WEIGHTED_RANDOM,
        {
            "light": AgentConfig(queues=["q"], weight=1),
            "medium": AgentConfig(queues=["q"], weight=3),
            "heavy": AgentConfig(queues=["q"], weight=6),
        },
    )
    picks = Counter(offered_to(acd)[0] for _ in range(1000))
    assert 50 <= picks["light"] <= 150, picks
    assert 230 <= picks["medium"] <= 370, picks
    assert 530 <= picks["heavy"] <= 670, picks


def test_random_strategies_only_pick_fitting_agents(acd: AcdService, clock: ManualClock) -> None:
    agents = {f"n{i}": AgentConfig(queues=["q"], skills={"network": 1}) for i in range(20)}
    agents["fit"] = AgentConfig(queues=["q"], skills={"network": 1, "japanese": 4}, weight=1)
    floor(acd, clock, Strategy.WEIGHTED_RANDOM, agents)
    for _ in range(20):
        call_id = f"c{next(_ids)}"
        joined = acd.join(call_id, "q", skills={"japanese": 3, "network": 1})
        assert joined.offers[0].agents == ("fit",)
        acd.hangup(call_id)


def test_ring_all_rings_everyone_free_and_the_first_answer_wins(
    acd: AcdService, clock: ManualClock
) -> None:
    floor(acd, clock, Strategy.RING_ALL, ["a", "b", "c", "d"])
    acd.set_status("d", "break", "lunch")
    joined = acd.join("ring", "q")
    (offer,) = joined.offers
    assert sorted(offer.agents) == ["a", "b", "c"]
    assert {acd.agent(a).status for a in "abc"} == {"offered"}
    # b rings out; a and c still ring
    assert acd.no_answer("ring", "b").requeued is False
    assert acd.agent("b").status == "not-ready"
    acd.answer("ring", "c")
    assert acd.agent("c").status == "on-call"
    assert acd.agent("a").status == "available"
    second = acd.join("ring-2", "q")
    assert second.offers[0].agents == ("a",)
    assert check_state(acd.redis) == []


def test_ring_all_requeues_when_every_phone_rings_out(acd: AcdService, clock: ManualClock) -> None:
    floor(acd, clock, Strategy.RING_ALL, ["a", "b"], autopause=False)
    joined = acd.join("ring", "q", route=False)
    assert joined.position == 1
    (offer,) = acd.route(["q"])
    assert sorted(offer.agents) == ["a", "b"]
    assert acd.no_answer("ring", "a", route=False).requeued is False
    assert acd.no_answer("ring", "b", route=False).requeued is True
    assert acd.call("ring").state == "waiting"
    (again,) = acd.route(["q"])
    assert sorted(again.agents) == ["a", "b"]
    assert again.attempt == 2
