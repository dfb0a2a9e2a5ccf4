"""Contact-center KPIs: every number a report shows, computed here and nowhere else.

Two layers. The pure functions take plain rows (the dataclasses below) and return one
number each, with its formula in its docstring; the unit tests check each against a
hand-computed example. The loader (`load`, `report`, `staffing_inputs`) selects the rows
of a period from SQL: the ACD's history (acd.models, copied out of the ACD's stream by
acd.history), the call-detail records and the survey answers (tickets.models).

Conventions, the same for every KPI:
- A call belongs to the period, day, queue, agent and channel of its joining the
  queue: `joined_at` in [start, end), the queue where it was answered or left the ACD
  (after overflows), the agent who answered it.
- A ratio with nothing to divide by is None ("no data"), never 0: 0 % service level
  and "no calls" are different things on a wall board.
- Percentages are 0-100; times are seconds.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import fmean
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from acd.models import AcdAgentState, AcdCall
from acd.schemas import DEFAULT_SHORT_ABANDON_S, AgentStatus
from acd.staffing import Demand
from kokan.db import utcnow
from kokan.errors import InvalidInput
from tickets.call_tickets import SURVEY_SUFFIX
from tickets.models import Call, Channel, Direction, Interaction

DEFAULT_SERVICE_LEVEL_S = 20
"""T of the service level: the classic 80/20 target answers 80 % of calls within 20 s."""
SHORT_ABANDON_S = DEFAULT_SHORT_ABANDON_S
"""Callers gone within this many seconds mostly misdialled: counted apart, and left out
of the service level and the abandon rate (the ACD's own queue default)."""
FCR_WINDOW = dt.timedelta(days=7)
"""A call is resolved at first contact when the same customer does not come back
within this long."""
STAFFING_INTERVAL_S = 1800
"""Workforce plans are made per half hour, the usual Erlang C interval."""
IN_CLAUSE_CHUNK = 500
"""Customers per IN (...) list: far below every database's bind-parameter limit."""

CSAT_SCALE = range(1, 6)
CSAT_SATISFIED = range(4, 6)
"""CSAT is asked 1-5 (flows/survey.yaml); 4 and 5 are satisfied."""
NPS_SCALE = range(0, 11)
NPS_PROMOTERS = range(9, 11)
NPS_DETRACTORS = range(0, 7)
"""NPS is asked 0-10; 9-10 promote, 0-6 detract, 7-8 are passive."""
CES_SCALE = range(1, 8)
"""CES is asked 1-7, 7 = very easy (flows/survey.yaml): higher is better."""

ABANDON_RESULTS = frozenset({"abandoned", "short-abandon"})
"""acd_calls.result of a caller who hung up before an answer."""
HANDLED_RESULT = "completed"
VOICEMAIL_RESULT = "voicemail"
HANDLING_STATUSES = frozenset({AgentStatus.ON_CALL.value, AgentStatus.WRAP_UP.value})
"""An agent handling a contact: the same talk + wrap-up the handle time adds up."""
READY_STATUSES = frozenset({AgentStatus.AVAILABLE.value, AgentStatus.OFFERED.value})
"""Staffed and free (or ringing): the idle side of occupancy."""

SERVICE_LEVEL_FORMULA = (
    "Service level = calls answered within T s ÷ (calls answered + calls abandoned or "
    "sent to voicemail after waiting more than T s), as a percentage. Calls abandoned within the "
    "short-abandon time S are left out entirely; calls abandoned within T s are left "
    "out of both sides."
)
"""What the reports page shows next to the number (T and S are the report's own)."""

KPI_DEFINITIONS: Mapping[str, str] = {
    "offered": "Calls that entered a queue, short abandons included.",
    "answered": "Calls an agent answered.",
    "abandoned": "Callers who hung up before an answer after waiting S s or more.",
    "short_abandoned": "Callers who hung up before an answer within S s (mostly misdials).",
    "average_speed_of_answer_s": "Average wait from joining the queue to the answer, in seconds.",
    "average_handle_time_s": "Average talk + hold + wrap-up of answered calls that ended, in seconds.",
    "service_level_pct": "Calls answered within T s as a % (see the service level formula).",
    "abandon_rate_pct": "Abandoned ÷ (offered - short abandons), as a %.",
    "occupancy_pct": "Agents' on-call + wrap-up time ÷ (that + available and ringing time), as a %.",
    "first_contact_resolution_pct": "Answered calls whose customer made no other contact within "
    "the FCR window, as a % of answered calls of known customers.",
    "csat_pct": "Survey answers of 4 or 5 on the 1-5 scale, as a % of answers.",
    "nps": "% promoters (9-10) minus % detractors (0-6) of answers on the 0-10 scale.",
    "ces": "Average customer effort answer on 1-7, where 7 is very easy.",
    "surveys": "Calls with at least one survey answer.",
}
"""One line per KPI (keyed by the Kpis field) for the page and the API to state; the
functions below carry the full rule."""


class ReportPeriodInvalid(InvalidInput):
    error_id = "report-period-invalid"
    status = 400


class Dimension(StrEnum):
    """What a report is broken down by."""

    DAY = "day"
    QUEUE = "queue"
    AGENT = "agent"
    CHANNEL = "channel"


GroupKey = dt.date | str | None
"""A local date for DAY; a queue, agent or channel name; None for no agent (unanswered)."""


# ---- the rows ----


@dataclass(frozen=True)
class QueuedCall:
    """One call that entered a queue (a row of acd_calls)."""

    call_id: str
    queue: str
    channel: str
    joined_at: dt.datetime
    result: str | None = None
    """completed, abandoned, short-abandon, voicemail, cancelled; None while in the ACD."""
    answered_at: dt.datetime | None = None
    agent_id: str | None = None
    wait_seconds: float | None = None
    talk_seconds: float = 0.0
    hold_seconds: float = 0.0
    wrapup_seconds: float = 0.0
    customer: str | None = None


@dataclass(frozen=True)
class AgentInterval:
    agent_id: str
    status: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    """None: still the agent's status; it counts up to the end of what is measured."""


@dataclass(frozen=True)
class SurveyAnswers:
    """One call's survey; a question skipped (or answered out of range) is None."""

    call_id: str
    csat: int | None = None
    nps: int | None = None
    ces: int | None = None


@dataclass(frozen=True)
class Contact:
    """Any time a customer reached the center: a queued call, or a call record."""

    contact_id: str
    customer: str
    at: dt.datetime


@dataclass(frozen=True)
class Thresholds:
    service_level_s: float = DEFAULT_SERVICE_LEVEL_S
    short_abandon_s: float = SHORT_ABANDON_S
    fcr_window: dt.timedelta = FCR_WINDOW


@dataclass(frozen=True)
class Dataset:
    """Everything a report needs, already selected."""

    calls: Sequence[QueuedCall] = ()
    intervals: Sequence[AgentInterval] = ()
    surveys: Sequence[SurveyAnswers] = ()
    contacts: Sequence[Contact] = ()


@dataclass(frozen=True)
class Kpis:
    offered: int
    answered: int
    abandoned: int
    short_abandoned: int
    average_speed_of_answer_s: float | None
    average_handle_time_s: float | None
    service_level_pct: float | None
    abandon_rate_pct: float | None
    occupancy_pct: float | None
    first_contact_resolution_pct: float | None
    csat_pct: float | None
    nps: float | None
    ces: float | None
    surveys: int
    thresholds: Thresholds = field(default_factory=Thresholds)


# ---- one KPI each ----


def _ratio(part: float, whole: float) -> float | None:
    return None if whole == 0 else 100.0 * part / whole


def _is_abandon(call: QueuedCall) -> bool:
    return call.result in ABANDON_RESULTS and call.answered_at is None


def is_short_abandon(call: QueuedCall, short_abandon_s: float = SHORT_ABANDON_S) -> bool:
    """An abandon after waiting less than S seconds. S is the report's, not the queue's,
    so one report treats every queue alike (the ACD's own flag used the queue's)."""
    return _is_abandon(call) and (call.wait_seconds or 0.0) < short_abandon_s


def offered(calls: Iterable[QueuedCall]) -> int:
    """Offered = every call that entered a queue, short abandons included (they are
    shown apart by `short_abandoned`)."""
    return sum(1 for _call in calls)


def answered(calls: Iterable[QueuedCall]) -> int:
    """Answered = calls an agent answered."""
    return sum(1 for call in calls if call.answered_at is not None)


def abandoned(calls: Iterable[QueuedCall], short_abandon_s: float = SHORT_ABANDON_S) -> int:
    """Abandoned = callers who hung up before an answer after waiting S seconds or more."""
    return sum(
        1 for call in calls if _is_abandon(call) and not is_short_abandon(call, short_abandon_s)
    )


def short_abandoned(calls: Iterable[QueuedCall], short_abandon_s: float = SHORT_ABANDON_S) -> int:
    """Short abandons = callers who hung up before an answer within S seconds."""
    return sum(1 for call in calls if is_short_abandon(call, short_abandon_s))


def average_speed_of_answer(calls: Iterable[QueuedCall]) -> float | None:
    """ASA = Σ wait of answered calls ÷ answered calls (joining the queue to the
    answer, callbacks included from their first joining)."""
    waits = [call.wait_seconds or 0.0 for call in calls if call.answered_at is not None]
    return fmean(waits) if waits else None


def average_handle_time(calls: Iterable[QueuedCall]) -> float | None:
    """AHT = Σ (talk + hold + wrap-up) ÷ handled calls, over answered calls that ended
    (a call still connected has no handle time yet; a wrap-up still running counts 0)."""
    handled = [
        call.talk_seconds + call.hold_seconds + call.wrapup_seconds
        for call in calls
        if call.answered_at is not None and call.result == HANDLED_RESULT
    ]
    return fmean(handled) if handled else None


def service_level(
    calls: Iterable[QueuedCall],
    service_level_s: float = DEFAULT_SERVICE_LEVEL_S,
    short_abandon_s: float = SHORT_ABANDON_S,
) -> float | None:
    """SL % = answered within T ÷ (answered + abandoned or sent to voicemail after
    more than T) x 100 (SERVICE_LEVEL_FORMULA). Short abandons (within S) are left out;
    other abandons within T count neither way (the caller left before the target
    was missed); calls still waiting, and cancelled tasks, are not counted."""
    within = answered_count = late_unanswered = 0
    for call in calls:
        wait = call.wait_seconds or 0.0
        if call.answered_at is not None:
            answered_count += 1
            within += wait <= service_level_s
        elif is_short_abandon(call, short_abandon_s):
            continue
        elif (_is_abandon(call) or call.result == VOICEMAIL_RESULT) and wait > service_level_s:
            late_unanswered += 1
    return _ratio(within, answered_count + late_unanswered)


def abandon_rate(
    calls: Iterable[QueuedCall], short_abandon_s: float = SHORT_ABANDON_S
) -> float | None:
    """Abandon rate % = abandoned ÷ (offered - short abandons) x 100."""
    listed = list(calls)
    short = short_abandoned(listed, short_abandon_s)
    return _ratio(abandoned(listed, short_abandon_s), offered(listed) - short)


def _clipped_seconds(interval: AgentInterval, start: dt.datetime, end: dt.datetime) -> float:
    until = interval.ended_at if interval.ended_at is not None else end
    return max(0.0, (min(until, end) - max(interval.started_at, start)).total_seconds())


def occupancy(
    intervals: Iterable[AgentInterval], start: dt.datetime, end: dt.datetime
) -> float | None:
    """Occupancy % = handling time ÷ (handling time + ready time) x 100, over the part
    of each agent state inside [start, end). Handling: on-call + wrap-up; ready:
    available + offered (ringing). Breaks, not-ready and offline are not staffed time
    and count neither way."""
    handling = ready = 0.0
    for interval in intervals:
        seconds = _clipped_seconds(interval, start, end)
        if interval.status in HANDLING_STATUSES:
            handling += seconds
        elif interval.status in READY_STATUSES:
            ready += seconds
    return _ratio(handling, handling + ready)


def first_contact_resolution(
    calls: Iterable[QueuedCall],
    contacts: Iterable[Contact],
    window: dt.timedelta = FCR_WINDOW,
) -> float | None:
    """FCR % = answered calls whose customer made no other contact within the window
    after joining ÷ answered calls with a known customer x 100. Any later contact
    counts (another queue, another channel, a call that ended in the IVR); calls of
    unknown callers cannot be judged and are left out. Calls less than a window old are
    judged on what has happened so far."""
    by_customer: dict[str, list[Contact]] = defaultdict(list)
    for contact in contacts:
        by_customer[contact.customer].append(contact)
    judged = resolved = 0
    for call in calls:
        if call.answered_at is None or not call.customer:
            continue
        judged += 1
        came_back = any(
            contact.contact_id != call.call_id
            and call.joined_at < contact.at <= call.joined_at + window
            for contact in by_customer.get(call.customer, ())
        )
        resolved += not came_back
    return _ratio(resolved, judged)


def csat(surveys: Iterable[SurveyAnswers]) -> float | None:
    """CSAT % = answers of 4 or 5 ÷ answers (1-5) x 100."""
    scores = [s.csat for s in surveys if s.csat is not None]
    return _ratio(sum(score in CSAT_SATISFIED for score in scores), len(scores))


def nps(surveys: Iterable[SurveyAnswers]) -> float | None:
    """NPS = % promoters (9-10) - % detractors (0-6), of answers 0-10; from -100 to 100."""
    scores = [s.nps for s in surveys if s.nps is not None]
    if not scores:
        return None
    promoters = sum(score in NPS_PROMOTERS for score in scores)
    detractors = sum(score in NPS_DETRACTORS for score in scores)
    return 100.0 * (promoters - detractors) / len(scores)


def ces(surveys: Iterable[SurveyAnswers]) -> float | None:
    """CES = Σ answers ÷ answers, on 1-7 where 7 is very easy (higher is better)."""
    scores = [s.ces for s in surveys if s.ces is not None]
    return fmean(scores) if scores else None


def compute(
    data: Dataset,
    start: dt.datetime,
    end: dt.datetime,
    thresholds: Thresholds | None = None,
    with_occupancy: bool = True,
) -> Kpis:
    """Every KPI of one group. Surveys count for the calls in `data.calls` only;
    occupancy is None when the agent states do not belong to the group (a queue or a
    channel: an agent's time is not split between queues)."""
    limits = thresholds or Thresholds()
    calls = list(data.calls)
    ids = {call.call_id for call in calls}
    surveys = [s for s in data.surveys if s.call_id in ids]
    return Kpis(
        offered=offered(calls),
        answered=answered(calls),
        abandoned=abandoned(calls, limits.short_abandon_s),
        short_abandoned=short_abandoned(calls, limits.short_abandon_s),
        average_speed_of_answer_s=average_speed_of_answer(calls),
        average_handle_time_s=average_handle_time(calls),
        service_level_pct=service_level(calls, limits.service_level_s, limits.short_abandon_s),
        abandon_rate_pct=abandon_rate(calls, limits.short_abandon_s),
        occupancy_pct=occupancy(data.intervals, start, end) if with_occupancy else None,
        first_contact_resolution_pct=first_contact_resolution(
            calls, data.contacts, limits.fcr_window
        ),
        csat_pct=csat(surveys),
        nps=nps(surveys),
        ces=ces(surveys),
        surveys=sum(1 for s in surveys if (s.csat, s.nps, s.ces) != (None, None, None)),
        thresholds=limits,
    )


# ---- breakdowns ----

_Row = TypeVar("_Row")


def _local_days(start: dt.datetime, end: dt.datetime, zone: ZoneInfo) -> list[dt.date]:
    first = start.astimezone(zone).date()
    last = (end - dt.timedelta(microseconds=1)).astimezone(zone).date()
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def _day_bounds(day: dt.date, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """A local day as UTC instants (23 or 25 hours long on a DST change)."""
    begin = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    after = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    return begin.astimezone(dt.UTC), after.astimezone(dt.UTC)


def _grouped(rows: Iterable[_Row], key: Callable[[_Row], GroupKey]) -> dict[GroupKey, list[_Row]]:
    groups: dict[GroupKey, list[_Row]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return groups


class _Parts:
    """The survey answers and contacts of one group's calls, found through indexes built
    once per breakdown (a year by day must not scan every contact 365 times)."""

    def __init__(self, data: Dataset) -> None:
        self.surveys = _grouped(data.surveys, lambda s: s.call_id)
        self.contacts = _grouped(data.contacts, lambda c: c.customer)

    def of(self, calls: Sequence[QueuedCall], intervals: Sequence[AgentInterval]) -> Dataset:
        customers = {call.customer for call in calls if call.customer}
        return Dataset(
            calls,
            intervals,
            [s for call in calls for s in self.surveys.get(call.call_id, ())],
            [c for customer in customers for c in self.contacts.get(customer, ())],
        )


def _intervals_by_day(
    intervals: Iterable[AgentInterval], end: dt.datetime, zone: ZoneInfo
) -> dict[GroupKey, list[AgentInterval]]:
    """Each state under every local day it overlaps (most overlap one, some two)."""
    days: dict[GroupKey, list[AgentInterval]] = defaultdict(list)
    for interval in intervals:
        first = interval.started_at.astimezone(zone).date()
        until = interval.ended_at if interval.ended_at is not None else end
        last = max(first, (until - dt.timedelta(microseconds=1)).astimezone(zone).date())
        for offset in range((last - first).days + 1):
            days[first + dt.timedelta(days=offset)].append(interval)
    return days


def breakdown(
    data: Dataset,
    by: Dimension,
    start: dt.datetime,
    end: dt.datetime,
    zone: ZoneInfo,
    thresholds: Thresholds | None = None,
) -> dict[GroupKey, Kpis]:
    """The KPIs per local day (every day of the period, calls or not), per queue, per
    agent (None: calls nobody answered) or per channel, in key order."""
    _check_period(start, end)
    parts = _Parts(data)
    result: dict[GroupKey, Kpis] = {}
    if by is Dimension.DAY:
        calls_by_day = _grouped(data.calls, lambda c: c.joined_at.astimezone(zone).date())
        intervals_by_day = _intervals_by_day(data.intervals, end, zone)
        for day in _local_days(start, end, zone):
            begin, after = _day_bounds(day, zone)
            part = parts.of(calls_by_day.get(day, []), intervals_by_day.get(day, []))
            result[day] = compute(part, max(begin, start), min(after, end), thresholds)
        return result
    if by is Dimension.AGENT:
        calls_by = _grouped(data.calls, lambda c: c.agent_id)
        intervals_by = _grouped(data.intervals, lambda i: i.agent_id)
        keys: set[GroupKey] = {*calls_by, *intervals_by}
        for agent in sorted(keys, key=lambda k: (k is None, str(k))):
            part = parts.of(calls_by.get(agent, []), intervals_by.get(agent, []))
            result[agent] = compute(part, start, end, thresholds, with_occupancy=agent is not None)
        return result
    if by is Dimension.QUEUE:
        calls_by = _grouped(data.calls, lambda c: c.queue)
    else:
        calls_by = _grouped(data.calls, lambda c: c.channel)
    for name in sorted(calls_by, key=str):
        result[name] = compute(parts.of(calls_by[name], ()), start, end, thresholds, False)
    return result


# ---- from SQL ----


def _check_period(start: dt.datetime, end: dt.datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ReportPeriodInvalid("the period needs time zone aware start and end")
    if end <= start:
        raise ReportPeriodInvalid("the period must end after it starts")


def _score(answers: Mapping[str, Any] | None, name: str, scale: range) -> int | None:
    raw = (answers or {}).get(name)
    try:
        value = int(str(raw).strip())
    except ValueError:
        return None
    return value if value in scale else None


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for at in range(0, len(values), IN_CLAUSE_CHUNK):
        yield values[at : at + IN_CLAUSE_CHUNK]


def _queued_call(row: AcdCall) -> QueuedCall:
    return QueuedCall(
        call_id=row.call_id,
        queue=row.queue,
        channel=row.channel,
        joined_at=row.joined_at,
        result=row.result,
        answered_at=row.answered_at,
        agent_id=row.agent_id,
        wait_seconds=row.wait_seconds,
        talk_seconds=row.talk_seconds,
        hold_seconds=row.hold_seconds,
        wrapup_seconds=row.wrapup_seconds,
        customer=row.customer,
    )


def _call_filters(
    start: dt.datetime,
    end: dt.datetime,
    queue: str | None,
    agent: str | None,
    channel: str | None,
) -> list[ColumnElement[bool]]:
    filters = [AcdCall.joined_at >= start, AcdCall.joined_at < end]
    if queue is not None:
        filters.append(AcdCall.queue == queue)
    if agent is not None:
        filters.append(AcdCall.agent_id == agent)
    if channel is not None:
        filters.append(AcdCall.channel == channel)
    return filters


def load(
    session: Session,
    start: dt.datetime,
    end: dt.datetime,
    *,
    queue: str | None = None,
    agent: str | None = None,
    channel: str | None = None,
    window: dt.timedelta = FCR_WINDOW,
    now: dt.datetime | None = None,
) -> Dataset:
    """The rows of [start, end) that match the filters. Agent states are read for
    occupancy only without a queue or channel filter (an agent's time is not split
    between queues); a state still running counts up to `now`. Contacts reach `window`
    past the end, so the last calls of the period are judged on their following days."""
    _check_period(start, end)
    filters = _call_filters(start, end, queue, agent, channel)
    by_joining = (AcdCall.joined_at, AcdCall.call_id)
    calls = [
        _queued_call(row)
        for row in session.scalars(select(AcdCall).where(*filters).order_by(*by_joining))
    ]

    intervals: list[AgentInterval] = []
    if queue is None and channel is None:
        until = min(end, now or utcnow())
        query = select(AcdAgentState).where(
            AcdAgentState.started_at < end,
            or_(AcdAgentState.ended_at.is_(None), AcdAgentState.ended_at > start),
        )
        if agent is not None:
            query = query.where(AcdAgentState.agent_id == agent)
        for state in session.scalars(query.order_by(AcdAgentState.event_key)):
            ended = state.ended_at if state.ended_at is not None else until
            intervals.append(AgentInterval(state.agent_id, state.status, state.started_at, ended))

    survey_query = (
        select(AcdCall.call_id, Interaction.answers)
        .join(Interaction, Interaction.provider_message_id == AcdCall.call_id + SURVEY_SUFFIX)
        .where(Interaction.channel == Channel.SURVEY.value, *filters)
    )
    surveys = [
        SurveyAnswers(
            call_id=call_id,
            csat=_score(answers, "csat", CSAT_SCALE),
            nps=_score(answers, "nps", NPS_SCALE),
            ces=_score(answers, "ces", CES_SCALE),
        )
        for call_id, answers in session.execute(survey_query)
    ]

    customers = sorted({c.customer for c in calls if c.customer and c.answered_at is not None})
    contacts: list[Contact] = []
    horizon = end + window
    for chunk in _chunks(customers):
        queued = select(AcdCall.call_id, AcdCall.customer, AcdCall.joined_at).where(
            AcdCall.customer.in_(chunk), AcdCall.joined_at >= start, AcdCall.joined_at <= horizon
        )
        contacts += [Contact(i, who, at) for i, who, at in session.execute(queued) if who]
        recorded = select(Call.provider_call_id, Call.from_number, Call.arrived_at).where(
            Call.from_number.in_(chunk),
            Call.arrived_at >= start,
            Call.arrived_at <= horizon,
            Call.direction == Direction.INBOUND.value,
        )
        contacts += [Contact(i, who, at) for i, who, at in session.execute(recorded)]
    return Dataset(calls, intervals, surveys, contacts)


def report(
    session: Session,
    start: dt.datetime,
    end: dt.datetime,
    zone: ZoneInfo,
    *,
    by: Dimension | None = None,
    queue: str | None = None,
    agent: str | None = None,
    channel: str | None = None,
    thresholds: Thresholds | None = None,
    now: dt.datetime | None = None,
) -> dict[GroupKey, Kpis]:
    """The reports page in one call: the period's KPIs, filtered, broken down `by` a
    dimension (or one group keyed None when `by` is None)."""
    total, groups = report_with_total(
        session,
        start,
        end,
        zone,
        by=by,
        queue=queue,
        agent=agent,
        channel=channel,
        thresholds=thresholds,
        now=now,
    )
    return groups if by is not None else {None: total}


def report_with_total(
    session: Session,
    start: dt.datetime,
    end: dt.datetime,
    zone: ZoneInfo,
    *,
    by: Dimension | None = None,
    queue: str | None = None,
    agent: str | None = None,
    channel: str | None = None,
    thresholds: Thresholds | None = None,
    now: dt.datetime | None = None,
) -> tuple[Kpis, dict[GroupKey, Kpis]]:
    """The period's total and its breakdown `by` a dimension (empty when None) from one
    read of the rows: a table's total row must come from the same rows as its groups."""
    limits = thresholds or Thresholds()
    data = load(
        session,
        start,
        end,
        queue=queue,
        agent=agent,
        channel=channel,
        window=limits.fcr_window,
        now=now,
    )
    with_occupancy = queue is None and channel is None
    total = compute(data, start, end, limits, with_occupancy=with_occupancy)
    groups = breakdown(data, by, start, end, zone, limits) if by is not None else {}
    return total, groups


# ---- staffing (acd.staffing) pre-filled from what was measured ----


@dataclass(frozen=True)
class MeasuredDemand:
    """A period's measured volume and handle time, the Erlang C calculator's inputs."""

    calls: int
    """Calls offered, short abandons left out: they never needed an agent."""
    average_handle_time_s: float | None
    period_s: float

    def calls_per_interval(self, interval_s: int = STAFFING_INTERVAL_S) -> float:
        """The period's calls spread evenly over intervals of `interval_s`."""
        return self.calls * interval_s / self.period_s

    def per_interval(self, interval_s: int = STAFFING_INTERVAL_S) -> Demand:
        """The average interval of the period as acd.staffing's Demand (StaffingError
        when nothing was handled, so there is no handle time to plan with)."""
        aht = self.average_handle_time_s or 0.0
        return Demand(calls=self.calls_per_interval(interval_s), interval_s=interval_s, aht_s=aht)


def staffing_inputs(
    session: Session,
    start: dt.datetime,
    end: dt.datetime,
    *,
    queue: str | None = None,
    channel: str | None = None,
    thresholds: Thresholds | None = None,
) -> MeasuredDemand:
    """Offered calls and AHT of a queue (or all) over [start, end), for acd.staffing."""
    limits = thresholds or Thresholds()
    _check_period(start, end)
    filters = _call_filters(start, end, queue, None, channel)
    calls = [_queued_call(row) for row in session.scalars(select(AcdCall).where(*filters))]
    return MeasuredDemand(
        calls=offered(calls) - short_abandoned(calls, limits.short_abandon_s),
        average_handle_time_s=average_handle_time(calls),
        period_s=(end - start).total_seconds(),
    )
