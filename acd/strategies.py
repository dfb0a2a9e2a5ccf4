"""The routing strategies, and what each one orders the candidate index by.

A queue's strategy decides the score its free agents carry in the queue's candidate
index (`acd.keys.AVAIL`), so "the best agent" is the lowest score that fits the call,
read in O(log n) without looking at the other agents. The picking itself happens inside
the routing script (`acd/scripts/lib.lua`: `pick`), next to the reservation.
"""

from __future__ import annotations

from enum import StrEnum


class Strategy(StrEnum):
    LONGEST_IDLE = "longest_idle"
    """The agent free the longest since their last call (or wrap-up, or coming back from
    a break) — Asterisk's `leastrecent`, TaskRouter's and Connect's default."""
    FEWEST_CALLS = "fewest_calls"
    """The agent who answered the fewest calls today (Asterisk `fewestcalls`)."""
    LEAST_TALK_TIME = "least_talk_time"
    """The agent with the least talk time today (mod_callcenter
    `agent-with-least-talk-time`)."""
    ROUND_ROBIN = "round_robin"
    """The next agent after the one offered last, in queue order (Asterisk `rrmemory`)."""
    FIXED_ORDER = "fixed_order"
    """The first free agent in queue order, top-down every time (Asterisk `linear`)."""
    RANDOM = "random"
    """Any fitting agent, each equally likely."""
    WEIGHTED_RANDOM = "weighted_random"
    """Any fitting agent, with a chance proportional to the agent's weight (1-10)."""
    RING_ALL = "ring_all"
    """Every fitting free agent at once (up to `RING_ALL_MAX`); the first to answer
    takes the call and the others are released."""


DEFAULT_STRATEGY = Strategy.LONGEST_IDLE
"""The fairest default: work goes to whoever has waited longest for it."""

SCORED_BY_POSITION = frozenset(
    {
        Strategy.ROUND_ROBIN,
        Strategy.FIXED_ORDER,
        Strategy.RANDOM,
        Strategy.WEIGHTED_RANDOM,
        Strategy.RING_ALL,
    }
)
"""Strategies whose index is in queue order (an agent's `order`, then when they were
added); the others are scored by idle-since, calls today or talk time today."""
