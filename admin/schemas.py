"""Request shapes of the reports and staffing API, and the JSON and CSV it answers with.

Query strings are parsed by pydantic like the JSON bodies are, so a report's period,
thresholds and filters are checked in one place; each kind of mistake has its own
error_id so the page can point at the field that is wrong.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from acd.schemas import NAME_PATTERN
from acd.schemas import Channel as AcdChannel
from acd.staffing import Plan
from admin import kpis
from admin.kpis import Dimension, GroupKey, Kpis, MeasuredDemand
from ivr.hours import UnknownTimeZone, zone
from kokan.config import Settings
from kokan.errors import InvalidInput

MAX_REPORT_DAYS = 366
"""A year, leap day included: enough for a year-over-year page while one request still
reads a bounded number of rows."""
EARLIEST_REPORT_DATE = dt.date(2000, 1, 1)
LATEST_REPORT_DATE = dt.date(2999, 12, 31)
"""Nothing Kokan recorded lies outside these; they keep time zone arithmetic far from
datetime's own limits (year 1 in Tokyo has no UTC instant)."""
MIN_SERVICE_LEVEL_S = 1
MAX_SERVICE_LEVEL_S = 3600
"""T is a target for answering a caller who waits: an hour is no longer a service level."""
MAX_SHORT_ABANDON_S = 600
"""The same bound the ACD's queue config puts on its own short-abandon time."""
DEFAULT_INTERVAL_MINUTES = kpis.STAFFING_INTERVAL_S // 60
"""Half an hour: the usual Erlang C planning interval (kpis.STAFFING_INTERVAL_S)."""
MAX_INTERVAL_MINUTES = 24 * 60
"""A day: Erlang C assumes calls arrive evenly within an interval; longer is meaningless."""
MAX_CALLS_PER_INTERVAL = 100_000
"""Far above any one queue's half hour; a bigger figure is a typo (and needs more than
acd.staffing.MAX_AGENTS anyway)."""
MAX_HANDLE_TIME_S = 4 * 3600
"""Four hours of talk, hold and wrap-up for one call is a stuck record, not an average."""
MAX_ANSWER_TIME_S = 3600
"""The same bound as the reports' T."""
DEFAULT_MAX_OCCUPANCY_PCT = 100.0
"""No cap unless asked: the plain Erlang C answer."""
DEFAULT_SHRINKAGE_PCT = 0.0
"""Nobody away unless asked: agents scheduled = agents on the phones."""
CSV_DECIMALS = 2
"""Spreadsheets show the figures as the page does; the JSON keeps full precision."""
CSV_TOTAL_LABEL = "(total)"
CSV_NO_AGENT_LABEL = "(no agent)"
"""Parentheses never occur in queue or agent names (acd.schemas.NAME_PATTERN), dates or
channels, so these labels cannot be mistaken for a group."""
DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
"""Only the extended form: Python also reads 20260302, which a person rarely means."""

M = TypeVar("M", bound=BaseModel)


class ReportPeriodInvalid(kpis.ReportPeriodInvalid):
    """Dates that are not YYYY-MM-DD, a period that ends before it starts, or too long."""


class ReportTimeZoneUnknown(InvalidInput):
    error_id = "report-timezone-unknown"


class ReportDimensionUnknown(InvalidInput):
    error_id = "report-dimension-unknown"


class ReportThresholdInvalid(InvalidInput):
    error_id = "report-threshold-invalid"


class ReportFilterInvalid(InvalidInput):
    error_id = "report-filter-invalid"


class ReportFormatUnknown(InvalidInput):
    error_id = "report-format-unknown"


class UnknownParameter(InvalidInput):
    error_id = "unknown-parameter"


class RepeatedParameter(InvalidInput):
    error_id = "parameter-repeated"


class StaffingInputInvalid(InvalidInput):
    error_id = "staffing-input-invalid"


class StaffingInfeasible(InvalidInput):
    """The model has no answer for these inputs (more agents than it searches)."""

    error_id = "staffing-infeasible"


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"


_ERRORS_BY_FIELD: Mapping[str, type[InvalidInput]] = {
    "start": ReportPeriodInvalid,
    "end": ReportPeriodInvalid,
    "tz": ReportTimeZoneUnknown,
    "by": ReportDimensionUnknown,
    "sl_seconds": ReportThresholdInvalid,
    "short_abandon_seconds": ReportThresholdInvalid,
    "queue": ReportFilterInvalid,
    "agent": ReportFilterInvalid,
    "channel": ReportFilterInvalid,
    "format": ReportFormatUnknown,
    "interval_minutes": StaffingInputInvalid,
}


