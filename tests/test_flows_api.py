"""The flow editor's JSON API with real tokens, a real database and a copy of the example
flows: list, show, check with line numbers, diff, tests, simulate, publish, roll back, audit."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from flask import Flask
from pydantic import BaseModel

from admin.openapi_http import OPENAPI_PATH
from ivr import publishing
from ivr.flows_http import PublishBody, RollbackBody, SimulateBody, SourceBody
from ivr.loader import MAX_FLOW_BYTES
from ivr.validator import CheckContext
from kokan.app import create_app
from kokan.config import QueueSettings, Settings
from kokan.db import Database
from tests.conftest import REPO_ROOT, run_kokan
from tests.test_openapi import _accepted, _body, check
from tests.test_tickets_api import Api, error, ok

QUEUES = ("billing", "support", "sales")
BROKEN_TARGET = '"1": nowhere'
"""choose_language's first option sent to a node that does not exist."""


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    target = tmp_path / "flows"
    shutil.copytree(REPO_ROOT / "flows", target)
    return target


@pytest.fixture
def flow_settings(settings: Settings, flows_dir: Path) -> Settings:
    return settings.model_copy(
        update={"flows_dir": flows_dir, "queues": {name: QueueSettings() for name in QUEUES}}
    )


@pytest.fixture
def flows_app(flow_settings: Settings, database: Database, redis_client: redis.Redis) -> Flask:
    return create_app({"TESTING": True, "KOKAN_SETTINGS": flow_settings})


@pytest.fixture
def api(flows_app: Flask, database: Database) -> Api:
    return Api(flows_app.test_client(), database)


def cli_config(flows_dir: Path) -> None:
    """A config for `kokan flows …` on the same folder and queues as the app under test."""
    (flows_dir.parent / "config.yaml").write_text(
        f"data_dir: {flows_dir.parent / 'cli-var'}\nflows_dir: {flows_dir}\n"
        "queues:\n  billing: {}\n  support: {}\n  sales: {}\n"
    )


def main_source(flows_dir: Path) -> str:
    return (flows_dir / "main.yaml").read_text(encoding="utf-8")


def broken(source: str) -> tuple[str, int]:
    """The source with a transition to a missing node, and the (1-based) line it is on."""
    changed = source.replace('"1": japanese', BROKEN_TARGET, 1)
    assert changed != source
    line = next(n for n, text in enumerate(changed.splitlines(), 1) if BROKEN_TARGET in text)
    return changed, line


def published_v1(database: Database, flows_dir: Path, name: str = "main") -> None:
    """Version 1 as `kokan flows publish` would store it."""
    context = CheckContext.for_directory(flows_dir, frozenset(QUEUES))
    source = (flows_dir / f"{name}.yaml").read_text(encoding="utf-8")
    with database.unit_of_work() as session:
        publishing.publish(session, name, source, f"{name}.yaml", context, "cli:ops")


def publish(api: Api, source: str, note: str | None = None, name: str = "main") -> Any:
    body: dict[str, Any] = {"source": source}
    if note is not None:
        body["note"] = note
    return api.post(f"/api/flows/{name}/publish", body, user="root")


# ---- reading ----


def test_list_names_published_flows_and_working_files(
    api: Api, database: Database, flows_dir: Path
) -> None:
    published_v1(database, flows_dir)
    listed = {flow["name"]: flow for flow in ok(api.get("/api/flows", user="sato"))["flows"]}
    assert set(listed) == {"main", "survey"}
    assert listed["main"]["active_version"] == 1
    (version,) = listed["main"]["versions"]
    assert version["version"] == 1
    assert version["active"] is True
    assert version["published_by"] == "cli:ops"
    assert version["published_at"].startswith("20")
    assert listed["survey"] == {**listed["survey"], "active_version": None, "versions": []}


