"""ACD routing decisions against a real Redis on 127.0.0.1, beside the floor of one
EVALSHA round trip of a trivial script, measured in the same run just before.

For 100, 1 000 and 10 000 agents: 50 queues (every strategy but ring-all, skills with
minimum levels, a relaxation step, some preferring novices), 20 skills, every agent in
3 queues with 3-4 skills, all available; 10 000 calls waiting, spread over the queues,
a fifth asking for a second skill, half marked simple. Two ways of deciding:

- decide(): one decision per round trip (`AcdService.decide(queue)`, a queue of a free
  agent): the routing script finds the queue's best waiting call for its best fitting
  free agent and reserves that agent; timed as a client sees it, and Redis's own time
  inside the script is printed beside it.
- route(): as the router runs (`AcdService.route()` from `tick()`): one script serves
  every queue in priority order and makes up to 50 decisions.

Between batches, untimed, the offered calls are answered and hung up and as many new
calls join, so the floor keeps its size.

    .venv/bin/python -m bench.acd [--decisions 5000] [--agents 100,1000,10000]
                                  [--no-persistence]

REDIS_URL (a TCP Redis) is used when set, in a namespace of its own removed afterwards;
otherwise the embedded redis-server (append-only file on, as `kokan serve` runs it) is
started on a loopback TCP port.

Targets (issue 4): decide() p99 at 10 000 agents within 2x the p99 at 100 agents, and at
least 2 000 decisions per second from one Python process.
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
from acd.results import Offer
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
ROUTE_BATCH = 50
"""Offers one router script makes at most (the service's ROUTE_MAX_OFFERS)."""
STRATEGIES = [s for s in Strategy if s is not Strategy.RING_ALL]
"""Ring-all rings up to 25 phones per decision: for small teams, not this floor."""
P99_RATIO_TARGET = 2.0
DECISIONS_PER_S_TARGET = 2000.0
FLOOR_CALLS = 10_000
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


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


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


def script_usec(client: redis.Redis) -> tuple[int, int]:
    """Redis's own count of EVALSHA calls and microseconds spent in them."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


@dataclass
class Scenario:
    agents: int
    floor: Figures
    single: Figures
    single_offered: int
    single_server_us: float
    """Mean time inside Redis per decide() script, from Redis's command statistics."""
    batched: Figures
    """latencies are per route() script; count is decisions (offers) made."""
    batched_calls: int
    setup_s: float


def recycle(acd: AcdService, calls: Calls, offers: list[Offer], free: set[str]) -> None:
    """Untimed: answer and hang up what was offered, and let as many new calls join."""
    for offer in offers:
        acd.answer(offer.call_id, offer.agents[0])
        acd.hangup(offer.call_id, route=False)
        free.update(offer.agents)
        calls.join()


def scenario(client: redis.Redis, agents: int, decisions: int, seed: int) -> Scenario:
    rng = random.Random(seed)  # noqa: S311 - the same floor every run, not a secret
    clock = ManualClock()
    namespace = f"bench-{agents}-{secrets.token_hex(4)}"
    acd = AcdService(client, namespace=namespace, clock=clock, rng=random.Random(seed))  # noqa: S311
    setup_started = time.perf_counter()
    try:
        membership = build(acd, agents, rng)
        calls = Calls(acd, rng)
        for _ in range(WAITING_CALLS):
            calls.join()
        setup = time.perf_counter() - setup_started
        base = floor(client)
        free = set(membership)

        # one decision per round trip: decide() on a queue of a free agent
        latencies: list[int] = []
        offered = made = 0
        server_calls = server_usec = 0
        while made < decisions + WARMUP_DECISIONS:
            offers: list[Offer] = []
            batch = min(BATCH_MAX, max(1, len(free) // 2))
            client.config_resetstat()
            for _ in range(batch):
                queue = rng.choice(membership[rng.choice(tuple(free))])
                clock.advance(ms=TICK_MS)
                t0 = time.perf_counter_ns()
                offer = acd.decide(queue)
                elapsed = time.perf_counter_ns() - t0
                if made >= WARMUP_DECISIONS:
                    latencies.append(elapsed)
                    offered += offer is not None
                made += 1
                if offer is not None:
                    free.difference_update(offer.agents)
                    offers.append(offer)
                if not free:
                    break
            if made > WARMUP_DECISIONS:
                calls_now, usec_now = script_usec(client)
                server_calls += calls_now
                server_usec += usec_now
            recycle(acd, calls, offers, free)
        single = Figures(len(latencies), sum(latencies) / 1e9, latencies)

        # as the router runs (tick): one script routes every queue, many decisions each
        route_latencies: list[int] = []
        routed = route_calls = 0
        while routed < decisions:
            clock.advance(ms=TICK_MS)
            t0 = time.perf_counter_ns()
            offers = list(acd.route(limit=min(ROUTE_BATCH, max(1, len(free) // 2))))
            route_latencies.append(time.perf_counter_ns() - t0)
            routed += len(offers)
            route_calls += 1
            for offer in offers:
                free.difference_update(offer.agents)
            recycle(acd, calls, offers, free)
        batched = Figures(routed, sum(route_latencies) / 1e9, route_latencies)
        server_us = server_usec / max(1, server_calls)
        return Scenario(agents, base, single, offered, server_us, batched, route_calls, setup)
    finally:
        for key in client.scan_iter(match=f"kokan:acd:{{{namespace}}}:*", count=10_000):
            client.unlink(key)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=5000)
    parser.add_argument("--agents", default="100,1000,10000")
    parser.add_argument(
        "--no-persistence",
        action="store_true",
        help="turn the embedded Redis's append-only file and snapshots off, to see their cost",
    )
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
        if args.no_persistence and server is not None:
            client.config_set("appendonly", "no")
            client.config_set("save", "")
        persistence = client.config_get("appendonly").get("appendonly", "?")
        version = client.info("server")["redis_version"]
        print(
            f"Redis {version} at {url.split('@')[-1]} (appendonly {persistence}); "
            "one Python process, one connection"
        )
        results: dict[int, Scenario] = {}
        for agents in sizes:
            result = scenario(client, agents, args.decisions, seed=agents)
            results[agents] = result
            base, single, batched = result.floor, result.single, result.batched
            print(f"{agents} agents (setup {result.setup_s:.1f} s)")
            print(
                f"  {'EVALSHA return 1 (floor)':<34} {base.per_s:>7.0f} /s   "
                f"p50 {base.pct(0.5):.3f} ms   p99 {base.pct(0.99):.3f} ms"
            )
            print(
                f"  {'decide(): one per round trip':<34} {single.per_s:>7.0f} /s   "
                f"p50 {single.pct(0.5):.3f} ms   p99 {single.pct(0.99):.3f} ms   "
                f"({result.single_offered}/{single.count} offered; p50 "
                f"x{single.pct(0.5) / base.pct(0.5):.1f} the floor; "
                f"{result.single_server_us:.0f} us inside Redis)"
            )
            print(
                f"  {'route(): router batches':<34} {batched.per_s:>7.0f} /s   "
                f"p50 {batched.pct(0.5):.3f} ms   p99 {batched.pct(0.99):.3f} ms per script, "
                f"{batched.count / result.batched_calls:.1f} decisions each"
            )
        print()
        if 100 in results and 10_000 in results:
            ratio = results[10_000].single.pct(0.99) / results[100].single.pct(0.99)
            print(
                f"decide() p99 at 10 000 agents / at 100 agents: {ratio:.2f} "
                f"(target <= {P99_RATIO_TARGET:.0f}): {verdict(ratio <= P99_RATIO_TARGET)}"
            )
        single_rate = min(r.single.per_s for r in results.values())
        batched_rate = min(r.batched.per_s for r in results.values())
        floor_rate = min(r.floor.per_s for r in results.values())
        print(
            f"slowest decisions/s, one per round trip: {single_rate:.0f} "
            f"(target >= {DECISIONS_PER_S_TARGET:.0f}): "
            f"{verdict(single_rate >= DECISIONS_PER_S_TARGET)} "
            f"(the floor itself: {floor_rate:.0f} round trips/s)"
        )
        print(
            f"slowest decisions/s, batched as the router runs: {batched_rate:.0f} "
            f"(target >= {DECISIONS_PER_S_TARGET:.0f}): "
            f"{verdict(batched_rate >= DECISIONS_PER_S_TARGET)}"
        )
        client.close()
        return 0
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
