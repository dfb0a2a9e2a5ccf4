"""What a waiting caller is told about their wait, from the queue's own counters.

The figure is the one app_queue announces, made a little less naive: the calls ahead
of the caller are shared among the agents working the queue, and each round takes an
average handled call (talk plus wrap-up). With no call handled yet, or nobody working
the queue, there is nothing honest to say, so the estimate is None and only the
position is announced.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from acd.schemas import AgentStatus

if TYPE_CHECKING:  # for annotations only: estimates stay free of the service and config
    from acd.results import CallView
    from acd.services import AcdService
    from kokan.config import QueueSettings

WORKING = (
    AgentStatus.AVAILABLE,
    AgentStatus.OFFERED,
    AgentStatus.ON_CALL,
    AgentStatus.WRAP_UP,
)
"""Agents who will take a call from this line soon; on a break or offline they will not."""
ROUND_UP_TO_S = 60
"""Said in whole minutes: "about 3 minutes" is what callers can use."""
MAX_ESTIMATE_S = 2 * 3600
"""Beyond two hours the figure is noise; say no more than that."""


def expected_wait_s(
    position: int,
    stats: Mapping[str, int],
    agents_by_status: Mapping[str, int],
    wrapup_seconds: int,
) -> int | None:
    completed = stats.get("completed", 0)
    working = sum(agents_by_status.get(str(status), 0) for status in WORKING)
    if position < 1 or completed < 1 or working < 1:
        return None
    handle_s = stats.get("talk_ms", 0) / completed / 1000 + wrapup_seconds
    rounds = math.ceil(position / working)
    estimate = rounds * handle_s
    minutes = max(1, math.ceil(estimate / ROUND_UP_TO_S))
    return min(minutes * ROUND_UP_TO_S, MAX_ESTIMATE_S)


def announcement(
    acd: AcdService, call: CallView, settings: QueueSettings, due: Callable[[], bool]
) -> tuple[int, int | None] | None:
    """What a waiting caller is told now, whatever the transport: their position and the
    expected wait (None when the queue does not say it or there is no honest figure).
    None: nothing this time (not waiting, announcements off, or `due` says not yet;
    `due` is asked last, so a transport that marks the announcement made only marks it
    when one is said)."""
    if (
        call.state != "waiting"
        or not settings.announce_every_seconds
        or call.position is None
        or not due()
    ):
        return None
    wait_s = None
    if settings.announce_wait_time:
        view = acd.queue(call.queue)
        wait_s = expected_wait_s(
            call.position, view.stats, view.agents_by_status, settings.wrapup_seconds
        )
    return call.position, wait_s