def test_show_gives_the_working_file_then_the_active_version(
    api: Api, database: Database, flows_dir: Path
) -> None:
    working = main_source(flows_dir)
    shown = ok(api.get("/api/flows/main", user="root"))
    assert shown["source"] == working
    assert shown["active_version"] is None
    assert shown["source_from"] == "file"
    published_v1(database, flows_dir)
    (flows_dir / "main.yaml").write_text("# edited on disk\n" + working, encoding="utf-8")
    shown = ok(api.get("/api/flows/main", user="sato"))
    assert shown["source"] == working  # the published text, not the file edited since
    assert shown["active_version"] == 1
    assert shown["name"] == "main"
    assert [v["version"] for v in shown["versions"]] == [1]
    version = ok(api.get("/api/flows/main/versions/1", user="sato"))
    assert version["source"] == working
    assert version["active"] is True
    assert error(api.get("/api/flows/main/versions/2", user="sato"), 404) == (
        "flow-version-not-found"
    )
    assert error(api.get("/api/flows/nosuch", user="sato"), 404) == "flow-not-found"
    assert error(api.get("/api/flows/..", user="sato"), 404) in ("flow-not-found", "not-found")


# ---- check and diff ----


def test_check_reports_the_validators_errors_at_their_lines(api: Api, flows_dir: Path) -> None:
    assert ok(api.post("/api/flows/main/check", {"source": main_source(flows_dir)}, "sato")) == {
        "ok": True,
        "errors": [],
    }
    source, line = broken(main_source(flows_dir))
    checked = ok(api.post("/api/flows/main/check", {"source": source}, user="root"))
    assert checked["ok"] is False
    (problem,) = checked["errors"]
    assert problem["line"] == line
    assert problem["column"] == 12  # the value, after `"1": ` and six spaces of indent
    assert "nowhere" in problem["message"]
    assert "does not exist" in problem["message"]
    # the same words `kokan flows check` prints for the same file
    (flows_dir / "main.yaml").write_text(source, encoding="utf-8")
    cli_config(flows_dir)
    printed = run_kokan(
        "--config",
        str(flows_dir.parent / "config.yaml"),
        "flows",
        "check",
        "main.yaml",
        cwd=flows_dir,
    )
    assert f"main.yaml:{line}:12: {problem['message']}" in printed.stdout


def test_check_names_unknown_queues_and_yaml_mistakes(api: Api, flows_dir: Path) -> None:
    source = main_source(flows_dir).replace("queue: billing", "queue: 請求", 1)
    line = next(n for n, t in enumerate(source.splitlines(), 1) if "queue: 請求" in t)
    (problem,) = ok(api.post("/api/flows/main/check", {"source": source}, "root"))["errors"]
    assert problem["line"] == line
    assert "unknown queue '請求'" in problem["message"]
    unclosed = ok(api.post("/api/flows/main/check", {"source": "start: 'x\nnodes: {}\n"}, "root"))
    assert unclosed["ok"] is False
    assert unclosed["errors"][0]["line"] == 1
    assert unclosed["errors"][0]["message"].startswith("YAML:")


def test_diff_against_the_active_version(api: Api, database: Database, flows_dir: Path) -> None:
    source = main_source(flows_dir)
    first = ok(api.post("/api/flows/main/diff", {"source": source}, user="sato"))
    assert first["against_version"] is None
    assert first["diff"].count("\n+") >= source.count("\n") - 1  # every line is new
    published_v1(database, flows_dir)
    same = ok(api.post("/api/flows/main/diff", {"source": source}, user="sato"))
    assert same == {**same, "against_version": 1, "diff": ""}
    edited = source.replace(
        "お電話ありがとうございます。", "お電話まことにありがとうございます。", 1
    )
    changed = ok(api.post("/api/flows/main/diff", {"source": edited}, user="sato"))
    assert changed["against_version"] == 1
    assert "--- main@v1" in changed["diff"]
    removed = [
        ln for ln in changed["diff"].splitlines() if ln.startswith("-") and "ありがとう" in ln
    ]
    added = [ln for ln in changed["diff"].splitlines() if ln.startswith("+") and "ありがとう" in ln]
    assert len(removed) == 1
    assert len(added) == 1
    assert "まことに" in added[0]