def parse(model: type[M], data: Any, default_error: type[InvalidInput] = InvalidInput) -> M:
    """Validate `data` into `model`; the first mistake becomes the error its field names."""
    if not isinstance(data, dict):
        raise default_error("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        if first["type"] == "extra_forbidden":
            raise UnknownParameter(f"{where}: unknown parameter") from None
        field = str(first["loc"][0]) if first["loc"] else ""
        message = first["msg"].removeprefix("Value error, ")
        raise _ERRORS_BY_FIELD.get(field, default_error)(f"{where}: {message}") from None


# ---- query strings ----


def query_values(args: Mapping[str, list[str]]) -> dict[str, str]:
    """A query string as one value per name. An empty value is no value, as a page form
    sends its unset filters (`queue=&agent=`); a name given twice is refused rather than
    one of its values silently picked."""
    values: dict[str, str] = {}
    for name, given in args.items():
        present = [value for value in given if value != ""]
        if len(present) > 1:
            raise RepeatedParameter(f"{name}: give it once")
        if present:
            values[name] = present[0]
    return values


class PeriodQuery(BaseModel):
    """Local days [start, end) in a time zone; `end` is the first day not included."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: dt.date
    end: dt.date
    tz: str | None = Field(default=None, description="IANA name; default: the center's zone")
    queue: str | None = Field(default=None, pattern=NAME_PATTERN)
    channel: AcdChannel | None = None

    @field_validator("start", "end", mode="before")
    @classmethod
    def _iso_day(cls, value: Any) -> Any:
        if not isinstance(value, str) or not DATE_PATTERN.fullmatch(value):
            raise ValueError("must be a date written YYYY-MM-DD")
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value} is not a date of the calendar") from None
        if not EARLIEST_REPORT_DATE <= day <= LATEST_REPORT_DATE:
            raise ValueError(f"must lie between {EARLIEST_REPORT_DATE} and {LATEST_REPORT_DATE}")
        return day

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zone(value)
            except UnknownTimeZone as exc:
                raise ValueError(str(exc)) from None
        return value


class ReportQuery(PeriodQuery):
    by: Dimension | None = None
    agent: str | None = Field(default=None, pattern=NAME_PATTERN)
    sl_seconds: int = Field(
        default=kpis.DEFAULT_SERVICE_LEVEL_S, ge=MIN_SERVICE_LEVEL_S, le=MAX_SERVICE_LEVEL_S
    )
    short_abandon_seconds: int = Field(default=kpis.SHORT_ABANDON_S, ge=0, le=MAX_SHORT_ABANDON_S)
    format: Format | None = None


class MeasuredQuery(PeriodQuery):
    interval_minutes: int = Field(default=DEFAULT_INTERVAL_MINUTES, ge=1, le=MAX_INTERVAL_MINUTES)
    short_abandon_seconds: int = Field(default=kpis.SHORT_ABANDON_S, ge=0, le=MAX_SHORT_ABANDON_S)


@dataclasses.dataclass(frozen=True)
class Period:
    """A query's days as the UTC instants the KPI module selects by."""

    first_day: dt.date
    end_day: dt.date
    zone: ZoneInfo
    start: dt.datetime
    end: dt.datetime

    @property
    def last_day(self) -> dt.date:
        return self.end_day - dt.timedelta(days=1)

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.first_day.isoformat(),
            "end": self.end_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "days": (self.end_day - self.first_day).days,
            "time_zone": self.zone.key,
            "start_utc": self.start.isoformat(),
            "end_utc": self.end.isoformat(),
        }


def center_zone(config: Settings) -> str:
    """A report's default time zone: the center's local clock, the one its proactive
    messages already follow (config `tickets.proactive.timezone`)."""
    return config.tickets.proactive.timezone


def period_of(query: PeriodQuery, default_zone: str) -> Period:
    """The period's checks that span two fields, then its instants (a local midnight may be
    23 or 25 hours from the next on a DST change: the zone decides)."""
    if query.end <= query.start:
        raise ReportPeriodInvalid("end must be after start (end is the first day not included)")
    days = (query.end - query.start).days
    if days > MAX_REPORT_DAYS:
        raise ReportPeriodInvalid(f"the period is {days} days; at most {MAX_REPORT_DAYS}")
    try:
        local = zone(query.tz or default_zone)
    except UnknownTimeZone as exc:
        raise ReportTimeZoneUnknown(str(exc)) from None
    start = dt.datetime.combine(query.start, dt.time(), tzinfo=local).astimezone(dt.UTC)
    end = dt.datetime.combine(query.end, dt.time(), tzinfo=local).astimezone(dt.UTC)
    return Period(query.start, query.end, local, start, end)


# ---- report answers ----

KPI_FIELDS = tuple(f.name for f in dataclasses.fields(Kpis) if f.name != "thresholds")
"""The KPI columns in the Kpis dataclass's order: the JSON keys and the CSV header."""


