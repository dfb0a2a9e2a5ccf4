"""KPI formulas against hand-computed examples (the arithmetic is in the comments), their
edge cases, and the loader on a real database."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.orm import Session

from acd.models import AcdAgentState, AcdCall
from acd.staffing import StaffingError, agents_needed
from admin import kpis
from admin.kpis import (
    AgentInterval,
    Contact,
    Dataset,
    Dimension,
    QueuedCall,
    SurveyAnswers,
)
from kokan.db import Database
from tickets.models import Call, Customer, Interaction

T0 = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC)
ONE_HOUR = dt.timedelta(hours=1)
HOUR = T0 + ONE_HOUR
TOKYO = ZoneInfo("Asia/Tokyo")


def s(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def queued(
    call_id: str,
    wait: float | None,
    result: str | None,
    *,
    answered: bool = False,
    talk: float = 0,
    hold: float = 0,
    wrap: float = 0,
    joined: float = 0,
    queue: str = "sales",
    channel: str = "voice",
    agent: str | None = None,
    customer: str | None = None,
) -> QueuedCall:
    joined_at = s(joined)
    return QueuedCall(
        call_id=call_id,
        queue=queue,
        channel=channel,
        joined_at=joined_at,
        result=result,
        answered_at=joined_at + dt.timedelta(seconds=wait or 0) if answered else None,
        agent_id=agent if answered else None,
        wait_seconds=wait,
        talk_seconds=talk,
        hold_seconds=hold,
        wrapup_seconds=wrap,
        customer=customer,
    )


# Nine calls in one queue, T = 20 s, S = 5 s:
#   c1 answered after 10 s, talk 100 + hold 0 + wrap 20 = 120 s handled
#   c2 answered after 30 s, talk 200 + hold 30 + wrap 10 = 240 s handled
#   c3 answered after 20 s (exactly T: within), talk 60 = 60 s handled
#   c4 abandoned after 40 s (after T: counts against)
#   c5 abandoned after 12 s (>= S, <= T: counts neither way)
#   c6 abandoned after 3 s (short: left out)
#   c7 sent to voicemail after 300 s (after T: counts against)
#   c8 still waiting (offered only)
#   c9 answered after 5 s, still connected (answered, in ASA and SL, not in AHT)
CALLS = [
    queued("c1", 10, "completed", answered=True, talk=100, wrap=20, agent="a", customer="+811"),
    queued(
        "c2", 30, "completed", answered=True, talk=200, hold=30, wrap=10, agent="a", customer="+812"
    ),
    queued("c3", 20, "completed", answered=True, talk=60, agent="b"),
    queued("c4", 40, "abandoned", customer="+814"),
    queued("c5", 12, "abandoned"),
    queued("c6", 3, "short-abandon"),
    queued("c7", 300, "voicemail"),
    queued("c8", None, None),
    queued("c9", 5, None, answered=True, agent="b", customer="+813"),
]


def test_volumes() -> None:
    assert kpis.offered(CALLS) == 9  # every call that entered the queue
    assert kpis.answered(CALLS) == 4  # c1 c2 c3 c9
    assert kpis.abandoned(CALLS) == 2  # c4 c5
    assert kpis.short_abandoned(CALLS) == 1  # c6
    # with S = 15 s, c5 (12 s) becomes a short abandon too
    assert kpis.abandoned(CALLS, short_abandon_s=15) == 1
    assert kpis.short_abandoned(CALLS, short_abandon_s=15) == 2


def test_average_speed_of_answer() -> None:
    # (10 + 30 + 20 + 5) / 4 answered = 65 / 4 = 16.25 s
    assert kpis.average_speed_of_answer(CALLS) == 16.25


def test_average_handle_time() -> None:
    # (120 + 240 + 60) / 3 handled = 420 / 3 = 140 s; c9 is still connected
    assert kpis.average_handle_time(CALLS) == 140.0


def test_service_level() -> None:
    # within 20 s: c1 (10), c3 (20), c9 (5) = 3
    # denominator: 4 answered + c4 (40) + c7 (300) = 6 -> 3 / 6 = 50 %
    assert kpis.service_level(CALLS, service_level_s=20, short_abandon_s=5) == 50.0
    # T = 10 s: within c1 (10), c9 (5) = 2; against c4, c5 (12 > 10), c7 -> 2 / (4 + 3)
    assert kpis.service_level(CALLS, service_level_s=10) == pytest.approx(200 / 7)
    # S = 15 s only takes c5 out of the T = 10 s case: 2 / (4 + 2) = 33.3 %
    assert kpis.service_level(CALLS, service_level_s=10, short_abandon_s=15) == pytest.approx(
        100 / 3
    )
    assert "within T s" in kpis.SERVICE_LEVEL_FORMULA
    assert "short-abandon time S" in kpis.SERVICE_LEVEL_FORMULA


def test_abandon_rate() -> None:
    # 2 abandoned / (9 offered - 1 short) = 25 %
    assert kpis.abandon_rate(CALLS) == 25.0
    # S = 15 s: 1 / (9 - 2) = 14.29 %
    assert kpis.abandon_rate(CALLS, short_abandon_s=15) == pytest.approx(100 / 7)


AGENT_A = [
    AgentInterval("a", "available", s(0), s(600)),  # ready 600
    AgentInterval("a", "offered", s(600), s(620)),  # ready 20
    AgentInterval("a", "on-call", s(620), s(1820)),  # handling 1200
    AgentInterval("a", "wrap-up", s(1820), s(1880)),  # handling 60
    AgentInterval("a", "break", s(1880), s(2480)),  # neither
    AgentInterval("a", "available", s(2480), None),  # ready up to the end: 3600 - 2480 = 1120
]
AGENT_B = [
    AgentInterval("b", "on-call", s(-600), s(300)),  # clipped to 0..300: handling 300
    AgentInterval("b", "offline", s(300), s(3600)),  # neither
]


def test_occupancy() -> None:
    # a: handling 1200 + 60 = 1260; ready 600 + 20 + 1120 = 1740 -> 1260 / 3000 = 42 %
    assert kpis.occupancy(AGENT_A, T0, HOUR) == pytest.approx(42.0)
    # with b: handling 1260 + 300 = 1560 over 1560 + 1740 = 3300 -> 47.27 %
    assert kpis.occupancy(AGENT_A + AGENT_B, T0, HOUR) == pytest.approx(100 * 1560 / 3300)
    # the first half hour only: handling 1200 of [620, 1800) = 1180; ready 620 -> 65.56 %
    assert kpis.occupancy(AGENT_A, T0, s(1800)) == pytest.approx(100 * 1180 / 1800)
    # b alone is never ready: 300 / 300 = 100 %; offline only: no staffed time at all
    assert kpis.occupancy(AGENT_B, T0, HOUR) == 100.0
    assert kpis.occupancy(AGENT_B[1:], T0, HOUR) is None


DAY = dt.timedelta(days=1)
CONTACTS = [
    Contact("c1", "+811", s(0)),  # the call itself: never its own repeat
    Contact("later-1", "+811", s(0) + 3 * DAY),  # +811 came back within 7 days
    Contact("later-2", "+812", s(0) + 8 * DAY),  # +812 came back after 8 days: too late
    Contact("c4", "+814", s(0)),  # an abandon is a contact, not a resolution
]


def test_first_contact_resolution() -> None:
    # judged: answered calls with a customer: c1 (+811), c2 (+812), c9 (+813); c3 unknown
    # resolved: c2 (back after 8 d) and c9 (never back) -> 2 / 3 = 66.67 %
    assert kpis.first_contact_resolution(CALLS, CONTACTS) == pytest.approx(200 / 3)
    # a contact exactly 7 days later is still a repeat: 1 / 3
    at_the_edge = [*CONTACTS, Contact("edge", "+813", s(0) + 7 * DAY)]
    assert kpis.first_contact_resolution(CALLS, at_the_edge) == pytest.approx(100 / 3)
    # a 10-day window catches +812 too: only c9 -> 1 / 3
    wider = kpis.first_contact_resolution(CALLS, CONTACTS, window=10 * DAY)
    assert wider == pytest.approx(100 / 3)
    # no answered call of a known customer: nothing to judge
    assert kpis.first_contact_resolution(CALLS[2:3], CONTACTS) is None


SURVEYS = [
    SurveyAnswers("c1", csat=5, nps=10, ces=7),
    SurveyAnswers("c2", csat=4, nps=9, ces=5),
    SurveyAnswers("c3", csat=3, nps=8, ces=3),
    SurveyAnswers("c4", csat=1, nps=6),
    SurveyAnswers("c5", nps=0),
]


def test_csat_nps_ces() -> None:
    # CSAT: 5, 4, 3, 1 -> two of 4-5 out of 4 answers = 50 %
    assert kpis.csat(SURVEYS) == 50.0
    # NPS: 10, 9, 8, 6, 0 -> promoters 2, detractors 2 of 5: 40 % - 40 % = 0
    assert kpis.nps(SURVEYS) == 0.0
    # NPS: 10, 9, 7, 3 -> (2 - 1) / 4 = +25
    others = [SurveyAnswers(str(i), nps=n) for i, n in enumerate([10, 9, 7, 3])]
    assert kpis.nps(others) == 25.0
    # all detractors: -100
    assert kpis.nps([SurveyAnswers("x", nps=2)]) == -100.0
    # CES: (7 + 5 + 3) / 3 = 5
    assert kpis.ces(SURVEYS) == 5.0


def test_a_survey_with_no_answers_gives_no_scores() -> None:
    empty = [SurveyAnswers("c1")]
    assert kpis.csat(empty) is None
    assert kpis.nps(empty) is None
    assert kpis.ces(empty) is None
    result = kpis.compute(Dataset(CALLS, (), empty, ()), T0, HOUR)
    assert result.surveys == 0
    assert (result.csat_pct, result.nps, result.ces) == (None, None, None)


def test_no_calls_gives_zero_counts_and_no_ratios() -> None:
    result = kpis.compute(Dataset(), T0, HOUR)
    assert (result.offered, result.answered, result.abandoned, result.short_abandoned) == (
        0,
        0,
        0,
        0,
    )
    assert result.average_speed_of_answer_s is None
    assert result.average_handle_time_s is None
    assert result.service_level_pct is None
    assert result.abandon_rate_pct is None
    assert result.occupancy_pct is None
    assert result.first_contact_resolution_pct is None
    assert (result.csat_pct, result.nps, result.ces, result.surveys) == (None, None, None, 0)


def test_only_short_abandons_gives_no_service_level() -> None:
    shorts = [queued(f"s{i}", wait, "short-abandon") for i, wait in enumerate([0.5, 2, 4.9])]
    result = kpis.compute(Dataset(shorts), T0, HOUR)
    assert (result.offered, result.short_abandoned, result.abandoned) == (3, 3, 0)
    # 0 answered, 0 abandoned after T: 0 / 0 -> None, not 0 %
    assert result.service_level_pct is None
    # 0 abandoned / (3 offered - 3 short) -> None
    assert result.abandon_rate_pct is None
    assert result.average_speed_of_answer_s is None


def test_compute_gathers_every_kpi_of_a_group() -> None:
    result = kpis.compute(Dataset(CALLS, AGENT_A, SURVEYS, CONTACTS), T0, HOUR)
    assert (result.offered, result.answered, result.abandoned, result.short_abandoned) == (
        9,
        4,
        2,
        1,
    )
    assert result.average_speed_of_answer_s == 16.25
    assert result.average_handle_time_s == 140.0
    assert result.service_level_pct == 50.0
    assert result.occupancy_pct == pytest.approx(42.0)
    assert result.first_contact_resolution_pct == pytest.approx(200 / 3)
    assert (result.csat_pct, result.nps, result.ces, result.surveys) == (50.0, 0.0, 5.0, 5)


def test_breakdown_by_local_day_agent_queue_and_channel() -> None:
    # 23:59 and 00:00 in Tokyo are two days; the period is 1-3 March, Tokyo time
    start = dt.datetime(2026, 3, 1, tzinfo=TOKYO)
    end = dt.datetime(2026, 3, 4, tzinfo=TOKYO)
    late = dt.datetime(2026, 3, 1, 14, 59, tzinfo=dt.UTC)  # 23:59 on 1 March in Tokyo
    midnight = dt.datetime(2026, 3, 1, 15, 0, tzinfo=dt.UTC)  # 00:00 on 2 March
    calls = [
        QueuedCall("d1", "sales", "voice", late, "completed", late, "a", 4.0, 50.0),
        QueuedCall("d2", "support", "chat", midnight, "completed", midnight, "b", 8.0, 70.0),
        QueuedCall("d3", "support", "voice", midnight, "abandoned", None, None, 30.0),
    ]
    # agent a: on a call 23:00-01:00 Tokyo (14:00-16:00 UTC), available 01:00-02:00
    intervals = [
        AgentInterval("a", "on-call", late - dt.timedelta(minutes=59), midnight + ONE_HOUR),
        AgentInterval("a", "available", midnight + ONE_HOUR, midnight + 2 * ONE_HOUR),
    ]
    data = Dataset(calls, intervals, [SurveyAnswers("d2", csat=5)], ())

    days = kpis.breakdown(data, Dimension.DAY, start, end, TOKYO)
    assert list(days) == [dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)]
    first, second, third = days.values()
    assert (first.offered, second.offered, third.offered) == (1, 2, 0)
    assert first.average_handle_time_s == 50.0
    # 2 March: d2 answered in 8 s, d3 abandoned after 30 s -> SL 1 / 2
    assert second.service_level_pct == 50.0
    assert second.csat_pct == 100.0
    # 1 March holds only a's first hour on the call: 100 %; 2 March: 1 h on call, 1 h
    # available -> 50 %; 3 March: no staffed time
    assert first.occupancy_pct == 100.0
    assert second.occupancy_pct == 50.0
    assert third.occupancy_pct is None

    agents = kpis.breakdown(data, Dimension.AGENT, start, end, TOKYO)
    assert list(agents) == ["a", "b", None]
    assert agents["a"].occupancy_pct == pytest.approx(200 / 3)  # 2 h on call, 1 h available
    assert agents["b"].occupancy_pct is None  # no states recorded for b
    assert agents[None].offered == 1  # nobody answered d3
    assert agents[None].occupancy_pct is None

    queues = kpis.breakdown(data, Dimension.QUEUE, start, end, TOKYO)
    assert list(queues) == ["sales", "support"]
    assert queues["support"].abandoned == 1
    assert queues["support"].occupancy_pct is None  # agents' time is not split by queue

    channels = kpis.breakdown(data, Dimension.CHANNEL, start, end, TOKYO)
    assert {name: k.offered for name, k in channels.items()} == {"chat": 1, "voice": 2}


def test_a_period_must_be_aware_and_forward() -> None:
    with pytest.raises(kpis.ReportPeriodInvalid) as raised:
        kpis.breakdown(Dataset(), Dimension.DAY, HOUR, T0, TOKYO)
    assert raised.value.error_id == "report-period-invalid"
    assert raised.value.status == 400
    with pytest.raises(kpis.ReportPeriodInvalid):
        kpis.breakdown(Dataset(), Dimension.DAY, T0.replace(tzinfo=None), HOUR, TOKYO)


# ---- from SQL ----


def store(session: Session, call: QueuedCall, **extra: object) -> None:
    session.add(
        AcdCall(
            call_id=call.call_id,
            queue=call.queue,
            entry_queue=call.queue,
            channel=call.channel,
            kind="call",
            priority=0,
            customer=call.customer,
            joined_at=call.joined_at,
            answered_at=call.answered_at,
            agent_id=call.agent_id,
            result=call.result,
            wait_seconds=call.wait_seconds,
            talk_seconds=call.talk_seconds,
            hold_seconds=call.hold_seconds,
            wrapup_seconds=call.wrapup_seconds,
            **extra,
        )
    )


def test_report_from_the_database(database: Database) -> None:
    with database.unit_of_work() as session:
        for call in CALLS:
            store(session, call)
        # a call of another queue and one outside the period are not selected
        store(session, queued("other", 1, "completed", answered=True, queue="billing", agent="b"))
        store(session, queued("before", 1, "completed", answered=True, joined=-1))
        for key, interval in enumerate(AGENT_A):
            session.add(
                AcdAgentState(
                    event_key=f"{key:031d}",
                    agent_id=interval.agent_id,
                    status=interval.status,
                    presence="",
                    reason="",
                    started_at=interval.started_at,
                    ended_at=interval.ended_at,
                )
            )
        customer = Customer()
        session.add(customer)
        session.flush()
        for survey in SURVEYS:
            answers = {"csat": survey.csat, "nps": survey.nps, "ces": survey.ces}
            session.add(
                Interaction(
                    customer_id=customer.id,
                    channel="survey",
                    direction="inbound",
                    provider="twilio",
                    provider_message_id=survey.call_id + ":survey",
                    answers={k: str(v) for k, v in answers.items() if v is not None},
                )
            )
        session.add(  # a garbled answer is no answer
            Interaction(
                customer_id=customer.id,
                channel="survey",
                direction="inbound",
                provider="twilio",
                provider_message_id="c9:survey",
                answers={"csat": "9", "nps": "x"},
            )
        )
        # +811 calls again on day 3 (a call record only: it ended in the IVR)
        session.add(
            Call(
                provider="twilio",
                provider_call_id="later-1",
                from_number="+811",
                to_number="+81300000000",
                arrived_at=T0 + 3 * DAY,
            )
        )
        # c1 has its own call record too: never its own repeat
        session.add(
            Call(
                provider="twilio",
                provider_call_id="c1",
                from_number="+811",
                to_number="+81300000000",
                arrived_at=T0 - dt.timedelta(seconds=30),
            )
        )

    with database.unit_of_work() as session:
        (result,) = kpis.report(session, T0, HOUR, TOKYO, queue="sales").values()
        assert (result.offered, result.answered, result.abandoned, result.short_abandoned) == (
            9,
            4,
            2,
            1,
        )
        assert result.average_speed_of_answer_s == 16.25
        assert result.average_handle_time_s == 140.0
        assert result.service_level_pct == 50.0
        assert result.occupancy_pct is None  # a queue filter: agents' time is not split
        # c1 came back (a call record on day 3); c2 and c9 did not -> 2 / 3
        assert result.first_contact_resolution_pct == pytest.approx(200 / 3)
        assert (result.csat_pct, result.nps, result.ces) == (50.0, 0.0, 5.0)
        assert result.surveys == 5  # c9's garbled answers count as none

        everything = kpis.report(session, T0, HOUR, TOKYO, now=HOUR)[None]
        assert everything.offered == 10  # the billing call too
        # the open "available" state counts up to `now`: 42 % as computed above
        assert everything.occupancy_pct == pytest.approx(42.0)

        by_agent = kpis.report(session, T0, HOUR, TOKYO, by=Dimension.AGENT, now=HOUR)
        assert {k: v.answered for k, v in by_agent.items()} == {"a": 2, "b": 3, None: 0}
        assert by_agent["a"].average_handle_time_s == 180.0  # (120 + 240) / 2

        only_b = kpis.report(session, T0, HOUR, TOKYO, agent="b")[None]
        assert only_b.answered == 3  # c3, c9 and billing's call

        voice_days = kpis.report(session, T0, HOUR, TOKYO, by=Dimension.DAY, channel="voice")
        assert list(voice_days) == [dt.date(2026, 3, 2)]  # 09:00-10:00 in Tokyo

        measured = kpis.staffing_inputs(session, T0, HOUR, queue="sales")
    # 9 offered - 1 short abandon = 8 calls in 3600 s, AHT 140 s
    assert (measured.calls, measured.average_handle_time_s, measured.period_s) == (8, 140.0, 3600)
    demand = measured.per_interval()
    # per half hour: 8 x 1800 / 3600 = 4 calls; 4 x 140 / 1800 = 0.311 erlangs
    assert (demand.calls, demand.interval_s, demand.aht_s) == (4.0, 1800, 140.0)
    assert demand.erlangs == pytest.approx(0.3111, abs=1e-4)
    plan = agents_needed(demand, target_service_level=0.8, answer_within_s=20)
    assert plan.on_phones.agents >= 1

    with database.unit_of_work() as session:
        quiet = kpis.staffing_inputs(session, HOUR, HOUR + ONE_HOUR)
    assert (quiet.calls, quiet.average_handle_time_s) == (0, None)
    with pytest.raises(StaffingError):
        quiet.per_interval()  # nothing handled: no handle time to plan with