# ---- tests and simulate ----


def test_the_flows_tests_run_against_the_given_source(api: Api, flows_dir: Path) -> None:
    source = main_source(flows_dir)
    run = ok(api.post("/api/flows/main/tests", {"source": source}, user="sato"))
    assert run["failed"] == 0
    assert run["passed"] == len(run["results"]) >= 5
    assert {result["file"] for result in run["results"]} == {"tests/main.yaml"}
    assert all(result["ok"] and result["message"] == "" for result in run["results"])
    # valid, but billing now goes to the wrong queue: the billing case fails, by name
    wrong = source.replace("queue: billing", "queue: sales", 1)
    run = ok(api.post("/api/flows/main/tests", {"source": wrong}, user="sato"))
    failing = [result for result in run["results"] if not result["ok"]]
    assert run["failed"] == len(failing) >= 1
    assert any("billing" in result["name"] and "outcome" in result["message"] for result in failing)
    assert main_source(flows_dir) == source  # nothing written to the working file
    broken_source, line = broken(source)
    refused = api.post("/api/flows/main/tests", {"source": broken_source}, user="sato")
    assert error(refused, 422) == "flow-invalid"
    assert refused.get_json()["errors"][0]["line"] == line


def test_simulate_walks_the_example_main_flow(api: Api, flows_dir: Path) -> None:
    body = {
        "source": main_source(flows_dir),
        "inputs": ["1", "1"],
        "from": "+819012345678",
        "at": "2026-11-24T10:00+09:00",
    }
    call = ok(api.post("/api/flows/main/simulate", body, user="sato"))
    assert call["path"] == [
        "welcome",
        "choose_language",
        "japanese",
        "check_hours",
        "offer_survey",
        "main_menu",
        "billing",
    ]
    assert call["outcome"]["kind"] == "queued"
    assert call["outcome"]["queue"] == "billing"
    assert any("お電話ありがとうございます" in text for text in call["heard"])
    assert "> 1" in call["lines"]
    assert call["waiting_for"] is None
    # after hours, in English, the caller is sent to voicemail and records
    night = {**body, "inputs": ["2", "record"], "at": "2026-12-31T20:00+09:00"}
    call = ok(api.post("/api/flows/main/simulate", night, user="root"))
    assert call["outcome"] == {**call["outcome"], "kind": "voicemail"}
    assert "holiday_closed" in call["path"]
    # inputs run out while the menu waits: said, not an error
    waiting = ok(api.post("/api/flows/main/simulate", {**body, "inputs": []}, user="root"))
    assert waiting["waiting_for"] == "keys"
    assert waiting["outcome"] is None


def test_simulate_prints_what_the_command_line_prints(api: Api, flows_dir: Path) -> None:
    at, inputs = "2026-11-25T12:30+09:00", ["1", "3", "record"]
    body = {"source": main_source(flows_dir), "inputs": inputs, "at": at}
    call = ok(api.post("/api/flows/main/simulate", body, user="root"))
    cli_config(flows_dir)
    printed = run_kokan(
        "--config",
        str(flows_dir.parent / "config.yaml"),
        "flows",
        "simulate",
        "main.yaml",
        "--at",
        at,
        "--inputs",
        ",".join(inputs),
        cwd=flows_dir,
    )
    assert printed.returncode == 0, printed.stderr
    body_lines = printed.stdout.splitlines()[1:]  # after "call from … to … at …"
    assert [line.removeprefix("  ") for line in body_lines[:-2]] == call["lines"]
    assert body_lines[-2] == f"path: {' -> '.join(call['path'])}"
    assert body_lines[-1] == f"outcome: {call['outcome_text']}"
    assert call["outcome_text"] == "voicemail"


