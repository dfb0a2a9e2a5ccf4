"""How many agents a queue needs: the Erlang C model every workforce tool starts from.

Calls arrive at random (Poisson) and wait in line; the model gives the chance a caller
waits at all, the service level (answered within T seconds) and the average speed of
answer for N agents, and so the fewest agents that meet a target. Erlang C ignores
abandons, so it errs on the safe side (more agents); shrinkage (breaks, training,
absence) then turns agents on the phones into agents to schedule.

The chance of waiting is computed through Erlang B's recursion, which stays exact in
floating point for hundreds of agents, where the textbook factorials overflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_AGENTS = 5_000
"""No single queue is staffed beyond this; the search stops rather than loop."""


class StaffingError(ValueError):
    """Inputs the model cannot use (no calls, no handle time, a target above 100 %)."""


@dataclass(frozen=True)
class Demand:
    calls: float
    """Calls expected in one interval."""
    interval_s: int
    aht_s: float
    """Average handle time: talk + hold + wrap-up."""

    def __post_init__(self) -> None:
        if self.calls < 0 or self.interval_s <= 0 or self.aht_s <= 0:
            raise StaffingError("calls must be >= 0, interval and handle time > 0")

    @property
    def erlangs(self) -> float:
        """Traffic intensity: how many agents would be busy all the time."""
        return self.calls * self.aht_s / self.interval_s


@dataclass(frozen=True)
class Outlook:
    agents: int
    probability_of_waiting: float
    service_level: float
    asa_s: float
    occupancy: float


def probability_of_waiting(agents: int, erlangs: float) -> float:
    """Erlang C: the chance a caller finds every agent busy (1 when N <= A)."""
    if agents <= erlangs:
        return 1.0
    blocking = 1.0  # Erlang B with no servers
    for k in range(1, agents + 1):
        blocking = erlangs * blocking / (k + erlangs * blocking)
    return agents * blocking / (agents - erlangs * (1 - blocking))


def outlook(demand: Demand, agents: int, answer_within_s: float) -> Outlook:
    """What N agents give: chance of waiting, service level in T seconds, ASA, occupancy."""
    if agents < 1:
        raise StaffingError("at least one agent")
    erlangs = demand.erlangs
    waiting = probability_of_waiting(agents, erlangs)
    if agents <= erlangs:  # the line grows without bound
        return Outlook(agents, 1.0, 0.0, math.inf, 1.0)
    spare = agents - erlangs
    level = 1 - waiting * math.exp(-spare * answer_within_s / demand.aht_s)
    return Outlook(
        agents=agents,
        probability_of_waiting=waiting,
        service_level=level,
        asa_s=waiting * demand.aht_s / spare,
        occupancy=erlangs / agents,
    )


@dataclass(frozen=True)
class Plan:
    on_phones: Outlook
    """The fewest agents taking calls that meet the targets, and what they give."""
    scheduled: int
    """Agents to put on the schedule once shrinkage is allowed for."""


def agents_needed(
    demand: Demand,
    target_service_level: float,
    answer_within_s: float,
    max_occupancy: float = 1.0,
    shrinkage: float = 0.0,
) -> Plan:
    """The fewest agents with service level >= target and occupancy <= the maximum."""
    if not 0 < target_service_level < 1:
        raise StaffingError("the service level target is a fraction between 0 and 1")
    if not 0 < max_occupancy <= 1 or not 0 <= shrinkage < 1:
        raise StaffingError("occupancy must be in (0, 1], shrinkage in [0, 1)")
    if answer_within_s < 0:
        raise StaffingError("the answer time cannot be negative")
    if demand.calls == 0:
        return Plan(Outlook(0, 0.0, 1.0, 0.0, 0.0), 0)
    agents = max(1, math.floor(demand.erlangs) + 1)
    while agents <= MAX_AGENTS:
        found = outlook(demand, agents, answer_within_s)
        if found.service_level >= target_service_level and found.occupancy <= max_occupancy:
            return Plan(found, math.ceil(agents / (1 - shrinkage)))
        agents += 1
    raise StaffingError(f"more than {MAX_AGENTS} agents would be needed")
