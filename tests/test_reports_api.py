"""The reports API over HTTP with real tokens, on the hand-worked center of tests/kpi_rows.py:
JSON per day, queue, agent and channel, filters, thresholds, CSV parsed back, roles and
every kind of bad query."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from flask import Flask

from admin import kpis
from admin.schemas import KPI_FIELDS, MAX_REPORT_DAYS
from kokan.db import Database
from tests.kpi_rows import PERIOD, store_center
from tests.test_tickets_api import Api, error, ok

URL = "/api/reports/kpis"


@pytest.fixture
def api(app: Flask, database: Database) -> Api:
    store_center(database)
    return Api(app.test_client(), database)


def kpis_of(path: str, api: Api, user: str = "sato") -> Any:
    return ok(api.get(path, user=user))


def test_the_period_in_total_and_per_local_day(api: Api) -> None:
    report = kpis_of(f"{URL}?{PERIOD}&by=day", api)
    assert report["period"] == {
        "start": "2026-03-02",
        "end": "2026-03-04",
        "last_day": "2026-03-03",
        "days": 2,
        "time_zone": "Asia/Tokyo",
        "start_utc": "2026-03-01T15:00:00+00:00",
        "end_utc": "2026-03-03T15:00:00+00:00",
    }
    assert report["by"] == "day"
    assert report["thresholds"] == {
        "service_level_seconds": 20,
        "short_abandon_seconds": 5,
        "fcr_window_days": 7,
    }
    assert report["service_level_formula"] == kpis.SERVICE_LEVEL_FORMULA
    total = report["total"]
    # k1-k8; k0 and k9 lie outside the Tokyo days
    assert (total["offered"], total["answered"], total["abandoned"]) == (8, 4, 2)
    assert total["short_abandoned"] == 1  # k4
    assert total["average_speed_of_answer_s"] == 14.75  # (10 + 30 + 4 + 15) / 4
    assert total["average_handle_time_s"] == 202.5  # (150 + 240 + 300 + 120) / 4
    # within 20 s: k1 k5 k6; against: 4 answered + k3 (40 s) + k7 (voicemail, 120 s);
    # k8 left after 8 s (<= T) and k4 is short: neither -> 3 / 6
    assert total["service_level_pct"] == 50.0
    assert total["abandon_rate_pct"] == pytest.approx(100 * 2 / 7)  # k3 k8 / (8 - 1)
    # handling: a 500 + 100, b 1200 = 1800; ready: a 600 + 300, b 300 = 1200
    assert total["occupancy_pct"] == pytest.approx(60.0)
    # judged: k1 k2 k5 (k6 has no caller number); k1's caller came back (k5)
    assert total["first_contact_resolution_pct"] == pytest.approx(100 * 2 / 3)
    assert total["csat_pct"] == 75.0  # 5 3 4 5: three of four are 4-5
    assert total["nps"] == 25.0  # promoters k1 k6, detractor k2, passive k5: (2 - 1) / 4
    assert total["ces"] == 5.0  # (6 + 4) / 2; k6's 9 is off the 1-7 scale
    assert total["surveys"] == 4

    day1, day2 = report["rows"]
    assert (day1["group"], day2["group"]) == ("2026-03-02", "2026-03-03")
    assert (day1["offered"], day1["answered"], day1["abandoned"], day1["short_abandoned"]) == (
        4,
        2,
        1,
        1,
    )
    assert day1["average_speed_of_answer_s"] == 20.0  # (10 + 30) / 2
    assert day1["average_handle_time_s"] == 195.0  # (150 + 240) / 2
    assert day1["service_level_pct"] == pytest.approx(100 / 3)  # k1 / (k1 k2 k3)
    assert day1["abandon_rate_pct"] == pytest.approx(100 / 3)  # k3 / (4 - 1)
    assert day1["occupancy_pct"] == pytest.approx(40.0)  # a: 600 / (600 + 900)
    assert day1["first_contact_resolution_pct"] == 50.0  # k2 yes, k1 no
    assert (day1["csat_pct"], day1["nps"], day1["ces"], day1["surveys"]) == (50.0, 0.0, 5.0, 2)

    assert (day2["offered"], day2["answered"], day2["abandoned"], day2["short_abandoned"]) == (
        4,
        2,
        1,
        0,
    )
    assert day2["average_speed_of_answer_s"] == 9.5  # (4 + 15) / 2
    assert day2["average_handle_time_s"] == 210.0  # (300 + 120) / 2
    assert day2["service_level_pct"] == pytest.approx(200 / 3)  # k5 k6 / (k5 k6 k7)
    assert day2["abandon_rate_pct"] == 25.0  # k8 / 4
    assert day2["occupancy_pct"] == pytest.approx(80.0)  # b: 1200 / (1200 + 300)
    assert day2["first_contact_resolution_pct"] == 100.0  # k5
    assert (day2["csat_pct"], day2["nps"], day2["ces"], day2["surveys"]) == (100.0, 50.0, None, 2)


def test_every_kpi_is_stated_and_every_row_has_every_kpi(api: Api) -> None:
    report = kpis_of(f"{URL}?{PERIOD}&by=agent", api)
    assert set(report["definitions"]) == set(KPI_FIELDS)
    assert all(text.strip() for text in report["definitions"].values())
    for row in [report["total"], *report["rows"]]:
        assert set(row) - {"group"} == set(KPI_FIELDS)


def test_per_queue_agent_and_channel(api: Api) -> None:
    queues = {r["group"]: r for r in kpis_of(f"{URL}?{PERIOD}&by=queue", api)["rows"]}
    assert list(queues) == ["sales", "support"]
    assert (queues["sales"]["offered"], queues["sales"]["abandoned"]) == (5, 2)  # k3 k8
    assert queues["sales"]["service_level_pct"] == pytest.approx(100 / 3)  # k1 / (k1 k2 k3)
    assert queues["support"]["service_level_pct"] == pytest.approx(200 / 3)
    assert queues["sales"]["occupancy_pct"] is None  # agents' time is not split by queue

    agents = {r["group"]: r for r in kpis_of(f"{URL}?{PERIOD}&by=agent", api)["rows"]}
    assert list(agents) == ["a", "b", None]  # None: the calls nobody answered
    assert agents["a"]["average_handle_time_s"] == 225.0  # (150 + 300) / 2
    assert agents["a"]["average_speed_of_answer_s"] == 7.0  # (10 + 4) / 2
    assert agents["a"]["occupancy_pct"] == pytest.approx(40.0)
    assert agents["b"]["average_handle_time_s"] == 180.0  # (240 + 120) / 2
    assert agents["b"]["occupancy_pct"] == pytest.approx(80.0)
    assert (agents[None]["offered"], agents[None]["answered"]) == (4, 0)
    assert agents[None]["occupancy_pct"] is None

    channels = {r["group"]: r for r in kpis_of(f"{URL}?{PERIOD}&by=channel", api)["rows"]}
    assert {name: row["offered"] for name, row in channels.items()} == {"chat": 1, "voice": 7}


def test_filters_narrow_the_total_and_no_by_gives_no_rows(api: Api) -> None:
    support = kpis_of(f"{URL}?{PERIOD}&queue=support", api)
    assert support["by"] is None
    assert support["rows"] == []
    assert support["filters"] == {"queue": "support", "agent": None, "channel": None}
    assert (support["total"]["offered"], support["total"]["answered"]) == (3, 2)
    assert support["total"]["occupancy_pct"] is None
    only_a = kpis_of(f"{URL}?{PERIOD}&agent=a", api)["total"]
    assert (only_a["offered"], only_a["average_handle_time_s"]) == (2, 225.0)
    assert only_a["occupancy_pct"] == pytest.approx(40.0)
    chat = kpis_of(f"{URL}?{PERIOD}&channel=chat&by=day", api)
    assert chat["total"]["offered"] == 1
    assert [row["offered"] for row in chat["rows"]] == [0, 1]  # every day, calls or not
    assert kpis_of(f"{URL}?{PERIOD}&queue=nosuchqueue", api)["total"]["offered"] == 0
    # a page form sends its unset fields empty: no filter, no breakdown, the defaults
    unset = kpis_of(f"{URL}?{PERIOD}&by=&queue=&agent=&channel=&sl_seconds=&format=", api)
    assert (unset["by"], unset["rows"], unset["total"]["offered"]) == (None, [], 8)
    assert unset["thresholds"]["service_level_seconds"] == 20


def test_the_thresholds_are_the_reports_own(api: Api) -> None:
    report = kpis_of(f"{URL}?{PERIOD}&sl_seconds=30&short_abandon_seconds=10", api)
    total = report["total"]
    assert report["thresholds"]["service_level_seconds"] == 30
    # T = 30: within k1 k2 (30 s) k5 k6 = 4; against: 4 answered + k3 (40) + k7 = 6
    assert total["service_level_pct"] == pytest.approx(200 / 3)
    # S = 10: k8 (8 s) becomes short too
    assert (total["abandoned"], total["short_abandoned"]) == (1, 2)
    assert total["abandon_rate_pct"] == pytest.approx(100 / 6)  # k3 / (8 - 2)


def test_a_day_is_the_zones_day(api: Api) -> None:
    # in UTC, k9 (15:00 on 03-03) joins day 2; k0 (14:59:59 on 03-01) is still before
    utc = kpis_of(f"{URL}?start=2026-03-02&end=2026-03-04&tz=UTC&by=day", api)
    assert [row["offered"] for row in utc["rows"]] == [4, 5]
    # the US clocks went forward on 2026-03-08: that local day is 23 hours long
    period = kpis_of(f"{URL}?start=2026-03-08&end=2026-03-09&tz=America/New_York", api)["period"]
    assert (period["start_utc"], period["end_utc"]) == (
        "2026-03-08T05:00:00+00:00",
        "2026-03-09T04:00:00+00:00",
    )
    # no tz: the center's own (tickets.proactive.timezone, Asia/Tokyo by default)
    default = kpis_of(f"{URL}?start=2026-03-02&end=2026-03-04", api)
    assert default["period"]["time_zone"] == "Asia/Tokyo"
    assert default["total"]["offered"] == 8


def parse_csv(body: bytes) -> list[dict[str, str]]:
    assert body.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline="")))


def test_csv_by_format_or_accept(api: Api) -> None:
    response = api.get(f"{URL}?{PERIOD}&by=agent&format=csv", user="root")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="kokan-kpis-2026-03-02-to-2026-03-03-by-agent.csv"'
    )
    rows = parse_csv(response.data)
    assert list(rows[0]) == ["agent", *KPI_FIELDS]
    assert [row["agent"] for row in rows] == ["a", "b", "(no agent)", "(total)"]
    a, _b, nobody, total = rows
    assert (a["answered"], a["average_handle_time_s"], a["occupancy_pct"]) == ("2", "225.0", "40.0")
    assert nobody["occupancy_pct"] == ""  # None is an empty cell
    assert total["abandon_rate_pct"] == "28.57"  # 2 / 7, two decimals
    assert total["first_contact_resolution_pct"] == "66.67"

    by_accept = api.client.get(
        f"{URL}?{PERIOD}",
        headers={"Authorization": f"Bearer {api.tokens['sato']}", "Accept": "text/csv"},
    )
    assert by_accept.mimetype == "text/csv"
    assert by_accept.headers["Content-Disposition"].endswith(
        'filename="kokan-kpis-2026-03-02-to-2026-03-03.csv"'
    )
    (only,) = parse_csv(by_accept.data)
    assert (only["group"], only["offered"], only["service_level_pct"]) == ("(total)", "8", "50.0")
    # format=json wins over the Accept header
    json_anyway = api.client.get(
        f"{URL}?{PERIOD}&format=json",
        headers={"Authorization": f"Bearer {api.tokens['sato']}", "Accept": "text/csv"},
    )
    assert json_anyway.get_json()["total"]["offered"] == 8


def test_only_supervisors_and_admins_read_reports(api: Api) -> None:
    assert error(api.get(f"{URL}?{PERIOD}", user=None), 401) == "authentication-required"
    assert error(api.get(f"{URL}?{PERIOD}", user="aiko"), 403) == "role-forbidden"
    assert error(api.get(f"{URL}?{PERIOD}&format=csv", user="aiko"), 403) == "role-forbidden"
    assert kpis_of(f"{URL}?{PERIOD}", api, user="root")["total"]["offered"] == 8


@pytest.mark.parametrize(
    ("query", "error_id"),
    [
        ("end=2026-03-04", "report-period-invalid"),  # no start
        ("start=2026-03-02", "report-period-invalid"),  # no end
        ("start=2026-3-2&end=2026-03-04", "report-period-invalid"),
        ("start=20260302&end=20260304", "report-period-invalid"),
        ("start=2026-02-30&end=2026-03-04", "report-period-invalid"),
        ("start=0001-01-01&end=0001-01-02", "report-period-invalid"),
        ("start=2026-03-04&end=2026-03-04", "report-period-invalid"),  # end not after start
        ("start=2026-03-05&end=2026-03-04", "report-period-invalid"),
        ("start=2024-01-01&end=2025-01-02", "report-period-invalid"),  # 367 days
        ("start=2026-03-02&end=2026-03-04&tz=Mars/Olympus", "report-timezone-unknown"),
        ("start=2026-03-02&end=2026-03-04&tz=../../etc/passwd", "report-timezone-unknown"),
        ("start=2026-03-02&end=2026-03-04&by=week", "report-dimension-unknown"),
        ("start=2026-03-02&end=2026-03-04&sl_seconds=0", "report-threshold-invalid"),
        ("start=2026-03-02&end=2026-03-04&sl_seconds=3601", "report-threshold-invalid"),
        ("start=2026-03-02&end=2026-03-04&sl_seconds=2.5", "report-threshold-invalid"),
        ("start=2026-03-02&end=2026-03-04&short_abandon_seconds=-1", "report-threshold-invalid"),
        ("start=2026-03-02&end=2026-03-04&short_abandon_seconds=601", "report-threshold-invalid"),
        ("start=2026-03-02&end=2026-03-04&queue=a%20b", "report-filter-invalid"),
        ("start=2026-03-02&end=2026-03-04&agent=x:y", "report-filter-invalid"),
        ("start=2026-03-02&end=2026-03-04&channel=fax", "report-filter-invalid"),
        ("start=2026-03-02&end=2026-03-04&format=xlsx", "report-format-unknown"),
        ("start=2026-03-02&end=2026-03-04&sl_second=30", "unknown-parameter"),
        ("start=2026-03-02&end=2026-03-04&queue=sales&queue=support", "parameter-repeated"),
    ],
)
def test_bad_queries_are_named(api: Api, query: str, error_id: str) -> None:
    assert error(api.get(f"{URL}?{query}", user="sato"), 400) == error_id


def test_a_full_year_is_allowed(api: Api) -> None:
    report = kpis_of(f"{URL}?start=2024-01-01&end=2025-01-01&by=day", api)
    assert report["period"]["days"] == MAX_REPORT_DAYS  # 2024 is a leap year
    assert len(report["rows"]) == MAX_REPORT_DAYS
    assert report["total"]["offered"] == 0
    assert report["total"]["service_level_pct"] is None  # no calls is not 0 %


def test_errors_say_which_field_and_why(api: Api) -> None:
    response = api.get(f"{URL}?start=2026-3-2&end=2026-03-04", user="sato")
    assert response.get_json()["message"] == "start: must be a date written YYYY-MM-DD"
    response = api.get(f"{URL}?start=2024-01-01&end=2025-01-02", user="sato")
    assert response.get_json()["message"] == "the period is 367 days; at most 366"
    response = api.get(f"{URL}?start=2026-03-02&end=2026-03-04&tz=Mars/Olympus", user="sato")
    assert "Mars/Olympus" in response.get_json()["message"]