def test_simulate_uses_the_given_language(api: Api, flows_dir: Path) -> None:
    source = (flows_dir / "survey.yaml").read_text(encoding="utf-8")
    body = {"source": source, "at": "2026-11-24T10:00+09:00"}
    japanese = ok(api.post("/api/flows/survey/simulate", body, user="root"))
    assert japanese["heard"][0].startswith("本日の対応の満足度")
    english = ok(api.post("/api/flows/survey/simulate", {**body, "language": "en"}, "root"))
    assert english["heard"][0].startswith("How satisfied were you today?")


# ---- publish and roll back ----


def test_publish_then_roll_back_with_an_audit_trail(
    api: Api, database: Database, flows_dir: Path
) -> None:
    source = main_source(flows_dir)
    published_v1(database, flows_dir)
    assert error(publish(api, source), 409) == "flow-unchanged"
    edited = source.replace("Thank you for calling.", "Thank you for calling Kokan.", 1)
    assert edited != source
    created = ok(publish(api, edited, note="新しい挨拶"), 201)
    assert created == {"version": 2, "active_version": 2}
    assert ok(api.get("/api/flows/main", user="sato"))["source"] == edited
    assert error(publish(api, edited), 409) == "flow-unchanged"

    back = api.post("/api/flows/main/rollback", {"version": 1}, user="root")
    assert ok(back) == {"active_version": 1}
    shown = ok(api.get("/api/flows/main", user="sato"))
    assert shown["active_version"] == 1
    assert shown["source"] == source
    assert [v["active"] for v in shown["versions"]] == [True, False]
    missing = api.post("/api/flows/main/rollback", {"version": 7}, user="root")
    assert error(missing, 404) == "flow-version-not-found"
    assert error(api.post("/api/flows/main/rollback", {"version": 1}, user="root"), 409) == (
        "flow-unchanged"
    )

    entries = ok(api.get("/api/flows/audit?flow=main", user="sato"))["entries"]
    actions = [entry["action"] for entry in entries]
    assert actions == ["flow.rolled_back", "flow.published", "flow.published"]
    rolled, made, first = entries
    assert (first["actor"], first["version"]) == ("cli:ops", 1)  # published_v1, as the CLI does
    assert rolled["actor"] == made["actor"] == "root"
    assert rolled["flow"] == "main"
    assert rolled["version"] == 1
    assert rolled["detail"]["from"] == 2
    assert rolled["detail"]["to"] == 1
    assert made["version"] == 2
    assert made["detail"]["note"] == "新しい挨拶"
    assert rolled["at"] >= made["at"]
    assert made["at"].startswith("20")
    assert ok(api.get("/api/flows/audit?flow=survey", user="root"))["entries"] == []
    assert len(ok(api.get("/api/flows/audit", user="root"))["entries"]) == 3


def test_an_invalid_source_is_not_published(api: Api, database: Database, flows_dir: Path) -> None:
    published_v1(database, flows_dir)
    source, line = broken(main_source(flows_dir))
    refused = publish(api, source)
    assert error(refused, 422) == "flow-invalid"
    (problem,) = refused.get_json()["errors"]
    assert problem["line"] == line
    assert "nowhere" in problem["message"]
    assert ok(api.get("/api/flows/main", user="root"))["active_version"] == 1
    entries = ok(api.get("/api/flows/audit", user="root"))["entries"]
    assert [(entry["actor"], entry["version"]) for entry in entries] == [("cli:ops", 1)]


def test_publish_runs_the_flows_tests_first(api: Api, flows_dir: Path) -> None:
    wrong = main_source(flows_dir).replace("queue: billing", "queue: sales", 1)
    refused = publish(api, wrong)
    assert error(refused, 422) == "flow-tests-failed"
    assert refused.get_json()["failed"] >= 1
    assert ok(api.get("/api/flows/main", user="root"))["active_version"] is None
    forced = api.post("/api/flows/main/publish", {"source": wrong, "skip_tests": True}, user="root")
    assert ok(forced, 201)["version"] == 1
    (entry,) = ok(api.get("/api/flows/audit?flow=main", user="root"))["entries"]
    assert entry["detail"]["tests_skipped"] is True


