"""ACD routing decisions against a real Redis on 127.0.0.1, beside the floor of one
EVALSHA round trip of a trivial script, in the same run.

For 100, 1 000 and 10 000 agents: 50 queues (every strategy but ring-all, skills with
minimum levels, relaxation steps, some preferring novices), 20 skills, every agent in 3
queues with 3-4 skills, all available; 10 000 calls waiting, spread over the queues,
a fifth asking for a second skill. A decision is `AcdService.decide(queue)`: one
routing script that finds the queue's best waiting call for its best fitting free
agent and reserves that agent, as a client sees it (validation and parsing included).
Decisions run back to back in batches (at most half the free agents per batch); between
batches, untimed, the offered calls are answered and hung up and as many new calls
join, so the floor stays the same size.

    .venv/bin/python -m bench.acd [--decisions 5000] [--agents 100,1000,10000]

REDIS_URL (a TCP Redis) is used when set, in a namespace of its own that is removed
afterwards; otherwise the embedded redis-server is started on a loopback TCP port.

Targets (issue 4): p99 at 10 000 agents within 2x the p99 at 100 agents, and at least
2 000 decisions per second from one Python process.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from acd.clock import ManualClock
from acd.schemas import AgentConfig, QueueConfig
from acd.services import AcdService
from acd.strategies import Strategy
from kokan.embedded_redis import MAX_UNIX_SOCKET_PATH, EmbeddedRedis
from kokan.redis_conn import connect

QUEUES = 50
SKILLS = 20
WAITING_CALLS = 10_000
QUEUES_PER_AGENT = 3
WARMUP_DECISIONS = 300
BATCH_MAX = 200
STRATEGIES = [s for s in Strategy if s is not Strategy.RING_ALL]
"""Ring-all rings up to 25 phones per decision: for small teams, not this floor."""
P99_RATIO_TARGET = 2.0
DECISIONS_PER_S_TARGET = 2000.0
FLOOR_CALLS = 20_000
TICK_MS = 5
"""Simulated time per decision, so waits grow and relaxation steps come into play."""


@dataclass
class Figures:
    count: int
    seconds: float
    latencies_ns: list[int]

    @property
    def per_s(self) -> float:
        return self.count / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def floor(client: redis.Redis) -> Figures:
    trivial = client.register_script("return 1")
    trivial()
    latencies = []
    started = time.perf_counter()
    for _ in range(FLOOR_CALLS):
        t0 = time.perf_counter_ns()
        trivial()
        latencies.append(time.perf_counter_ns() - t0)
    return Figures(FLOOR_CALLS, time.perf_counter() - started, latencies)


def skill(i: int) -> str:
    return f"s{i % SKILLS:02d}"


def build(acd: AcdService, agents: int, rng: random.Random) -> dict[str, list[str]]:
    """The floor; returns each agent's queues."""
    for q in range(QUEUES):
        acd.put_queue(
            f"q{q:02d}",
            QueueConfig.model_validate(
                {
                    "strategy": STRATEGIES[q % len(STRATEGIES)],
                    "skills": {skill(q): 1 + q % 3},
                    "relax": [{"after_seconds": 20, "min_proficiency": 1}],
                    "prefer_novice": q % 5 == 0,
                    "wrapup_seconds": 0,
                    "priority": q % 4,
                }
            ),
        )
    membership: dict[str, list[str]] = {}
    for a in range(agents):
        queues = rng.sample(range(QUEUES), QUEUES_PER_AGENT)
        skills = {skill(q): rng.randint(1, 5) for q in queues}
        skills |= {skill(q * 7 + 3): rng.randint(1, 5) for q in queues[:1]}
        skills.setdefault(skill(rng.randrange(SKILLS)), rng.randint(1, 5))
        agent_id = f"agent{a:05d}"
        acd.put_agent(
            agent_id,
            AgentConfig(
                queues=[f"q{q:02d}" for q in queues],
                skills=skills,
                weight=rng.randint(1, 10),
            ),
        )
        acd.set_status(agent_id, "available", route=False)
        membership[agent_id] = [f"q{q:02d}" for q in queues]
    return membership


class Calls:
    def __init__(self, acd: AcdService, rng: random.Random) -> None:
        self.acd, self.rng, self.next = acd, rng, 0

    def join(self) -> None:
        q = self.rng.randrange(QUEUES)
        extra = {skill(q * 7 + 3): self.rng.randint(1, 2)} if self.rng.random() < 0.2 else {}
        self.acd.join(
            f"call{self.next:07d}",
            f"q{q:02d}",
            priority=self.rng.choice((0, 0, 0, 1, 2)),
            skills=extra,
            simple=self.rng.random() < 0.5,
            route=False,
        )
        self.next += 1


