"""Business hours and holidays edited as a form, published as a new version of the flow.

Hours live in the flow's YAML (`hours:`), so a change to them is a change to the flow:
the `Hours` model checks the form the way the loader checks the file, then the whole
edited flow goes through `flow_admin.publish` — the validator, the flow's tests, a new
immutable version and the audit log — exactly as if the admin had edited the YAML. The
YAML is changed with ruamel's round trip, so the admin's comments and layout survive.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from sqlalchemy.orm import Session

from ivr import flow_admin, publishing
from ivr.hours import UnknownTimeZone, public_holiday, supported_country, zone
from ivr.loader import FlowInvalid, parse_flow
from ivr.model import NODE_NAME, Hours
from kokan.config import Settings
from kokan.errors import InvalidInput

UPCOMING_DAYS = 366
"""Public holidays shown for the coming year: enough to check the next Golden Week."""
MAX_SHOWN_HOLIDAYS = 40
"""Japan has 16 a year; a country with far more still fits on the page."""


NOTE_MAX_CHARS = 200
"""The audit log's note: a line saying why, like a commit subject."""


class HoursInvalid(InvalidInput):
    error_id = "flow-hours-invalid"


def _round_trip() -> YAML:
    yaml = YAML()  # round-trip mode: comments, key order and quoting are kept
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long prompt the admin wrote on one line
    return yaml


def _upcoming(hours: Hours, today: dt.date) -> list[dict[str, str]]:
    days: list[dict[str, str]] = []
    if hours.holidays and supported_country(hours.holidays):
        for offset in range(UPCOMING_DAYS):
            day = today + dt.timedelta(days=offset)
            name = public_holiday(hours.holidays, day)
            if name:
                days.append({"date": day.isoformat(), "name": name, "kind": "public"})
    days += [
        {"date": day.isoformat(), "name": "", "kind": "closed"}
        for day in hours.closed
        if day >= today
    ]
    return sorted(days, key=lambda day: day["date"])[:MAX_SHOWN_HOLIDAYS]


def show_hours(session: Session, settings: Settings, name: str, today: dt.date) -> dict[str, Any]:
    shown = flow_admin.show_flow(session, settings, name)
    try:  # the YAML's own rules are enough to read the hours; the form needs no queue checks
        flow = parse_flow(shown["source"], f"{name}.yaml", name).flow
    except FlowInvalid as exc:
        raise flow_admin.FlowSourceInvalid(name, exc.problems) from None
    return {
        "name": name,
        "active_version": shown["active_version"],
        "default_timezone": flow.timezone,
        "hours": {
            hours_id: {
                **hours.model_dump(mode="json"),
                "upcoming_closed_days": _upcoming(hours, today),
            }
            for hours_id, hours in flow.hours.items()
        },
    }


def checked_hours(body: dict[str, Any]) -> Hours:
    try:
        hours = Hours.model_validate(_with_dates(body))
    except ValidationError as exc:
        raise HoursInvalid.from_validation(exc) from None
    if hours.timezone:
        try:
            zone(hours.timezone)
        except UnknownTimeZone as exc:
            raise HoursInvalid(
                str(exc), problems=[{"field": "timezone", "message": str(exc)}]
            ) from None
    if hours.holidays and not supported_country(hours.holidays):
        message = f"no public holiday calendar for {hours.holidays!r}; use a code like JP or US"
        raise HoursInvalid(message, problems=[{"field": "holidays", "message": message}])
    return hours


def _with_dates(body: dict[str, Any]) -> dict[str, Any]:
    """JSON has no dates: closed days arrive as ISO strings and the strict model wants dates."""
    closed = body.get("closed")
    if not isinstance(closed, list):
        return body
    parsed: list[Any] = []
    for day in closed:
        try:
            parsed.append(dt.date.fromisoformat(day) if isinstance(day, str) else day)
        except ValueError:
            parsed.append(day)  # the model names it as the field in error
    return {**body, "closed": parsed}


def edited_source(source: str, hours_id: str, hours: Hours) -> str:
    yaml = _round_trip()
    try:
        document = yaml.load(source)
    except YAMLError as exc:
        raise HoursInvalid(f"the flow's YAML does not parse: {exc}") from None
    if not isinstance(document, dict):
        raise HoursInvalid("the flow's YAML is not a map of settings and nodes")
    plain = hours.model_dump(mode="json", exclude_defaults=True)
    if "weekly" not in plain:
        plain["weekly"] = {}
    if document.get("hours") is None:
        document["hours"] = {}
    document["hours"][hours_id] = plain
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


def save_hours(
    session: Session,
    settings: Settings,
    name: str,
    hours_id: str,
    body: dict[str, Any],
    by: str,
) -> publishing.Published:
    if not re.fullmatch(NODE_NAME, hours_id):
        raise HoursInvalid(
            f"{hours_id!r} is not a name for hours: letters, digits, '_' and '-'",
            problems=[{"field": "hours_id", "message": "not a valid name"}],
        )
    note = body.pop("note", None) if isinstance(body, dict) else None
    hours = checked_hours(body)
    source = flow_admin.show_flow(session, settings, name)["source"]
    changed = edited_source(source, hours_id, hours)
    return flow_admin.publish(
        session,
        settings,
        name,
        changed,
        by,
        note=str(note)[:NOTE_MAX_CHARS] if note else f"hours {hours_id} edited in the hours form",
    )