def test_a_first_publish_and_unicode_round_trip(api: Api, flows_dir: Path) -> None:
    source = main_source(flows_dir).replace("# The example", "# 例 The example", 1)
    assert "例" in source
    assert ok(publish(api, source, name="main"), 201)["version"] == 1
    assert ok(api.get("/api/flows/main/versions/1", user="sato"))["source"] == source


# ---- who may do what ----


def test_roles(api: Api, database: Database, flows_dir: Path) -> None:
    published_v1(database, flows_dir)
    source = {"source": main_source(flows_dir)}
    reads = ["/api/flows", "/api/flows/main", "/api/flows/main/versions/1", "/api/flows/audit"]
    tries = ["check", "diff", "tests", "simulate"]
    for path in reads:
        assert error(api.get(path, user="aiko"), 403) == "role-forbidden"
        assert error(api.get(path, user=None), 401) == "authentication-required"
        ok(api.get(path, user="sato"))
    for action in tries:
        assert error(api.post(f"/api/flows/main/{action}", source, user="aiko"), 403)
        ok(api.post(f"/api/flows/main/{action}", source, user="sato"))
    for action, body in (("publish", source), ("rollback", {"version": 1})):
        for user in ("aiko", "sato"):
            refused = api.post(f"/api/flows/main/{action}", body, user=user)
            assert error(refused, 403) == "role-forbidden"
    entries = ok(api.get("/api/flows/audit", user="root"))["entries"]
    assert [entry["actor"] for entry in entries] == ["cli:ops"]  # published_v1's, nothing more


# ---- bad input ----


def test_bad_input_is_refused_with_the_field_named(api: Api, flows_dir: Path) -> None:
    source = main_source(flows_dir)

    def refused(path: str, body: Any, status: int = 400) -> str:
        response = api.post(f"/api/flows/main/{path}", body, user="root")
        error(response, status)
        return str(response.get_json()["message"])

    assert "source" in refused("check", {"source": 42})
    assert "source" in refused("check", {})
    assert "extra" in refused("check", {"source": source, "sauce": 1}).lower()
    assert "JSON object" in refused("check", ["source"])
    assert "version" in refused("rollback", {"version": "1"})
    assert "version" in refused("rollback", {"version": 0})
    assert "note" in refused("publish", {"source": source, "note": "x" * 5000})
    assert "inputs" in refused("simulate", {"source": source, "inputs": ["1"] * 1000})
    assert "inputs" in refused("simulate", {"source": source, "inputs": [1, 2]})
    assert "inputs" in refused("simulate", {"source": source, "inputs": ["1" * 1000]})
    assert "language" in refused("simulate", {"source": source, "language": "日本語"})
    naive = api.post(
        "/api/flows/main/simulate", {"source": source, "at": "2026-12-31T20:00"}, "root"
    )
    assert error(naive, 400) == "simulation-input-invalid"
    assert "UTC offset" in naive.get_json()["message"]
    huge = "# " + "x" * MAX_FLOW_BYTES + "\n" + source
    for path in ("check", "diff", "publish", "tests", "simulate"):
        response = api.post(f"/api/flows/main/{path}", {"source": huge}, user="root")
        assert error(response, 413) == "flow-too-large"
    assert error(api.post("/api/flows/nosuch/check", {"source": source}, "root"), 404) == (
        "flow-not-found"
    )
    bad_audit = api.get("/api/flows/audit?flw=main", user="root")
    assert "flw" in bad_audit.get_json()["message"]
    assert bad_audit.status_code == 400


# ---- the document ----


