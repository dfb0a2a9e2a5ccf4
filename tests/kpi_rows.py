"""Two days of a small center written straight into the ACD history tables, the survey
answers and the call records, with every KPI worked out by hand below (Asia/Tokyo,
T = 20 s, S = 5 s). The reports and staffing API tests read them back over HTTP.

Day 1 is 2026-03-02 and day 2 is 2026-03-03 in Tokyo; each starts 09:00 local (00:00 UTC).

    call  day queue   chan  agent  wait  result         talk+hold+wrap  customer  survey
    k1    1   sales   voice a      10    completed      100+20+30 = 150 +8190001  csat 5, nps 10, ces 6
    k2    1   sales   voice b      30    completed      200+0+40  = 240 +8190002  csat 3, nps 6,  ces 4
    k3    1   sales   voice -      40    abandoned                      +8190003
    k4    1   sales   voice -       2    short-abandon
    k5    2   support chat  a       4    completed      300+0+0   = 300 +8190001  csat 4, nps 8
    k6    2   support voice b      15    completed      90+0+30   = 120 -         csat 5, nps 9, ces "9"
    k7    2   support voice -     120    voicemail
    k8    2   sales   voice -       8    abandoned
    k0    one second before day 1 in Tokyo; k9 at the first instant after day 2: outside

Agent states (seconds from 09:00 local of their day):
    a, day 1: available 0-600, on-call 600-1100, wrap-up 1100-1200, break 1200-2000,
              available 2000-2300, offline from 2300 (still)
    b, day 2: available 0-300, on-call 300-1500, offline from 1500 (still)
"""

from __future__ import annotations

import datetime as dt

from acd.models import AcdAgentState, AcdCall
from kokan.db import Database
from tickets.call_tickets import SURVEY_SUFFIX
from tickets.models import Customer, Interaction

DAY1 = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC)
"""09:00 on 2026-03-02 in Tokyo."""
DAY2 = DAY1 + dt.timedelta(days=1)
PERIOD = "start=2026-03-02&end=2026-03-04&tz=Asia/Tokyo"
"""Both days, end exclusive."""


def _call(
    call_id: str,
    at: dt.datetime,
    queue: str,
    channel: str,
    wait: float,
    result: str,
    *,
    agent: str | None = None,
    talk: float = 0,
    hold: float = 0,
    wrap: float = 0,
    customer: str | None = None,
) -> AcdCall:
    return AcdCall(
        call_id=call_id,
        queue=queue,
        entry_queue=queue,
        channel=channel,
        kind="call",
        priority=0,
        customer=customer,
        joined_at=at,
        answered_at=at + dt.timedelta(seconds=wait) if agent else None,
        agent_id=agent,
        result=result,
        wait_seconds=wait,
        talk_seconds=talk,
        hold_seconds=hold,
        wrapup_seconds=wrap,
    )


def _after(day: dt.datetime, seconds: float) -> dt.datetime:
    return day + dt.timedelta(seconds=seconds)


CALLS = (
    ("k1", _after(DAY1, 0), "sales", "voice", 10, "completed", "a", 100, 20, 30, "+8190001"),
    ("k2", _after(DAY1, 60), "sales", "voice", 30, "completed", "b", 200, 0, 40, "+8190002"),
    ("k3", _after(DAY1, 120), "sales", "voice", 40, "abandoned", None, 0, 0, 0, "+8190003"),
    ("k4", _after(DAY1, 180), "sales", "voice", 2, "short-abandon", None, 0, 0, 0, None),
    ("k5", _after(DAY2, 0), "support", "chat", 4, "completed", "a", 300, 0, 0, "+8190001"),
    ("k6", _after(DAY2, 60), "support", "voice", 15, "completed", "b", 90, 0, 30, None),
    ("k7", _after(DAY2, 120), "support", "voice", 120, "voicemail", None, 0, 0, 0, None),
    ("k8", _after(DAY2, 180), "sales", "voice", 8, "abandoned", None, 0, 0, 0, None),
    # 23:59:59 on 2026-03-01 and 00:00:00 on 2026-03-04 in Tokyo: outside the period
    ("k0", _after(DAY1, -9 * 3600 - 1), "sales", "voice", 1, "completed", "a", 60, 0, 0, None),
    ("k9", _after(DAY2, 15 * 3600), "sales", "voice", 1, "completed", "b", 60, 0, 0, None),
)

STATES = (
    ("a", "available", DAY1, 0, 600),
    ("a", "on-call", DAY1, 600, 1100),
    ("a", "wrap-up", DAY1, 1100, 1200),
    ("a", "break", DAY1, 1200, 2000),
    ("a", "available", DAY1, 2000, 2300),
    ("a", "offline", DAY1, 2300, None),
    ("b", "available", DAY2, 0, 300),
    ("b", "on-call", DAY2, 300, 1500),
    ("b", "offline", DAY2, 1500, None),
)

SURVEYS = {
    "k1": {"csat": "5", "nps": "10", "ces": "6"},
    "k2": {"csat": "3", "nps": "6", "ces": "4"},
    "k5": {"csat": "4", "nps": "8"},
    "k6": {"csat": "5", "nps": "9", "ces": "9"},  # CES is 1-7: 9 is no answer
}


def store_center(database: Database) -> None:
    with database.unit_of_work() as session:
        for call_id, at, queue, channel, wait, result, agent, talk, hold, wrap, who in CALLS:
            session.add(
                _call(
                    call_id,
                    at,
                    queue,
                    channel,
                    wait,
                    result,
                    agent=agent,
                    talk=talk,
                    hold=hold,
                    wrap=wrap,
                    customer=who,
                )
            )
        for key, (agent, status, day, begin, until) in enumerate(STATES):
            session.add(
                AcdAgentState(
                    event_key=f"{key:031d}",
                    agent_id=agent,
                    status=status,
                    presence="",
                    reason="",
                    started_at=_after(day, begin),
                    ended_at=_after(day, until) if until is not None else None,
                )
            )
        customer = Customer(display_name="調査 花子")
        session.add(customer)
        session.flush()
        for call_id, answers in SURVEYS.items():
            session.add(
                Interaction(
                    customer_id=customer.id,
                    channel="survey",
                    direction="inbound",
                    provider="twilio",
                    provider_message_id=call_id + SURVEY_SUFFIX,
                    answers=answers,
                )
            )
