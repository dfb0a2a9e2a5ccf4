"""Many processes, one ACD: no double booking under racing operations, nothing lost
when a process is killed in the middle of an offer."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from typing import Any

import pytest
import redis

from acd.clock import ManualClock
from acd.events import EventLog
from acd.invariants import check_events, check_state
from acd.results import Offer
from acd.schemas import AgentConfig, Capacity, QueueConfig
from acd.services import AcdService
from acd.strategies import Strategy
from kokan.errors import KokanError
from kokan.redis_conn import connect

WORKERS = 4
CALLS_PER_WORKER = 1000
SPEEDUP = 10
"""ACD time runs ten times faster than the wall clock in the racing test (every process
reads the same system clock), so unanswered offers expire and wrap-ups end while the
processes race, and the sweeps race too."""
WORKER_TIMEOUT_S = 80.0
STEADY_AGENT = "agent13"
"""Serves only sales (no autopause) and is never set available or on a break by the
racing processes: the others' wrap-ups are mostly ended early by those random status
changes, this agent's always run out, so the sweep's own wrap-up ends take part in
every race."""
SKILLS = ("japanese", "english", "network", "billing")
QUEUES: dict[str, dict[str, Any]] = {
    "support": {"strategy": Strategy.LONGEST_IDLE, "skills": {"network": 2}, "priority": 5},
    "billing": {"strategy": Strategy.FEWEST_CALLS, "skills": {"billing": 1}},
    "sales": {"strategy": Strategy.ROUND_ROBIN, "wrapup_seconds": 1, "autopause": False},
    "vip": {"strategy": Strategy.RING_ALL, "priority": 10},
}


def build_floor(acd: AcdService) -> list[str]:
    rng = random.Random(11)
    for name, settings in QUEUES.items():
        acd.put_queue(
            name,
            QueueConfig.model_validate(
                {"wrapup_seconds": 0, "ring_timeout_seconds": 5, "autopause": True, **settings}
            ),
        )
    agents = []
    for i in range(14):
        agent_id = f"agent{i:02d}"
        queues = rng.sample(sorted(QUEUES), 2) if i >= 3 else ["vip", "support"]
        if agent_id == STEADY_AGENT:
            queues = ["sales"]
        skills = {s: rng.randint(1, 5) for s in rng.sample(SKILLS, 3)}
        skills.setdefault("network", 2)
        acd.put_agent(
            agent_id,
            AgentConfig(queues=queues, skills=skills, capacity=Capacity(voice=1, chat=2, sms=0)),
        )
        acd.set_status(agent_id, "available")
        agents.append(agent_id)
    return agents


def accelerated_clock() -> int:
    return int(time.time() * 1000 * SPEEDUP)


def worker(index: int, url: str, agents: list[str], start: Any, results: Any) -> None:
    """Join CALLS_PER_WORKER calls and act on them and on everyone else's, at random:
    answer, ring out, hang up, abandon, breaks, ticks; then end every call it joined."""
    rng = random.Random(1000 + index)
    steered = [agent for agent in agents if agent != STEADY_AGENT]
    client = connect(url)
    acd = AcdService(client, clock=accelerated_clock, rng=random.Random(index))
    ringing: list[Offer] = []
    talking: list[str] = []
    joined = 0
    rang_out = 0  # no-answers this process reported itself (the rest are expiries)
    start.wait()

    def attempt(action: Any) -> Any:
        try:
            return action()
        except KokanError:
            return None  # lost a race to another process: that is the point

    def live_call_id() -> str:
        """A call of any process, most likely one still in the ACD."""
        other = rng.randrange(WORKERS)
        return f"w{other}-{max(0, joined - rng.randrange(40))}"

    while joined < CALLS_PER_WORKER:
        roll = rng.random()
        if roll < 0.25:
            queue = rng.choice(sorted(QUEUES))
            call_id = f"w{index}-{joined}"
            result = attempt(
                lambda queue=queue, call_id=call_id: acd.join(
                    call_id,
                    queue,
                    priority=rng.choice((0, 0, 0, 5)),
                    channel="chat" if rng.random() < 0.15 else "voice",
                )
            )
            joined += 1
            if result:
                ringing.extend(result.offers)
        elif roll < 0.45 and ringing:
            offer = ringing.pop(rng.randrange(len(ringing)))
            if attempt(lambda offer=offer: acd.answer(offer.call_id, rng.choice(offer.agents))):
                talking.append(offer.call_id)
        elif roll < 0.49 and ringing:
            offer = ringing.pop(rng.randrange(len(ringing)))
            result = attempt(
                lambda offer=offer: acd.no_answer(offer.call_id, rng.choice(offer.agents))
            )
            if result:
                rang_out += 1
                ringing.extend(result.offers)
        elif roll < 0.67 and talking:
            call_id = talking.pop(rng.randrange(len(talking)))
            result = attempt(lambda call_id=call_id: acd.hangup(call_id))
            if result:
                ringing.extend(result.offers)
        elif roll < 0.77:
            # hang up a call of any process: an abandon, an end, or a lost race
            call_id = live_call_id()
            result = attempt(lambda call_id=call_id: acd.hangup(call_id))
            if result:
                ringing.extend(result.offers)
        elif roll < 0.82:
            # answer some call as some agent: nearly always refused, never harmful
            attempt(lambda: acd.answer(live_call_id(), rng.choice(agents)))
        elif roll < 0.92:
            agent_id = rng.choice(steered)
            result = attempt(lambda agent_id=agent_id: acd.set_status(agent_id, "available"))
            ringing.extend(result or ())
        elif roll < 0.94:
            agent_id = rng.choice(steered)
            attempt(lambda agent_id=agent_id: acd.set_status(agent_id, "break", "coffee"))
        else:
            ringing.extend(acd.tick().offers)
    for i in range(CALLS_PER_WORKER):
        attempt(lambda i=i: acd.cancel(f"w{index}-{i}", route=False))
    client.close()
    results.put(rang_out)


@pytest.mark.slow
def test_racing_processes_never_double_book(redis_client: redis.Redis, redis_url: str) -> None:
    acd = AcdService(redis_client, clock=accelerated_clock)
    agents = build_floor(acd)
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    processes = [
        context.Process(target=worker, args=(i, redis_url, agents, start, results), daemon=True)
        for i in range(WORKERS)
    ]
    for process in processes:
        process.start()
    start.set()
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    for process in processes:
        process.join(max(0.1, deadline - time.monotonic()))
    assert [p.exitcode for p in processes] == [0] * WORKERS
    reported_ring_outs = sum(results.get(timeout=5) for _ in processes)

    assert check_state(redis_client) == []
    replay = check_events(EventLog(redis_client).all(), require_all_ended=True)
    assert replay.problems == []
    assert len(replay.joined) == WORKERS * CALLS_PER_WORKER
    assert sum(replay.terminal.values()) == WORKERS * CALLS_PER_WORKER
    # enough of everything happened for the check to mean something
    assert replay.offers > 600, replay.offers  # typically 1 000-1 300
    assert replay.answers > 400, replay.answers
    assert replay.abandons > 300, replay.abandons
    for agent_id in agents:
        view = acd.agent(agent_id)
        assert (view.load, view.tasks) == ({"voice": 0, "chat": 0, "sms": 0}, [])
    events = list(EventLog(redis_client).all())
    # the sweeps raced too: offers nobody answered expired, wrap-ups ran out
    expiries = sum(e.type == "no-answer" for e in events) - reported_ring_outs
    assert expiries > 0
    assert any(e.type == "wrap-up-end" and e.get("early") == "0" for e in events)
    ring_all = [e for e in events if e.type == "offer" and "," in e.get("agent")]
    assert ring_all, "the ring-all queue offered calls to several agents at once"
    assert {e.get("queue") for e in ring_all} == {"vip"}


def offer_forever(url: str, now_ms: int) -> None:
    """Join and route calls as fast as it can, never answering: killed by the test."""
    acd = AcdService(connect(url), clock=ManualClock(now_ms), rng=random.Random(2))
    for i in range(1_000_000):
        acd.join(f"doomed-{i}", "q")


@pytest.mark.slow
def test_a_process_killed_mid_offer_loses_nothing(
    redis_client: redis.Redis, redis_url: str
) -> None:
    clock = ManualClock()
    acd = AcdService(redis_client, clock=clock, rng=random.Random(4))
    acd.put_queue("q", QueueConfig(ring_timeout_seconds=10, autopause=False, wrapup_seconds=0))
    agents = [f"a{i}" for i in range(5)]
    for agent_id in agents:
        acd.put_agent(agent_id, AgentConfig(queues=["q"]))
        acd.set_status(agent_id, "available")
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=offer_forever, args=(redis_url, clock()), daemon=True)
    process.start()
    deadline = time.monotonic() + 30
    while acd.queue("q").waiting < 20:  # every agent reserved, calls queueing behind
        assert process.is_alive()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    process.join(10)
    assert process.exitcode == -signal.SIGKILL

    # killed between two atomic steps: consistent, every agent held by a dead offer
    assert check_state(redis_client) == []
    offered = {acd.agent(a).tasks[0] for a in agents}
    assert len(offered) == 5
    assert all(acd.agent(a).status == "offered" for a in agents)
    assert acd.tick().offers == ()  # not yet: the offers have not expired

    clock.advance(10 + 5)  # ring timeout + grace
    report = acd.tick()
    assert {e.call_id for e in report.expired} == offered
    # offered again at once, ahead of every call that came later, as a second attempt
    assert {o.call_id for o in report.offers} == offered
    assert Counter(o.attempt for o in report.offers) == {2: 5}
    for offer in report.offers:
        acd.answer(offer.call_id, offer.agents[0])
        acd.hangup(offer.call_id, route=False)
    assert all(acd.agent(a).status == "available" for a in agents)
    assert check_state(redis_client) == []
    replay = check_events(EventLog(redis_client).all(), require_all_ended=False)
    assert replay.problems == []