def test_the_openapi_document_describes_these_answers(
    api: Api, database: Database, flows_dir: Path
) -> None:
    document = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    bodies: dict[str, type[BaseModel]] = {
        "check": SourceBody,
        "diff": SourceBody,
        "tests": SourceBody,
        "simulate": SimulateBody,
        "publish": PublishBody,
        "rollback": RollbackBody,
    }
    for action, model in bodies.items():
        documented = set(_body(document, f"/api/flows/{{name}}/{action}", "post")["properties"])
        assert documented == _accepted(model), action
    published_v1(database, flows_dir)
    source = main_source(flows_dir)
    check(document, "FlowList", ok(api.get("/api/flows", user="sato")))
    check(document, "FlowDetail", ok(api.get("/api/flows/main", user="sato")))
    check(document, "FlowVersionSource", ok(api.get("/api/flows/main/versions/1", user="sato")))
    check(document, "FlowCheck", ok(api.post("/api/flows/main/check", {"source": source}, "sato")))
    check(document, "FlowDiff", ok(api.post("/api/flows/main/diff", {"source": source}, "sato")))
    check(
        document, "FlowTestRun", ok(api.post("/api/flows/main/tests", {"source": source}, "sato"))
    )
    simulated = api.post("/api/flows/main/simulate", {"source": source, "inputs": ["1"]}, "sato")
    check(document, "FlowSimulation", ok(simulated))
    invalid = publish(api, broken(source)[0])
    check(document, "FlowInvalid", invalid.get_json())
    edited = source.replace("Thank you for calling.", "Thank you.", 1)
    check(document, "FlowPublished", ok(publish(api, edited), 201))
    failing = publish(api, source.replace("queue: billing", "queue: sales", 1))
    check(document, "FlowTestsFailed", failing.get_json())
    ok(api.post("/api/flows/main/rollback", {"version": 1}, user="root"))
    check(document, "FlowAudit", ok(api.get("/api/flows/audit", user="sato")))
    with pytest.raises(AssertionError):  # a schema that could not fail would prove nothing
        check(document, "FlowCheck", {"ok": True, "errors": [{"line": "one"}]})


# ---- business hours and holidays, edited as a form ----


def put_hours(api: Api, hours_id: str, body: Any, user: str = "root", name: str = "main") -> Any:
    return api.client.put(
        f"/api/flows/{name}/hours/{hours_id}", json=body, headers=api._headers(user)
    )


def test_hours_show_each_set_with_the_coming_holidays(
    api: Api, database: Database, flows_dir: Path
) -> None:
    published_v1(database, flows_dir)
    shown = ok(api.get("/api/flows/main/hours", user="sato"))
    assert shown["active_version"] == 1
    assert shown["default_timezone"] == "Asia/Tokyo"
    office = shown["hours"]["office"]
    assert office["weekly"] == {"mon-fri": "09:00-18:00"}
    assert office["holidays"] == "JP"
    upcoming = office["upcoming_closed_days"]
    assert upcoming == sorted(upcoming, key=lambda day: day["date"])
    assert {day["kind"] for day in upcoming} <= {"public", "closed"}
    assert any(day["kind"] == "public" and day["name"] for day in upcoming)


def test_an_hours_edit_publishes_a_new_version_and_keeps_the_comments(
    api: Api, database: Database, flows_dir: Path
) -> None:
    published_v1(database, flows_dir)
    closed = ["2026-12-29", "2026-12-30", "2026-12-31", "2027-01-02", "2027-01-03", "2027-05-06"]
    body = {
        "weekly": {"mon-fri": "09:00-18:00", "sat": "10:00-12:00"},
        "holidays": "JP",
        "closed": closed,
        "timezone": "Asia/Tokyo",
        "note": "土曜の午前も開ける",
    }
    saved = ok(put_hours(api, "office", body), 201)
    assert saved == {"version": 2, "active_version": 2}
    source = ok(api.get("/api/flows/main", user="root"))["source"]
    assert "# the sales team keeps shorter hours than the office" in source
    parsed = yaml.safe_load(source)["hours"]["office"]
    assert parsed["weekly"] == body["weekly"]
    assert parsed["timezone"] == "Asia/Tokyo"
    assert [str(day) for day in parsed["closed"]] == closed
    entries = ok(api.get("/api/flows/audit?flow=main", user="root"))["entries"]
    assert entries[0]["detail"]["note"] == "土曜の午前も開ける"
    assert entries[0]["actor"] == "root"
    # a Saturday morning in Tokyo is open now: the caller reaches the main menu
    walk = ok(
        api.post(
            "/api/flows/main/simulate",
            {"source": source, "inputs": ["1"], "at": "2027-01-16T11:00+09:00"},
            user="root",
        )
    )
    assert "main_menu" in walk["path"], walk


