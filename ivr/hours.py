"""Business hours, public holidays and closed days, evaluated in the hours' own time zone."""

from __future__ import annotations

import datetime as dt
import functools
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

from ivr.model import Hours, expand_days, parse_ranges


class UnknownTimeZone(ValueError):
    pass


@functools.lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UnknownTimeZone(
            f"unknown time zone {name!r} (use IANA names like Asia/Tokyo)"
        ) from None


@functools.lru_cache(maxsize=256)
def _country_calendar(country: str, year: int) -> holidays.HolidayBase:
    return holidays.country_holidays(country, years=year)


def supported_country(country: str) -> bool:
    return country in holidays.list_supported_countries()


def public_holiday(country: str, day: dt.date) -> str | None:
    """The holiday's name, or None on an ordinary day."""
    name = _country_calendar(country, day.year).get(day)
    return str(name) if name else None


def is_closed_day(hours: Hours, day: dt.date) -> bool:
    if day in hours.closed:
        return True
    return bool(hours.holidays and public_holiday(hours.holidays, day))


def is_open(hours: Hours, at: dt.datetime, default_timezone: str) -> bool:
    local = at.astimezone(zone(hours.timezone or default_timezone))
    if is_closed_day(hours, local.date()):
        return False
    moment = local.time().replace(tzinfo=None)
    for days, ranges in hours.weekly.items():
        if local.weekday() not in expand_days(days):
            continue
        if any(start <= moment < end for start, end in parse_ranges(ranges)):
            return True
    return False
