"""What a waiting caller is told about their wait (acd.estimates)."""

from __future__ import annotations

import pytest

from acd.estimates import MAX_ESTIMATE_S, expected_wait_s

TWO_WORKING = {"available": 1, "on-call": 1, "break": 3, "offline": 2}


def test_calls_ahead_are_shared_among_the_agents_working_the_queue() -> None:
    stats = {"completed": 10, "talk_ms": 10 * 150_000}  # 2.5 min talk per call
    # position 3 with 2 agents: two rounds of (150 s talk + 30 s wrap-up) = 6 minutes
    assert expected_wait_s(3, stats, TWO_WORKING, wrapup_seconds=30) == 360
    assert expected_wait_s(1, stats, TWO_WORKING, wrapup_seconds=30) == 180


def test_short_waits_round_up_to_a_whole_minute_and_long_ones_are_capped() -> None:
    quick = {"completed": 4, "talk_ms": 4 * 5_000}
    assert expected_wait_s(1, quick, TWO_WORKING, wrapup_seconds=0) == 60
    slow = {"completed": 1, "talk_ms": 3_600_000}
    assert expected_wait_s(500, slow, TWO_WORKING, wrapup_seconds=0) == MAX_ESTIMATE_S


@pytest.mark.parametrize(
    ("position", "stats", "agents"),
    [
        (1, {}, TWO_WORKING),  # nothing handled yet: no honest figure
        (1, {"completed": 3, "talk_ms": 9_000}, {"break": 2, "offline": 1}),  # nobody working
        (0, {"completed": 3, "talk_ms": 9_000}, TWO_WORKING),  # not in line
    ],
)
def test_no_estimate_without_history_or_agents(
    position: int, stats: dict[str, int], agents: dict[str, int]
) -> None:
    assert expected_wait_s(position, stats, agents, wrapup_seconds=10) is None
