"""The Erlang C staffing model (acd.staffing), checked against exact arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from acd.staffing import Demand, StaffingError, agents_needed, outlook, probability_of_waiting


def erlang_c_exact(agents: int, erlangs: Fraction) -> Fraction:
    """The textbook formula with exact fractions: sum of A^k/k! and the waiting term."""
    top = erlangs**agents / math.factorial(agents) * Fraction(agents) / (agents - erlangs)
    below = sum(erlangs**k / math.factorial(k) for k in range(agents))
    return top / (below + top)


@pytest.mark.parametrize(
    ("agents", "erlangs"), [(1, "0.5"), (2, "1.5"), (13, "10"), (28, "24"), (120, "110.25")]
)
def test_the_chance_of_waiting_matches_the_textbook_formula(agents: int, erlangs: str) -> None:
    exact = erlang_c_exact(agents, Fraction(erlangs))
    assert probability_of_waiting(agents, float(erlangs)) == pytest.approx(float(exact), rel=1e-9)


def test_a_classic_interval_100_calls_in_30_minutes_of_3_minutes_each() -> None:
    demand = Demand(calls=100, interval_s=1800, aht_s=180)
    assert demand.erlangs == 10
    plan = agents_needed(demand, target_service_level=0.8, answer_within_s=20)
    # the usual worked example: 13 agents answer 79.6 % within 20 s, 14 agents 88.8 %
    assert plan.on_phones.agents == 14
    assert outlook(demand, 13, 20).service_level == pytest.approx(0.7956, abs=1e-4)
    assert plan.on_phones.service_level == pytest.approx(0.8884, abs=1e-4)
    assert plan.on_phones.probability_of_waiting == pytest.approx(0.1741, abs=1e-4)
    assert plan.on_phones.asa_s == pytest.approx(7.84, abs=0.01)
    assert plan.on_phones.occupancy == pytest.approx(10 / 14)
    assert plan.scheduled == 14


def test_maximum_occupancy_and_shrinkage_add_agents() -> None:
    demand = Demand(calls=100, interval_s=1800, aht_s=180)
    capped = agents_needed(demand, 0.8, 20, max_occupancy=0.7)
    assert capped.on_phones.agents == 15  # 10/15 = 0.67 <= 0.7 < 10/14
    shrunk = agents_needed(demand, 0.8, 20, shrinkage=0.3)
    assert (shrunk.on_phones.agents, shrunk.scheduled) == (14, 20)  # 14 / 0.7


def test_too_few_agents_never_catch_up() -> None:
    never = outlook(Demand(calls=100, interval_s=1800, aht_s=180), 10, 20)
    assert (never.service_level, never.asa_s, never.probability_of_waiting) == (0.0, math.inf, 1.0)


def test_no_calls_need_no_agents() -> None:
    plan = agents_needed(Demand(calls=0, interval_s=900, aht_s=300), 0.8, 20)
    assert (plan.on_phones.agents, plan.scheduled) == (0, 0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Demand(calls=-1, interval_s=900, aht_s=300),
        lambda: Demand(calls=10, interval_s=0, aht_s=300),
        lambda: agents_needed(Demand(calls=10, interval_s=900, aht_s=300), 1.5, 20),
        lambda: agents_needed(Demand(calls=10, interval_s=900, aht_s=300), 0.8, 20, shrinkage=1),
        lambda: outlook(Demand(calls=10, interval_s=900, aht_s=300), 0, 20),
    ],
)
def test_unusable_inputs_are_refused(build: object) -> None:
    with pytest.raises(StaffingError):
        build()  # type: ignore[operator]