def test_an_hours_edit_that_breaks_the_flows_tests_is_not_published(
    api: Api, database: Database, flows_dir: Path
) -> None:
    published_v1(database, flows_dir)
    answer = put_hours(api, "office", {"weekly": {"mon-fri": "09:00-17:00"}, "holidays": "JP"})
    assert answer.status_code == 422
    assert answer.get_json()["error_id"] == "flow-tests-failed"
    assert ok(api.get("/api/flows/main", user="root"))["active_version"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"weekly": {"mon-fri": "9-5"}}, "weekly"),
        ({"weekly": {"fri-mon": "09:00-17:00"}}, "weekly"),
        ({"weekly": {"mon": "09:00-17:00"}, "holidays": "XX"}, "holidays"),
        ({"weekly": {"mon": "09:00-17:00"}, "closed": ["2027-02-30"]}, "closed.0"),
        ({"weekly": {"mon": "09:00-17:00"}, "closed": "2027-02-03"}, "closed"),
        ({"weekly": "mon-fri"}, "weekly"),
        ({"weekly": {"mon": "09:00-17:00"}, "opens": "never"}, "opens"),
        ({}, "weekly"),
    ],
)
def test_bad_hours_are_refused_by_field_and_nothing_is_published(
    api: Api, database: Database, flows_dir: Path, body: dict[str, Any], field: str
) -> None:
    published_v1(database, flows_dir)
    answer = put_hours(api, "office", body)
    assert answer.status_code == 400, answer.get_data(as_text=True)
    problems = answer.get_json()["details"]["problems"]
    assert problems[0]["field"] == field
    assert ok(api.get("/api/flows/main", user="root"))["active_version"] == 1


def test_hours_with_a_bad_time_zone_or_name_or_user_are_refused(
    api: Api, database: Database, flows_dir: Path
) -> None:
    published_v1(database, flows_dir)
    answer = put_hours(api, "office", {"weekly": {"mon": "09:00-17:00"}, "timezone": "Mars/Base"})
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.get_json()["details"]["problems"][0]["field"] == "timezone"
    assert put_hours(api, "bad name", {"weekly": {}}).status_code == 400
    assert put_hours(api, "office", {"weekly": {}}, user="sato").status_code == 403
    assert put_hours(api, "office", {"weekly": {}}, name="nothing").status_code == 404
    assert ok(api.get("/api/flows/main", user="root"))["active_version"] == 1


def test_a_queue_made_through_the_acd_api_is_known_to_the_flow_checks(
    api: Api, flows_dir: Path
) -> None:
    source = main_source(flows_dir).replace("queue: sales", "queue: made-in-the-ui")
    assert source != main_source(flows_dir)
    before = ok(api.post("/api/flows/main/check", {"source": source}, user="root"))
    assert not before["ok"]
    assert any("made-in-the-ui" in each["message"] for each in before["errors"])
    made = api.client.put("/api/acd/queues/made-in-the-ui", json={}, headers=api._headers("root"))
    assert made.status_code == 200, made.get_json()
    after = ok(api.post("/api/flows/main/check", {"source": source}, user="root"))
    assert after == {"ok": True, "errors": []}