def kpis_json(values: Kpis) -> dict[str, Any]:
    return {name: getattr(values, name) for name in KPI_FIELDS}


def group_json(key: GroupKey) -> str | None:
    return key.isoformat() if isinstance(key, dt.date) else key


def report_json(
    query: ReportQuery, period: Period, total: Kpis, groups: Mapping[GroupKey, Kpis]
) -> dict[str, Any]:
    return {
        "period": period.to_json(),
        "by": query.by.value if query.by is not None else None,
        "filters": {
            "queue": query.queue,
            "agent": query.agent,
            "channel": query.channel.value if query.channel is not None else None,
        },
        "thresholds": {
            "service_level_seconds": total.thresholds.service_level_s,
            "short_abandon_seconds": total.thresholds.short_abandon_s,
            "fcr_window_days": total.thresholds.fcr_window.days,
        },
        "service_level_formula": kpis.SERVICE_LEVEL_FORMULA,
        "definitions": dict(kpis.KPI_DEFINITIONS),
        "total": kpis_json(total),
        "rows": [{"group": group_json(key), **kpis_json(row)} for key, row in groups.items()],
    }


def _csv_cell(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, CSV_DECIMALS)
    return "" if value is None else value


def report_csv(query: ReportQuery, total: Kpis, groups: Mapping[GroupKey, Kpis]) -> bytes:
    """The groups, then the total, one row each; UTF-8 with a byte-order mark, which is what
    makes Excel read the file as UTF-8 rather than Shift_JIS. No cell can start a
    spreadsheet formula: names begin with a letter or digit (NAME_PATTERN), the rest are
    dates, numbers and our own labels."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([query.by.value if query.by is not None else "group", *KPI_FIELDS])
    for key, row in groups.items():
        label = group_json(key)
        values = kpis_json(row)
        writer.writerow(
            [CSV_NO_AGENT_LABEL if label is None else label]
            + [_csv_cell(values[name]) for name in KPI_FIELDS]
        )
    values = kpis_json(total)
    writer.writerow([CSV_TOTAL_LABEL] + [_csv_cell(values[name]) for name in KPI_FIELDS])
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def csv_filename(query: ReportQuery, period: Period) -> str:
    """ASCII only (dates and the dimension), so no header encoding is needed."""
    by = f"-by-{query.by.value}" if query.by is not None else ""
    return f"kokan-kpis-{period.first_day}-to-{period.last_day}{by}.csv"


# ---- staffing ----


class ErlangCBody(BaseModel):
    """The calculator's inputs, percentages 0-100 as people write them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    calls_per_interval: float = Field(gt=0, le=MAX_CALLS_PER_INTERVAL, allow_inf_nan=False)
    interval_minutes: int = Field(ge=1, le=MAX_INTERVAL_MINUTES)
    average_handle_time_seconds: float = Field(gt=0, le=MAX_HANDLE_TIME_S, allow_inf_nan=False)
    target_service_level_pct: float = Field(gt=0, lt=100, allow_inf_nan=False)
    target_answer_seconds: float = Field(ge=0, le=MAX_ANSWER_TIME_S, allow_inf_nan=False)
    max_occupancy_pct: float = Field(
        default=DEFAULT_MAX_OCCUPANCY_PCT, gt=0, le=100, allow_inf_nan=False
    )
    shrinkage_pct: float = Field(default=DEFAULT_SHRINKAGE_PCT, ge=0, lt=100, allow_inf_nan=False)


def erlang_c_json(body: ErlangCBody, erlangs: float, plan: Plan) -> dict[str, Any]:
    found = plan.on_phones
    return {
        "inputs": body.model_dump(mode="json"),
        "traffic_erlangs": erlangs,
        "agents_on_phones": found.agents,
        "agents_scheduled": plan.scheduled,
        "probability_of_waiting_pct": 100.0 * found.probability_of_waiting,
        "service_level_pct": 100.0 * found.service_level,
        "average_speed_of_answer_seconds": found.asa_s,
        "occupancy_pct": 100.0 * found.occupancy,
    }


def measured_json(query: MeasuredQuery, period: Period, measured: MeasuredDemand) -> dict[str, Any]:
    interval_s = query.interval_minutes * 60
    return {
        "period": period.to_json(),
        "filters": {
            "queue": query.queue,
            "channel": query.channel.value if query.channel is not None else None,
        },
        "short_abandon_seconds": query.short_abandon_seconds,
        "calls": measured.calls,
        "period_seconds": measured.period_s,
        "interval_minutes": query.interval_minutes,
        "calls_per_interval": measured.calls_per_interval(interval_s),
        "average_handle_time_seconds": measured.average_handle_time_s,
    }
