"""The staffing API: the Erlang C calculator (acd.staffing) and the measured volume and
handle time of a period (admin.kpis) that pre-fill it.

Supervisors and admins plan the floor; the calculator keeps no state.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from acd.staffing import Demand, StaffingError, agents_needed
from admin import kpis
from admin.auth import require_role
from admin.models import Role
from admin.schemas import (
    ErlangCBody,
    MeasuredQuery,
    StaffingInfeasible,
    StaffingInputInvalid,
    center_zone,
    erlang_c_json,
    measured_json,
    parse,
    period_of,
    query_values,
)
from kokan.wiring import database, settings

blueprint = Blueprint("staffing_api", __name__, url_prefix="/api/staffing")

PLANNERS = (Role.ADMIN, Role.SUPERVISOR)
"""Those who staff the floor."""


@blueprint.post("/erlang-c")
@require_role(*PLANNERS)
def erlang_c() -> dict[str, Any]:
    body = parse(ErlangCBody, request.get_json(silent=True), StaffingInputInvalid)
    try:
        demand = Demand(
            calls=body.calls_per_interval,
            interval_s=body.interval_minutes * 60,
            aht_s=body.average_handle_time_seconds,
        )
        plan = agents_needed(
            demand,
            target_service_level=body.target_service_level_pct / 100,
            answer_within_s=body.target_answer_seconds,
            max_occupancy=body.max_occupancy_pct / 100,
            shrinkage=body.shrinkage_pct / 100,
        )
    except StaffingError as exc:
        raise StaffingInfeasible(str(exc)) from None
    return erlang_c_json(body, demand.erlangs, plan)


@blueprint.get("/measured")
@require_role(*PLANNERS)
def measured() -> dict[str, Any]:
    query = parse(MeasuredQuery, query_values(request.args.to_dict(flat=False)))
    period = period_of(query, center_zone(settings()))
    with database().unit_of_work() as session:
        found = kpis.staffing_inputs(
            session,
            period.start,
            period.end,
            queue=query.queue,
            channel=query.channel.value if query.channel is not None else None,
            thresholds=kpis.Thresholds(short_abandon_s=query.short_abandon_seconds),
        )
    return measured_json(query, period, found)
