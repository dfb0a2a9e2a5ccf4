"""The staffing API over HTTP: Erlang C against the textbook's worked numbers, the measured
volume of the hand-worked center (tests/kpi_rows.py) that pre-fills it, roles and bad input."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask

from admin.schemas import MAX_CALLS_PER_INTERVAL, ErlangCBody
from kokan.db import Database
from tests.kpi_rows import PERIOD, store_center
from tests.test_tickets_api import Api, error, ok

CALCULATOR = "/api/staffing/erlang-c"
MEASURED = "/api/staffing/measured"

TEXTBOOK = {
    "calls_per_interval": 100,
    "interval_minutes": 30,
    "average_handle_time_seconds": 180,
    "target_service_level_pct": 80,
    "target_answer_seconds": 20,
}
"""100 calls in half an hour at 180 s: A = 100 x 180 / 1800 = 10 erlangs. By the
factorial formula, Pw(N) = (A^N / N!) (N / (N - A)) / (Σ_{k<N} A^k / k! + that):
    N = 13: Pw 0.285270, SL = 1 - Pw e^(-(N - A) 20 / 180) = 79.56 % (short of 80)
    N = 14: Pw 0.174132, SL 88.835 %, ASA = Pw x 180 / (N - A) = 7.8359 s, occ 10/14
    N = 15: Pw 0.102042, SL 94.145 %, occ 66.67 %"""


@pytest.fixture
def api(app: Flask, database: Database) -> Api:
    return Api(app.test_client(), database)


def plan(api: Api, **changes: Any) -> Any:
    return ok(api.post(CALCULATOR, {**TEXTBOOK, **changes}, user="sato"))


def test_erlang_c_gives_the_textbook_answer(api: Api) -> None:
    found = plan(api)
    assert found["traffic_erlangs"] == pytest.approx(10.0)
    assert (found["agents_on_phones"], found["agents_scheduled"]) == (14, 14)
    assert found["probability_of_waiting_pct"] == pytest.approx(17.4132, abs=1e-3)
    assert found["service_level_pct"] == pytest.approx(88.835, abs=1e-3)
    assert found["average_speed_of_answer_seconds"] == pytest.approx(7.8359, abs=1e-3)
    assert found["occupancy_pct"] == pytest.approx(100 * 10 / 14)
    assert found["inputs"]["max_occupancy_pct"] == 100.0  # the defaults are echoed
    assert found["inputs"]["shrinkage_pct"] == 0.0


def test_shrinkage_occupancy_cap_and_a_lower_target(api: Api) -> None:
    # 30 % of the scheduled are away: ceil(14 / 0.7) = 20 on the schedule
    assert plan(api, shrinkage_pct=30)["agents_scheduled"] == 20
    # at most 70 % busy: 14 agents are 71.4 % busy, 15 are 66.7 %
    capped = plan(api, max_occupancy_pct=70)
    assert capped["agents_on_phones"] == 15
    assert capped["service_level_pct"] == pytest.approx(94.145, abs=1e-3)
    # 75 % in 20 s: 13 agents (79.56 %) are enough
    assert plan(api, target_service_level_pct=75)["agents_on_phones"] == 13
    assert plan(api, calls_per_interval=0.5)["agents_on_phones"] == 1  # fractions are fine


@pytest.mark.parametrize(
    "changes",
    [
        {"calls_per_interval": 0},
        {"calls_per_interval": -5},
        {"calls_per_interval": MAX_CALLS_PER_INTERVAL + 1},
        {"calls_per_interval": "100"},
        {"calls_per_interval": True},
        {"calls_per_interval": None},
        {"interval_minutes": 0},
        {"interval_minutes": 30.5},
        {"interval_minutes": 24 * 60 + 1},
        {"average_handle_time_seconds": 0},
        {"average_handle_time_seconds": 1e12},
        {"target_service_level_pct": 100},
        {"target_service_level_pct": 0},
        {"target_answer_seconds": -1},
        {"max_occupancy_pct": 0},
        {"max_occupancy_pct": 101},
        {"shrinkage_pct": 100},
        {"shrinkage_pct": -1},
        {"target_answer_seconds": float("inf")},
        {"agents": 3},  # unknown field
    ],
)
def test_bad_inputs_are_named(api: Api, changes: dict[str, Any]) -> None:
    response = api.post(CALCULATOR, {**TEXTBOOK, **changes}, user="sato")
    field = next(iter(changes))
    known = field in ErlangCBody.model_fields
    expected = "staffing-input-invalid" if known else "unknown-parameter"
    assert error(response, 400) == expected
    assert field in response.get_json()["message"]


def test_missing_fields_and_bodies_that_are_not_objects(api: Api) -> None:
    body = {k: v for k, v in TEXTBOOK.items() if k != "average_handle_time_seconds"}
    response = api.post(CALCULATOR, body, user="sato")
    assert error(response, 400) == "staffing-input-invalid"
    assert "average_handle_time_seconds" in response.get_json()["message"]
    assert error(api.post(CALCULATOR, [TEXTBOOK], user="sato"), 400) == "staffing-input-invalid"
    headers = {"Authorization": f"Bearer {api.tokens['sato']}", "Content-Type": "application/json"}
    for raw in (b"", b"{", b'{"calls_per_interval": NaN}'):
        response = api.client.post(CALCULATOR, data=raw, headers=headers)
        assert error(response, 400) == "staffing-input-invalid"


def test_a_plan_beyond_the_models_reach_is_refused_quickly(api: Api) -> None:
    began = time.perf_counter()
    huge = api.post(
        CALCULATOR,
        {
            **TEXTBOOK,
            "calls_per_interval": MAX_CALLS_PER_INTERVAL,
            "interval_minutes": 1,
            "average_handle_time_seconds": 3600,
        },
        user="sato",
    )
    assert error(huge, 400) == "staffing-infeasible"
    assert "agents" in huge.get_json()["message"]
    assert time.perf_counter() - began < 5  # no search through thousands of agents


def test_only_supervisors_and_admins_plan(api: Api) -> None:
    assert error(api.post(CALCULATOR, TEXTBOOK, user=None), 401) == "authentication-required"
    assert error(api.post(CALCULATOR, TEXTBOOK, user="aiko"), 403) == "role-forbidden"
    assert ok(api.post(CALCULATOR, TEXTBOOK, user="root"))["agents_on_phones"] == 14
    assert error(api.get(f"{MEASURED}?{PERIOD}", user=None), 401) == "authentication-required"
    assert error(api.get(f"{MEASURED}?{PERIOD}", user="aiko"), 403) == "role-forbidden"


def test_the_measured_volume_and_handle_time(api: Api, database: Database) -> None:
    store_center(database)
    sales = ok(api.get(f"{MEASURED}?{PERIOD}&queue=sales", user="sato"))
    # sales offered k1 k2 k3 k4 k8, less the short abandon k4 = 4 calls over two days
    assert (sales["calls"], sales["period_seconds"]) == (4, 2 * 86_400)
    assert sales["average_handle_time_seconds"] == 195.0  # (150 + 240) / 2
    assert sales["interval_minutes"] == 30
    assert sales["calls_per_interval"] == pytest.approx(4 * 1800 / 172_800)
    assert sales["period"]["time_zone"] == "Asia/Tokyo"

    hourly = ok(api.get(f"{MEASURED}?{PERIOD}&interval_minutes=60", user="root"))
    # all queues: 8 offered - 1 short = 7; AHT (150 + 240 + 300 + 120) / 4
    assert (hourly["calls"], hourly["average_handle_time_seconds"]) == (7, 202.5)
    assert hourly["calls_per_interval"] == pytest.approx(7 * 3600 / 172_800)
    chat = ok(api.get(f"{MEASURED}?{PERIOD}&channel=chat", user="sato"))
    assert (chat["calls"], chat["average_handle_time_seconds"]) == (1, 300.0)
    # S = 10 s: k8 (8 s) never needed an agent either
    assert ok(api.get(f"{MEASURED}?{PERIOD}&short_abandon_seconds=10", user="sato"))["calls"] == 6

    quiet = ok(api.get(f"{MEASURED}?start=2026-01-01&end=2026-01-02", user="sato"))
    assert (quiet["calls"], quiet["calls_per_interval"]) == (0, 0.0)
    assert quiet["average_handle_time_seconds"] is None  # nothing handled: nothing to plan


def test_the_measured_figures_fill_the_calculator(api: Api, database: Database) -> None:
    store_center(database)
    sales = ok(api.get(f"{MEASURED}?{PERIOD}&queue=sales&interval_minutes=60", user="sato"))
    found = plan(
        api,
        calls_per_interval=sales["calls_per_interval"],
        interval_minutes=sales["interval_minutes"],
        average_handle_time_seconds=sales["average_handle_time_seconds"],
    )
    # 1/12 call an hour at 195 s: A = 0.0045 erlangs; one agent answers almost everyone
    assert found["agents_on_phones"] == 1
    assert found["traffic_erlangs"] == pytest.approx(4 * 3600 / 172_800 * 195 / 3600)


@pytest.mark.parametrize(
    ("query", "error_id"),
    [
        ("start=2026-03-02", "report-period-invalid"),
        ("start=2026-03-04&end=2026-03-02", "report-period-invalid"),
        (f"{PERIOD}&interval_minutes=0", "staffing-input-invalid"),
        (f"{PERIOD}&interval_minutes=1441", "staffing-input-invalid"),
        (f"{PERIOD}&interval_minutes=half", "staffing-input-invalid"),
        ("start=2026-03-02&end=2026-03-04&tz=Nowhere/Land", "report-timezone-unknown"),
        (f"{PERIOD}&queue=no%20spaces", "report-filter-invalid"),
        (f"{PERIOD}&agent=a", "unknown-parameter"),  # staffing plans queues, not agents
    ],
)
def test_bad_measured_queries_are_named(api: Api, query: str, error_id: str) -> None:
    assert error(api.get(f"{MEASURED}?{query}", user="sato"), 400) == error_id