def scenario(
    client: redis.Redis, agents: int, decisions: int, seed: int
) -> tuple[Figures, int, float]:
    """Returns the decision figures, how many made an offer, and setup seconds."""
    rng = random.Random(seed)
    clock = ManualClock()
    namespace = f"bench-{agents}-{secrets.token_hex(4)}"
    acd = AcdService(client, namespace=namespace, clock=clock, rng=random.Random(seed))
    setup_started = time.perf_counter()
    try:
        membership = build(acd, agents, rng)
        calls = Calls(acd, rng)
        for _ in range(WAITING_CALLS):
            calls.join()
        setup = time.perf_counter() - setup_started
        free = set(membership)
        latencies: list[int] = []
        spent_ns = 0
        offered = 0
        made = 0
        while made < decisions + WARMUP_DECISIONS:
            batch = min(BATCH_MAX, max(1, len(free) // 2), decisions + WARMUP_DECISIONS - made)
            offers = []
            for _ in range(batch):
                agent_id = rng.choice(tuple(free))
                queue = rng.choice(membership[agent_id])
                clock.advance(ms=TICK_MS)
                t0 = time.perf_counter_ns()
                offer = acd.decide(queue)
                elapsed = time.perf_counter_ns() - t0
                if made >= WARMUP_DECISIONS:
                    latencies.append(elapsed)
                    spent_ns += elapsed
                    offered += offer is not None
                made += 1
                if offer is not None:
                    free.difference_update(offer.agents)
                    offers.append(offer)
                if not free:
                    break
            for offer in offers:  # untimed: keep the floor's size
                acd.answer(offer.call_id, offer.agents[0])
                acd.hangup(offer.call_id, route=False)
                free.update(offer.agents)
                calls.join()
        return Figures(len(latencies), spent_ns / 1e9, latencies), offered, setup
    finally:
        for key in client.scan_iter(match=f"kokan:acd:{{{namespace}}}:*", count=10_000):
            client.unlink(key)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=5000)
    parser.add_argument("--agents", default="100,1000,10000")
    args = parser.parse_args()
    sizes = [int(size) for size in args.agents.split(",")]

    work = Path(tempfile.mkdtemp(prefix="kokan-bench-acd-", dir="/tmp"))
    server: EmbeddedRedis | None = None
    url = os.environ.get("REDIS_URL")
    try:
        if not url:
            # a data folder whose socket path would be too long: EmbeddedRedis then
            # listens on a free loopback TCP port instead, as a production Redis does
            server = EmbeddedRedis(work / ("d" * MAX_UNIX_SOCKET_PATH))
            server.start()
            url = server.url
        client = connect(url)
        version = client.info("server")["redis_version"]
        print(f"Redis {version} at {url.split('@')[-1]}; one Python process, one connection")
        base = floor(client)
        print(
            f"{'EVALSHA return 1 (floor)':<28} {base.per_s:>8.0f} /s   "
            f"p50 {base.pct(0.5):.3f} ms   p99 {base.pct(0.99):.3f} ms"
        )
        results: dict[int, Figures] = {}
        for agents in sizes:
            figures, offered, setup = scenario(client, agents, args.decisions, seed=agents)
            results[agents] = figures
            print(
                f"{f'decide(), {agents} agents':<28} {figures.per_s:>8.0f} /s   "
                f"p50 {figures.pct(0.5):.3f} ms   p99 {figures.pct(0.99):.3f} ms   "
                f"({offered}/{figures.count} offered; x{figures.pct(0.5) / base.pct(0.5):.1f} "
                f"the floor's p50; setup {setup:.1f} s)"
            )
        print()
        met = True
        if 100 in results and 10_000 in results:
            ratio = results[10_000].pct(0.99) / results[100].pct(0.99)
            met &= ratio <= P99_RATIO_TARGET
            print(f"p99 at 10 000 agents / p99 at 100 agents: {ratio:.2f} (target <= 2)")
        slowest = min(figures.per_s for figures in results.values())
        met &= slowest >= DECISIONS_PER_S_TARGET
        print(f"slowest decisions/s: {slowest:.0f} (target >= {DECISIONS_PER_S_TARGET:.0f})")
        print("targets met" if met else "targets NOT met")
        client.close()
        return 0
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
