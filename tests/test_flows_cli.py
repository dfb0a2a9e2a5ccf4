"""`kokan flows …` as an admin runs it: a real subprocess, real files, a real database."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from ivr import flow_admin, publishing
from ivr.flowtests import load_tests
from kokan.db import Database
from tests.conftest import CLI_TIMEOUT_S, REPO_ROOT, FreshDatabase, clean_environ, run_kokan

PROBLEM_LINE = re.compile(r"^(?P<file>[^:\s]+\.yaml):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")


def example_case_count() -> int:
    return sum(
        len(load_tests(path).cases) for path in (REPO_ROOT / "flows" / "tests").glob("*.yaml")
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A folder with a copy of the example flows and a config naming its queues."""
    shutil.copytree(REPO_ROOT / "flows", tmp_path / "flows")
    (tmp_path / "config.yaml").write_text(
        f"data_dir: {tmp_path / 'var'}\n"
        f"flows_dir: {tmp_path / 'flows'}\n"
        "queues:\n  billing: {}\n  support: {}\n  sales: {}\n"
    )
    return tmp_path


def kokan_in(
    workspace: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_kokan("--config", str(workspace / "config.yaml"), *args, env=env, cwd=workspace)


def problem_lines(output: str) -> list[tuple[str, int, int, str]]:
    found = []
    for line in output.splitlines():
        match = PROBLEM_LINE.match(line)
        if match:
            found.append((match["file"], int(match["line"]), int(match["col"]), match["message"]))
    return found


# ---- check ----


def test_check_says_ok_for_the_example_flows() -> None:
    result = run_kokan("flows", "check", cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["flows/main.yaml: ok", "flows/survey.yaml: ok"]


def test_check_prints_every_problem_as_file_line_col_and_exits_1(workspace: Path) -> None:
    (workspace / "flows" / "broken.yaml").write_text(
        """\
start: a
nodes:
  a:
    type: dance
  b:
    type: hangup
    colour: red
"""
    )
    (workspace / "flows" / "graph.yaml").write_text(
        """\
start: a
nodes:
  a:
    type: menu
    prompt: hi
    options: {"1": ghost}
    on_failure: q
  q:
    type: queue
    queue: marketing
  lost:
    type: play
    file: prompts/nope.wav
    next: q
"""
    )
    result = kokan_in(workspace, "flows", "check")
    assert result.returncode == 1
    assert "flows/main.yaml: ok" in result.stdout
    assert "flows/survey.yaml: ok" in result.stdout
    found = problem_lines(result.stdout)
    assert [(file, line, col) for file, line, col, _ in found] == [
        ("flows/broken.yaml", 3, 3),
        ("flows/broken.yaml", 7, 5),
        ("flows/graph.yaml", 6, 20),
        ("flows/graph.yaml", 10, 12),
        ("flows/graph.yaml", 11, 3),
        ("flows/graph.yaml", 13, 11),
    ]
    messages = [message for *_, message in found]
    assert "unknown node type 'dance'" in messages[0]
    assert messages[1] == "node 'b': unknown field 'colour'"
    assert "goes to node 'ghost', which does not exist" in messages[2]
    assert messages[3].startswith("unknown queue 'marketing' (configured: billing, sales, support)")
    assert "can never be reached" in messages[4]
    assert "prompt file 'prompts/nope.wav' does not exist" in messages[5]


def test_check_one_named_file(workspace: Path) -> None:
    (workspace / "flows" / "bad.yaml").write_bytes(
        b'start: a\nnodes:\n  a: {type: hangup, prompt: "\x82\xa0"}\n'
    )
    result = kokan_in(workspace, "flows", "check", "flows/bad.yaml")
    assert result.returncode == 1
    [(file, line, col, message)] = problem_lines(result.stdout)
    assert (file, line, col) == ("flows/bad.yaml", 3, 30)
    assert message.startswith("not UTF-8 text")
    assert (
        kokan_in(workspace, "flows", "check", "flows/survey.yaml").stdout
        == "flows/survey.yaml: ok\n"
    )


# ---- simulate ----


def test_simulate_with_scripted_inputs_reaches_billing() -> None:
    result = run_kokan(
        "flows",
        "simulate",
        "flows/main.yaml",
        "--at",
        "2026-11-24T10:00+09:00",
        "--inputs",
        "1,1",
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "call from +819012345678 to +81312345678 at 2026-11-24T10:00:00+09:00" in out
    assert "(plays prompts/chime.wav)" in out
    assert "[ja] お電話ありがとうございます。日本語は1を押してください。" in out
    assert "[en] For English, press 2." in out
    assert "[ja] 請求担当におつなぎします。" in out
    assert (
        "path: welcome -> choose_language -> japanese -> check_hours -> offer_survey -> main_menu -> billing"
        in out
    )
    assert out.rstrip().endswith("outcome: queued to billing with priority 0 and skills billing≥2")
    assert "queued to billing with priority 0" in out


def test_simulate_on_a_japanese_public_holiday_takes_the_voicemail_path() -> None:
    result = run_kokan(
        "flows",
        "simulate",
        "flows/main.yaml",
        "--at",
        "2026-11-23T10:00+09:00",
        "--inputs",
        "2,record",
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[en] We are closed today for a holiday." in out
    assert "[en] Please leave your name and message after the tone." in out
    assert "(beep: recording up to 120 s)" in out
    assert "[en] Thank you. We will call you back." in out
    assert (
        "path: welcome -> choose_language -> english -> check_hours -> holiday_closed -> voicemail -> thanks"
        in out
    )
    assert out.rstrip().endswith("outcome: voicemail")


def test_simulate_from_a_caller_and_with_an_http_answer(workspace: Path) -> None:
    (workspace / "flows" / "vip.yaml").write_text(
        """\
start: route
nodes:
  route:
    type: branch
    rules:
      - when: startswith(caller, '+1')
        next: lookup
    otherwise: japan
  japan:
    type: hangup
    prompt: 日本からのお電話
  lookup:
    type: http
    url: https://crm.example.com/callers/{caller}
    into: {tier: tier}
    next: queue
    on_error: japan
  queue:
    type: queue
    queue: support
    priority: "5 if tier == 'gold' else 1"
"""
    )
    answer = 'https://crm.example.com/callers/%2B14155550100={"tier": "gold"}'
    result = kokan_in(
        workspace,
        "flows",
        "simulate",
        "flows/vip.yaml",
        "--from",
        "+14155550100",
        "--at",
        "2026-11-24T10:00+09:00",
        "--inputs",
        "",
        "--http-answer",
        answer,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "call from +14155550100 to +81312345678" in result.stdout
    assert "path: route -> lookup -> queue" in result.stdout
    assert "outcome: queued to support with priority 5 and skills none" in result.stdout

    japan = kokan_in(
        workspace,
        "flows",
        "simulate",
        "flows/vip.yaml",
        "--from",
        "+819011112222",
        "--at",
        "2026-11-24T10:00+09:00",
        "--inputs",
        "",
    )
    assert "[ja] 日本からのお電話" in japan.stdout
    assert "outcome: hung up" in japan.stdout


def test_simulate_main_with_an_http_answer_for_the_order_lookup() -> None:
    answer = 'https://orders.example.com/api/orders/123456={"status_text": "発送済み", "customer": {"vip": true}}'
    result = run_kokan(
        "flows",
        "simulate",
        "flows/main.yaml",
        "--at",
        "2026-11-24T11:00+09:00",
        "--inputs",
        "1,4,123456#,1",
        "--http-answer",
        answer,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "[ja] ご注文番号123456の状況は、発送済みです。" in result.stdout
    assert (
        "outcome: queued to support with priority 10 and skills support≥1, japanese≥3"
        in result.stdout
    )


def test_simulate_refuses_a_bad_http_answer_and_a_naive_time() -> None:
    bad = run_kokan(
        "flows",
        "simulate",
        "flows/main.yaml",
        "--http-answer",
        "https://x.example/a={not json",
        cwd=REPO_ROOT,
    )
    assert bad.returncode == 2
    assert "not JSON" in bad.stderr
    naive = run_kokan(
        "flows", "simulate", "flows/main.yaml", "--at", "2026-11-24T10:00", cwd=REPO_ROOT
    )
    assert naive.returncode == 2
    assert "give a UTC offset" in naive.stderr


def test_simulate_interactively_reads_the_callers_answers_from_stdin() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kokan",
            "flows",
            "simulate",
            "flows/main.yaml",
            "--at",
            "2026-11-24T10:00+09:00",
        ],
        input="2\n3\n",
        env=clean_environ(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("keys (keys, speech:words, timeout, record)") == 2
    assert "[en] For billing, press 1." in out
    assert "[en] Connecting you to sales." in out
    assert out.rstrip().endswith("outcome: queued to sales with priority 0 and skills sales≥1")


# ---- test ----


def test_flows_test_runs_every_example_case() -> None:
    count = example_case_count()
    assert count >= 15
    result = run_kokan("flows", "test", cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert sum(line.startswith("PASS flows/tests/") for line in lines) == count
    assert lines[-1] == f"{count} passed, 0 failed"


def test_flows_test_fails_with_a_failing_test_file(workspace: Path) -> None:
    wrong = workspace / "flows" / "tests" / "wrong.yaml"
    wrong.write_text(
        """\
flow: main
cases:
  - name: billing is expected to be sales
    at: "2026-11-24T10:00+09:00"
    inputs: ["1", "1"]
    expect:
      outcome: {kind: queued, queue: sales}
  - name: this one is right
    at: "2026-11-24T10:00+09:00"
    inputs: ["1", "3"]
    expect:
      outcome: {queue: sales}
"""
    )
    result = kokan_in(workspace, "flows", "test")
    assert result.returncode == 1
    out = result.stdout
    assert "FAIL flows/tests/wrong.yaml: billing is expected to be sales" in out
    assert (
        "outcome: expected {'kind': 'queued', 'queue': 'sales'}, got {'kind': 'queued', 'queue': 'billing'"
        in out
    )
    assert "PASS flows/tests/wrong.yaml: this one is right" in out
    assert out.splitlines()[-1] == f"{example_case_count() + 1} passed, 1 failed"

    only = kokan_in(workspace, "flows", "test", "flows/tests/wrong.yaml")
    assert only.returncode == 1
    assert only.stdout.splitlines()[-1] == "1 passed, 1 failed"


# ---- schema ----


def test_schema_is_a_valid_draft_2020_12_schema_that_accepts_the_examples() -> None:
    result = run_kokan("flows", "schema", cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for name in ("main", "survey"):
        data = yaml.safe_load((REPO_ROOT / "flows" / f"{name}.yaml").read_text())
        data = json.loads(json.dumps(data, default=str))  # dates as JSON text, as editors see them
        errors = [error.message for error in validator.iter_errors(data)]
        assert errors == [], name
    broken = {"start": "a", "nodes": {"a": {"type": "dance"}}}
    assert not validator.is_valid(broken)
    assert not validator.is_valid({"start": "a", "nodes": {"a": {"type": "say", "text": "hi"}}})
    assert not validator.is_valid(
        {
            "start": "a",
            "nodes": {
                "a": {"type": "menu", "prompt": "x", "options": {"x": "a"}, "on_failure": "a"}
            },
        }
    )
    assert validator.is_valid(
        {
            "start": "a",
            "nodes": {
                "a": {
                    "type": "say",
                    "text": [{"ja": "はい"}, {"play": "prompts/chime.wav"}],
                    "next": "b",
                },
                "b": {"type": "hangup"},
            },
        }
    )


# ---- publish, versions, rollback ----


def versions_of(workspace: Path, env: dict[str, str]) -> list[str]:
    """What `kokan flows versions main` lists ("* v2" active), read from the database: one
    test runs the command itself; the rest need not start a process for it each time."""
    database = Database(env["DATABASE_URL"])
    try:
        with database.sessions() as session:
            active = publishing.active_version(session, "main")
            numbers = [row.version for row in publishing.versions(session, "main")]
    finally:
        database.dispose()
    return [f"{'*' if number == active else ' '} v{number}" for number in numbers]


def test_publish_versions_and_rollback(workspace: Path, fresh_database_url: FreshDatabase) -> None:
    env = {"DATABASE_URL": fresh_database_url()}
    upgraded = kokan_in(workspace, "db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr

    first = kokan_in(workspace, "flows", "publish", "main", "--by", "tester", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.startswith("published main version 1 (")

    again = kokan_in(workspace, "flows", "publish", "main", env=env)
    assert again.returncode == 1
    assert "unchanged" in again.stderr

    main = workspace / "flows" / "main.yaml"
    original = main.read_text()
    main.write_text(
        original.replace("営業担当におつなぎします。", "営業の担当者におつなぎします。")
    )
    changed = kokan_in(workspace, "flows", "publish", "flows/main.yaml", env=env)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert changed.stdout.startswith("published main version 2 (")
    listing = kokan_in(workspace, "flows", "versions", "main", env=env).stdout
    assert [line[:4] for line in listing.splitlines()] == ["  v1", "* v2"]
    assert versions_of(workspace, env) == ["  v1", "* v2"]
    assert "tester" in listing

    back = kokan_in(workspace, "flows", "rollback", "main", env=env)
    assert (back.returncode, back.stdout) == (0, "main now serves version 1\n")
    assert versions_of(workspace, env) == ["* v1", "  v2"]

    forward = kokan_in(workspace, "flows", "rollback", "main", "--to", "2", env=env)
    assert (forward.returncode, forward.stdout) == (0, "main now serves version 2\n")
    assert versions_of(workspace, env) == ["  v1", "* v2"]

    missing = kokan_in(workspace, "flows", "rollback", "main", "--to", "99", env=env)
    assert missing.returncode == 1
    assert "kokan: flow 'main' has no version 99" in missing.stderr
    assert "Traceback" not in missing.stderr

    # a broken flow is refused with file:line:col and the active version stays
    main.write_text(
        original.replace("queue: billing", "queue: accounting").replace(
            "      - when: open('office')", "      - when: open('offices')"
        )
    )
    broken = kokan_in(workspace, "flows", "publish", "main", env=env)
    assert broken.returncode == 1
    assert problem_lines(broken.stdout) == [
        ("flows/main.yaml", 64, 15, "node 'check_hours': no hours named 'offices' in this flow"),
        (
            "flows/main.yaml",
            107,
            12,
            "unknown queue 'accounting' (configured: billing, sales, support)",
        ),
    ]
    assert "not published; the active version keeps serving" in broken.stdout
    assert versions_of(workspace, env) == ["  v1", "* v2"]

    # a flow whose tests fail is refused unless --skip-tests
    main.write_text(original.replace("請求担当におつなぎします。", "請求の担当者です。"))
    failing = kokan_in(workspace, "flows", "publish", "main", env=env)
    assert failing.returncode == 1
    assert (
        "FAIL flows/tests/main.yaml: a Japanese caller reaches billing on a weekday morning"
        in failing.stdout
    )
    assert "flow tests fail; not published (--skip-tests overrides)" in failing.stdout
    assert versions_of(workspace, env) == ["  v1", "* v2"]
    skipped = kokan_in(workspace, "flows", "publish", "main", "--skip-tests", env=env)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert skipped.stdout.startswith("published main version 3 (")
    assert versions_of(workspace, env) == ["  v1", "  v2", "* v3"]

    # every change is in the audit log, as the editor's are
    database = Database(env["DATABASE_URL"])
    try:
        with database.sessions() as session:
            entries = flow_admin.audit_entries(session, "main")
    finally:
        database.dispose()
    assert [(e["action"], e["version"], e["detail"].get("tests_skipped")) for e in entries] == [
        ("flow.published", 3, True),
        ("flow.rolled_back", 2, None),
        ("flow.rolled_back", 1, None),
        ("flow.published", 2, False),
        ("flow.published", 1, False),
    ]
    assert entries[-1]["actor"] == "tester"
    assert entries[0]["actor"].startswith("cli:")


def test_versions_and_rollback_of_a_flow_never_published(
    workspace: Path, fresh_database_url: FreshDatabase
) -> None:
    env = {"DATABASE_URL": fresh_database_url()}
    assert kokan_in(workspace, "db", "upgrade", env=env).returncode == 0
    listing = kokan_in(workspace, "flows", "versions", "survey", env=env)
    assert listing.returncode == 1
    assert "flow 'survey' has never been published" in listing.stderr
    rollback = kokan_in(workspace, "flows", "rollback", "survey", env=env)
    assert rollback.returncode == 1
    assert "has never been published" in rollback.stderr
