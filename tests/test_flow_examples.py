"""The example flows' own tests (flows/tests/*.yaml), each case as its own pytest test.

They run against the working files in flows/ with the queues configured in the repo's
config.yaml, exactly as `kokan flows test` runs them; and the runner is shown able to fail.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ivr.flowtests import Case, Expectation, load_tests, run_case
from ivr.loader import FlowInvalid
from ivr.sources import DirectoryFlows
from kokan.config import load as load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
FLOWS_DIR = REPO_ROOT / "flows"
TEST_FILES = sorted((FLOWS_DIR / "tests").glob("*.yaml"))


def _cases() -> list[pytest.ParameterSet]:
    params = []
    for path in TEST_FILES:
        tests = load_tests(path)
        for case in tests.cases:
            params.append(pytest.param(path, tests.flow, case, id=case.name))
    return params


CASES = _cases()


@pytest.fixture(scope="module")
def repo_flows() -> DirectoryFlows:
    settings = load_config(REPO_ROOT / "config.yaml", environ={}).settings
    assert set(settings.queues) == {"billing", "support", "sales"}
    return DirectoryFlows(FLOWS_DIR, frozenset(settings.queues))


def test_every_example_flow_has_tests_and_every_case_is_collected() -> None:
    flows_with_tests = {load_tests(path).flow for path in TEST_FILES}
    assert flows_with_tests == {path.stem for path in FLOWS_DIR.glob("*.yaml")}
    names = [param.id for param in CASES]
    assert len(names) == len(set(names)), "case names must be unique to be test ids"
    assert len(CASES) >= 15


@pytest.mark.parametrize(("path", "flow", "case"), CASES)
def test_example_flow_case(repo_flows: DirectoryFlows, path: Path, flow: str, case: Case) -> None:
    result = run_case(repo_flows, flow, case, str(path.relative_to(REPO_ROOT)))
    assert result.passed, "\n".join(result.failures)
    assert result.path, "the call went nowhere"
    if case.expect.path is not None:
        assert result.path == case.expect.path


WEEKDAY_MORNING = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))


def _billing_case(expect: Expectation) -> Case:
    return Case(name="deliberately wrong", at=WEEKDAY_MORNING, inputs=["1", "1"], expect=expect)


def test_the_runner_reports_a_wrong_outcome(repo_flows: DirectoryFlows) -> None:
    case = _billing_case(Expectation(outcome={"kind": "queued", "queue": "sales"}))
    result = run_case(repo_flows, "main", case, "flows/tests/wrong.yaml")
    assert not result.passed
    [failure] = result.failures
    assert failure.startswith("outcome: expected {'kind': 'queued', 'queue': 'sales'}")
    assert "'queue': 'billing'" in failure


def test_the_runner_reports_a_wrong_priority_in_an_otherwise_right_outcome(
    repo_flows: DirectoryFlows,
) -> None:
    case = _billing_case(Expectation(outcome={"queue": "billing", "priority": 10}))
    [failure] = run_case(repo_flows, "main", case, "t.yaml").failures
    assert "outcome:" in failure
    assert "'priority': 0" in failure


def test_the_runner_reports_a_wrong_path(repo_flows: DirectoryFlows) -> None:
    case = _billing_case(Expectation(path=["welcome", "choose_language", "billing"]))
    result = run_case(repo_flows, "main", case, "t.yaml")
    [failure] = result.failures
    assert failure.startswith("path: expected ['welcome', 'choose_language', 'billing'], got [")
    assert "'offer_survey', 'main_menu', 'billing']" in failure


def test_the_runner_reports_a_prompt_never_heard(repo_flows: DirectoryFlows) -> None:
    case = _billing_case(
        Expectation(heard=["お電話ありがとうございます", "営業担当におつなぎします"])
    )
    [failure] = run_case(repo_flows, "main", case, "t.yaml").failures
    assert failure.startswith("heard: '営業担当におつなぎします' not heard (after prompt 2)")
    assert "請求担当におつなぎします。" in failure  # what was heard instead is shown


def test_the_runner_checks_the_order_of_prompts(repo_flows: DirectoryFlows) -> None:
    case = _billing_case(
        Expectation(heard=["請求担当におつなぎします", "お電話ありがとうございます"])
    )
    [failure] = run_case(repo_flows, "main", case, "t.yaml").failures
    assert "'お電話ありがとうございます' not heard" in failure


def test_the_runner_reports_inputs_after_the_call_ended_and_wrong_variables(
    repo_flows: DirectoryFlows,
) -> None:
    case = Case(
        name="too many inputs",
        at=WEEKDAY_MORNING,
        inputs=["1", "3", "5"],
        expect=Expectation(variables={"order_id": "123456"}),
    )
    failures = run_case(repo_flows, "main", case, "t.yaml").failures
    assert failures == [
        "input 3 ('5') given, but the call had already ended",
        "variables.order_id: expected '123456', got None",
    ]


def test_the_runner_reports_a_call_still_waiting(repo_flows: DirectoryFlows) -> None:
    case = Case(
        name="stops at the menu",
        at=WEEKDAY_MORNING,
        inputs=["1"],
        expect=Expectation(outcome={"kind": "queued"}),
    )
    assert run_case(repo_flows, "main", case, "t.yaml").failures == [
        "outcome: the call is still waiting for keys"
    ]


def test_a_broken_test_file_is_reported_at_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        "flow: main\n"
        "cases:\n"
        "  - name: fine\n"
        '    at: "2026-11-24T10:00+09:00"\n'
        "    expect: {}\n"
        "  - name: mistakes\n"
        '    at: "2026-11-24T10:00"\n'
        "    expected:\n"
        "      path: []\n"
    )
    with pytest.raises(FlowInvalid) as caught:
        load_tests(path, "flows/tests/broken.yaml")
    assert [str(problem) for problem in caught.value.problems] == [
        "flows/tests/broken.yaml:6:5: cases.1.expect: Field required",
        "flows/tests/broken.yaml:7:5: cases.1.at: '2026-11-24T10:00': give a UTC offset, "
        "e.g. 2026-12-31T20:00+09:00",
        "flows/tests/broken.yaml:8:5: cases.1.expected: Extra inputs are not permitted",
    ]
