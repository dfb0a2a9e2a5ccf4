"""Bounds the routing scripts work within, each chosen so one script stays short.

A Lua script blocks the whole Redis while it runs, so every loop inside one has a
ceiling; these are handed to the scripts by the loader, under the same names.
"""

from __future__ import annotations

PROFICIENCY_MIN = 1
PROFICIENCY_MAX = 5
"""Skill levels 1-5, as Connect and TaskRouter examples use; each level has its own index."""

CALL_PRIORITY_MIN = -10_000
CALL_PRIORITY_MAX = 10_000
"""Wide enough for any scoring a flow does, narrow enough that priority and arrival
number fit together in one exact sorted-set score (see SEQ_SPAN)."""

SEQ_SPAN = 2**38
"""Arrival numbers below 2^38 (2.7e11 calls); (priority span) x 2^38 stays under 2^53,
so a place in line is an exact double."""

AUTO_POSITION_BASE = 1_000_000
"""Agents without an explicit `order` line up after every agent with one, in the order
they were added to the queue."""

DAY_SCORE_SPAN = 10**10
"""Day number x 10^10 + today's count (or talk ms, < 8.64e7): an agent whose count is
from an earlier day ranks as having none today, without a midnight job."""

CALL_SCAN_LIMIT = 100
"""Waiting calls one decision looks at when the head calls cannot be served (skills
nobody free has, a preferred agent still busy); a call deeper in line waits for the
next decision after those ahead are served, relax, or leave. Identical requirements are
remembered, so most of these cost a little Lua and no Redis read of their own."""
CALL_SCAN_HEAD = 4
"""Calls read in the first step: the head of the line usually decides."""
CALL_SCAN_CHUNK = 24
"""Calls read per later step (one ZRANGE and one HMGET of their routing lines)."""

WALK_CHUNK = 2
"""Candidates read per index per step; the first fitting agent is usually among them."""
WALK_LIMIT = 250
"""Candidates checked for a call's secondary skills before giving up on that call for
this decision; keeps the worst case bounded when a rare combination is asked for."""

RANDOM_TRIES = 64
"""Draws for random and weighted random before falling back to index order; with
weights 1-10 the chance of needing the fallback is under 0.2%."""

RING_ALL_MAX = 25
"""Ring-all is for small teams; beyond this many phones ringing it is a broadcast."""

OFFER_GRACE_MS = 5_000
"""An offer expires this long after the ring timeout: the dialing process reports the
no-answer itself first; the sweep only catches offers whose process died."""

SWEEP_BATCH = 200
"""Expired offers, wrap-ups and max waits handled per sweep script; the service loops."""

ROUTE_MAX_OFFERS = 50
"""Offers made by one routing script before it returns, so a burst of free agents does
not hold Redis for long; the service calls again while offers keep coming."""

WEIGHT_MAX = 10
"""Weighted random: an agent's weight 1-10 against the others in the queue."""

RECENT_AGENT_TTL_S = 7 * 86_400
"""How long "spoke to an agent recently" lasts: a follow-up within a week usually
continues the same matter."""

LUA_CONSTANTS = {
    "RECENT_AGENT_TTL_S": RECENT_AGENT_TTL_S,
    "PROFICIENCY_MAX": PROFICIENCY_MAX,
    "PRIORITY_MAX": CALL_PRIORITY_MAX,
    "SEQ_SPAN": SEQ_SPAN,
    "AUTO_POSITION_BASE": AUTO_POSITION_BASE,
    "DAY_SCORE_SPAN": DAY_SCORE_SPAN,
    "CALL_SCAN_LIMIT": CALL_SCAN_LIMIT,
    "CALL_SCAN_HEAD": CALL_SCAN_HEAD,
    "CALL_SCAN_CHUNK": CALL_SCAN_CHUNK,
    "WALK_CHUNK": WALK_CHUNK,
    "WALK_LIMIT": WALK_LIMIT,
    "RANDOM_TRIES": RANDOM_TRIES,
    "RING_ALL_MAX": RING_ALL_MAX,
    "OFFER_GRACE_MS": OFFER_GRACE_MS,
}
"""The names the Lua scripts know these numbers by."""
