"""The reports API: a period's KPIs, in total and per day, queue, agent or channel, as JSON
for the page's tables and charts or as CSV for a spreadsheet.

Supervisors and admins only: the figures name agents. Every number comes from
admin.kpis; this module only reads the query and renders.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from admin import kpis
from admin.auth import require_role
from admin.models import Role
from admin.schemas import (
    Format,
    ReportQuery,
    center_zone,
    csv_filename,
    parse,
    period_of,
    query_values,
    report_csv,
    report_json,
)
from kokan.wiring import database, settings

blueprint = Blueprint("reports_api", __name__, url_prefix="/api/reports")

READERS = (Role.ADMIN, Role.SUPERVISOR)
"""Those who read the floor's figures (agents see only their own desk)."""
CSV_MIMETYPE = "text/csv"


def _wants_csv(query: ReportQuery) -> bool:
    """`format=` wins; otherwise the Accept header, JSON when both are equally welcome."""
    if query.format is not None:
        return query.format is Format.CSV
    best = request.accept_mimetypes.best_match(["application/json", CSV_MIMETYPE])
    return best == CSV_MIMETYPE


@blueprint.get("/kpis")
@require_role(*READERS)
def show_kpis() -> Response | dict[str, Any]:
    query = parse(ReportQuery, query_values(request.args.to_dict(flat=False)))
    period = period_of(query, center_zone(settings()))
    thresholds = kpis.Thresholds(
        service_level_s=query.sl_seconds, short_abandon_s=query.short_abandon_seconds
    )
    with database().unit_of_work() as session:
        total, groups = kpis.report_with_total(
            session,
            period.start,
            period.end,
            period.zone,
            by=query.by,
            queue=query.queue,
            agent=query.agent,
            channel=query.channel.value if query.channel is not None else None,
            thresholds=thresholds,
        )
    if not _wants_csv(query):
        return report_json(query, period, total, groups)
    response = Response(report_csv(query, total, groups), mimetype=CSV_MIMETYPE)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{csv_filename(query, period)}"'
    )
    response.vary.add("Accept")
    return response
