"""The validator: checks that need the whole flow, each pointing at the line to fix;
and the expression language that branches, sets and priorities are written in."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from ivr.expressions import ExpressionError, Scope, check_syntax, evaluate
from ivr.loader import FlowInvalid, FlowProblem, parse_flow
from ivr.model import Flow
from ivr.validator import CheckContext, check, check_file
from kokan.config import load as load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
JST = dt.timezone(dt.timedelta(hours=9))
BYE = "  bye: {type: hangup}\n"


@pytest.fixture
def context(tmp_path: Path) -> CheckContext:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "chime.wav").write_bytes(b"RIFF")
    (tmp_path / "other.yaml").write_text("start: a\nnodes: {a: {type: return}}\n")
    (tmp_path / "survey.yaml").write_text("start: a\nnodes: {a: {type: hangup}}\n")
    return CheckContext.for_directory(tmp_path, ["billing", "support"])


def flow_problems(text: str, context: CheckContext) -> list[FlowProblem]:
    return check(parse_flow(text, "flows/x.yaml"), context)


def only_problem(text: str, context: CheckContext) -> FlowProblem:
    found = flow_problems(text, context)
    assert len(found) == 1, found
    return found[0]


# ---- the example flows ----


def test_the_example_flows_have_no_problems_with_the_repo_queues() -> None:
    settings = load_config(REPO_ROOT / "config.yaml", environ={}).settings
    context = CheckContext.for_directory(REPO_ROOT / "flows", settings.queues)
    assert context.known_flows >= {"main", "survey"}
    for name in ("main", "survey"):
        parsed = check_file(REPO_ROOT / "flows" / f"{name}.yaml", context)
        assert check(parsed, context) == []
        assert parsed.flow.nodes


def test_the_example_flow_without_its_queues_is_refused(tmp_path: Path) -> None:
    context = CheckContext.for_directory(REPO_ROOT / "flows", ["billing"])
    with pytest.raises(FlowInvalid) as caught:
        check_file(REPO_ROOT / "flows" / "main.yaml", context, "flows/main.yaml")
    messages = [str(problem) for problem in caught.value.problems]
    assert any(m.startswith("flows/main.yaml:29:10: unknown queue 'support'") for m in messages)
    assert any("unknown queue 'sales' (configured: billing)" in m for m in messages)


# ---- the graph ----


def test_a_transition_to_a_missing_node_points_at_the_value(context: CheckContext) -> None:
    text = "start: a\nnodes:\n  a:\n    type: say\n    text: hi\n    next: nowhere\n"
    problem = only_problem(text, context)
    assert (problem.line, problem.column) == (6, 11)
    assert problem.message == "node 'a': next goes to node 'nowhere', which does not exist"


def test_menu_options_and_branch_rules_to_missing_nodes(context: CheckContext) -> None:
    text = (
        """\
start: m
nodes:
  m:
    type: menu
    prompt: hi
    options:
      "1": b
      "2": ghost
    on_failure: b
  b:
    type: branch
    rules:
      - when: caller == '+81'
        next: phantom
    otherwise: bye
"""
        + BYE
    )
    found = flow_problems(text, context)
    assert [(p.line, p.column) for p in found] == [(8, 12), (14, 15)]
    assert "options.2 goes to node 'ghost'" in found[0].message
    assert "rules.0.next goes to node 'phantom'" in found[1].message


def test_a_missing_start_node(context: CheckContext) -> None:
    problem = only_problem("start: nope\nnodes:\n  a: {type: hangup}\n", context)
    assert (problem.line, problem.column) == (1, 8)
    assert problem.message == "start node 'nope' does not exist"


def test_an_unreachable_node(context: CheckContext) -> None:
    text = "start: a\nnodes:\n  a: {type: hangup}\n  lonely:\n    type: hangup\n"
    problem = only_problem(text, context)
    assert (problem.line, problem.column) == (4, 3)
    assert problem.message == "node 'lonely' can never be reached from 'a'"


def test_a_misspelt_next_reports_the_region_it_cuts_off_once(context: CheckContext) -> None:
    text = (REPO_ROOT / "flows" / "main.yaml").read_text()
    text = text.replace("next: choose_language", "next: choose_lang")
    found = flow_problems(text, dataclasses.replace(context, known_queues=None))
    assert [(p.line, p.column) for p in found] == [(35, 11), (37, 3)]
    assert found[0].message.endswith("goes to node 'choose_lang', which does not exist")
    assert found[1].message.startswith("node 'choose_language' can never be reached")
    assert found[1].message.endswith("(nor can the 21 nodes it leads to)")


def test_two_separate_unreachable_nodes_are_both_reported(context: CheckContext) -> None:
    text = "start: a\nnodes:\n  a: {type: hangup}\n  b: {type: goto, to: a}\n  c: {type: goto, to: b}\n"
    found = flow_problems(text, context)
    assert [p.message for p in found] == [
        "node 'b' can never be reached from 'a'",
        "node 'c' can never be reached from 'a'",
    ]


def test_a_menu_with_no_way_out(context: CheckContext) -> None:
    text = """\
start: m
nodes:
  m:
    type: menu
    prompt: hi
    options: {"1": m, "2": again}
    on_failure: m
  again:
    type: say
    text: once more
    next: m
"""
    problem = only_problem(text, context)
    assert problem.line == 3
    assert problem.message.startswith("menu 'm' has no way out")
    assert "m -> again -> m" in problem.message


def test_a_loop_with_no_exit(context: CheckContext) -> None:
    text = """\
start: intro
nodes:
  intro: {type: say, text: hi, next: ask}
  ask:
    type: gather
    prompt: number?
    into: n
    next: repeat
    on_failure: ask
  repeat:
    type: say
    text: "{n}"
    next: ask
"""
    problem = only_problem(text, context)
    assert problem.line == 4
    assert problem.message == "loop with no exit: ask -> repeat -> ask"


def test_a_loop_without_caller_input_that_repeats_forever(context: CheckContext) -> None:
    text = (
        """\
start: check
nodes:
  check:
    type: branch
    rules:
      - when: vip == true
        next: bye
    otherwise: hold
  hold:
    type: say
    text: Please hold.
    next: check
"""
        + BYE
    )
    problem = only_problem(text, context)
    assert problem.line == 3
    assert problem.message.startswith(
        "loop with no caller input repeats forever: check -> hold -> check"
    )


def test_a_counting_loop_and_a_retry_loop_are_allowed(context: CheckContext) -> None:
    counting = (
        """\
start: count
nodes:
  count:
    type: set
    vars: {n: "(n or 0) + 1"}
    next: enough
  enough:
    type: branch
    rules:
      - when: n >= 3
        next: bye
    otherwise: count
"""
        + BYE
    )
    assert flow_problems(counting, context) == []
    retry = (
        """\
start: ask
nodes:
  ask:
    type: gather
    prompt: number?
    into: n
    next: valid
    on_failure: bye
  valid:
    type: branch
    rules:
      - when: int(n) < 10
        next: bye
    otherwise: ask
"""
        + BYE
    )
    assert flow_problems(retry, context) == []


# ---- files, queues, hours, expressions, other flows ----


def test_a_missing_prompt_file_in_a_play_node(context: CheckContext) -> None:
    text = "start: a\nnodes:\n  a:\n    type: play\n    file: prompts/nope.wav\n    next: bye\n"
    problem = only_problem(text + BYE, context)
    assert (problem.line, problem.column) == (5, 11)
    assert problem.message == "prompt file 'prompts/nope.wav' does not exist"
    assert flow_problems(text.replace("nope", "chime") + BYE, context) == []


def test_a_missing_prompt_file_in_a_prompt_part(context: CheckContext) -> None:
    text = (
        """\
start: a
nodes:
  a:
    type: say
    text:
      - こんにちは
      - play: prompts/chime.wav
      - play: {ja: prompts/gone_ja.wav, en: prompts/chime.wav}
    next: bye
"""
        + BYE
    )
    problem = only_problem(text, context)
    assert (problem.line, problem.column) == (8, 20)
    assert problem.message.startswith("prompt file 'prompts/gone_ja.wav' (ja) does not exist")


def test_a_prompt_file_outside_the_flows_folder_counts_as_missing(
    context: CheckContext,
) -> None:
    (context.flows_dir.parent / "secret.wav").write_bytes(b"x")
    text = "start: a\nnodes:\n  a:\n    type: play\n    file: ../secret.wav\n    next: bye\n"
    assert "does not exist" in only_problem(text + BYE, context).message
    url = text.replace("../secret.wav", "https://cdn.example.com/a.wav")
    assert flow_problems(url + BYE, context) == []


def test_an_unknown_queue(context: CheckContext) -> None:
    problem = only_problem("start: a\nnodes:\n  a:\n    type: queue\n    queue: sales\n", context)
    assert (problem.line, problem.column) == (5, 12)
    assert problem.message == "unknown queue 'sales' (configured: billing, support)"


def test_an_unknown_fallback_queue(context: CheckContext) -> None:
    text = "start: a\nfallback:\n  queue: sales\nnodes:\n  a: {type: hangup}\n"
    assert only_problem(text, context).line == 3


def test_queues_are_not_checked_when_none_are_known(tmp_path: Path) -> None:
    context = CheckContext.for_directory(tmp_path, None)
    assert flow_problems("start: a\nnodes:\n  a: {type: queue, queue: any}\n", context) == []


def test_an_unknown_hours_name_in_open(context: CheckContext) -> None:
    text = (
        """\
start: a
hours:
  office: {weekly: {mon-fri: "09:00-18:00"}}
nodes:
  a:
    type: branch
    rules:
      - when: open('office')
        next: bye
      - when: closed('x')
        next: bye
    otherwise: bye
"""
        + BYE
    )
    problem = only_problem(text, context)
    assert (problem.line, problem.column) == (10, 15)
    assert problem.message == "node 'a': no hours named 'x' in this flow"


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("shout(caller)", "unknown function 'shout' (known: open, closed, holiday"),
        ("__import__('os')", "unknown function '__import__'"),
        ("eval('1')", "unknown function 'eval'"),
        ("caller.__class__", "'__class__': names starting with _ are not allowed"),
        ("caller ==", "does not parse"),
    ],
)
def test_bad_expressions_are_found_before_a_call_runs_them(
    context: CheckContext, expression: str, words: str
) -> None:
    text = f'start: a\nnodes:\n  a:\n    type: set\n    vars:\n      v: "{expression}"\n'
    problem = only_problem(text + "    next: bye\n" + BYE, context)
    assert (problem.line, problem.column) == (6, 10)
    assert words in problem.message


def test_an_unknown_function_in_a_queue_priority(context: CheckContext) -> None:
    text = "start: a\nnodes:\n  a:\n    type: queue\n    queue: billing\n    priority: rank(1)\n"
    problem = only_problem(text, context)
    assert problem.line == 6
    assert "unknown function 'rank'" in problem.message


def test_bad_time_zones(context: CheckContext) -> None:
    text = """\
start: a
timezone: Asia/Tokio
hours:
  office:
    timezone: Mars/Olympus
    weekly: {mon-fri: "09:00-18:00"}
nodes:
  a: {type: hangup}
"""
    found = sorted(flow_problems(text, context))
    assert [(p.line, p.column) for p in found] == [(2, 11), (5, 15)]
    assert found[0].message.startswith("unknown time zone 'Asia/Tokio' (use IANA names")
    assert "'Mars/Olympus'" in found[1].message


def test_an_unknown_holiday_country_in_hours_and_in_holiday(context: CheckContext) -> None:
    text = (
        """\
start: a
hours:
  office:
    weekly: {mon-fri: "09:00-18:00"}
    holidays: XX
nodes:
  a:
    type: branch
    rules:
      - when: holiday('ZZ')
        next: bye
      - when: holiday('JP')
        next: bye
    otherwise: bye
"""
        + BYE
    )
    found = sorted(flow_problems(text, context))
    assert [(p.line, p.column) for p in found] == [(5, 15), (10, 15)]
    assert found[0].message == "no public holiday calendar for 'XX' (use a country code like JP)"
    assert "no public holiday calendar for 'ZZ'" in found[1].message


def test_subflow_and_survey_must_name_existing_flows(context: CheckContext) -> None:
    text = (
        """\
start: a
nodes:
  a:
    type: subflow
    flow: nowhere
    next: b
  b:
    type: survey
    flow: no_survey
    next: c
  c:
    type: subflow
    flow: other
    next: d
  d:
    type: survey
    flow: survey
    next: bye
"""
        + BYE
    )
    found = flow_problems(text, context)
    assert [(p.line, p.column) for p in found] == [(5, 11), (9, 11)]
    assert found[0].message.startswith("flow 'nowhere' does not exist in ")
    assert found[1].message.startswith("flow 'no_survey' does not exist in ")


def test_every_problem_of_a_file_is_raised_together(context: CheckContext) -> None:
    path = context.flows_dir / "broken.yaml"
    path.write_text(
        "start: a\nnodes:\n  a:\n    type: queue\n    queue: sales\n  lost: {type: hangup}\n"
    )
    with pytest.raises(FlowInvalid) as caught:
        check_file(path, context, "flows/broken.yaml")
    assert [str(problem) for problem in caught.value.problems] == [
        "flows/broken.yaml:5:12: unknown queue 'sales' (configured: billing, support)",
        "flows/broken.yaml:6:3: node 'lost' can never be reached from 'a'",
    ]


# ---- the expression language ----


@pytest.fixture(scope="module")
def main_flow() -> Flow:
    return parse_flow((REPO_ROOT / "flows" / "main.yaml").read_text(), "main.yaml").flow


def scope(flow: Flow, at: dt.datetime, **variables: object) -> Scope:
    return Scope(
        flow=flow,
        variables=variables,
        caller="+819012345678",
        called="+81312345678",
        language="ja",
        now=at,
    )


AT = dt.datetime(2026, 11, 24, 10, 0, tzinfo=JST)  # a Tuesday


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "caller.__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "eval('1 + 1')",
        "exec('x = 1')",
        "getattr(caller, 'upper')",
        "'{0.__class__}'.format(caller)",
        "'a' * 10 ** 9",
        "2 ** 100000000",
        "open('/etc/passwd')",
        "x" * 600,
    ],
)
def test_unsafe_expressions_are_refused(main_flow: Flow, expression: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate(expression, scope(main_flow, AT))


def test_unset_variables_read_as_none(main_flow: Flow) -> None:
    assert evaluate("nothing", scope(main_flow, AT)) is None
    assert evaluate("nothing == None", scope(main_flow, AT)) is True
    assert evaluate("vip == true", scope(main_flow, AT)) is False
    assert evaluate("10 if vip else 0", scope(main_flow, AT)) == 0
    assert evaluate("10 if vip else 0", scope(main_flow, AT, vip=True)) == 10


def test_names_and_functions_available(main_flow: Flow) -> None:
    s = scope(main_flow, dt.datetime(2026, 11, 24, 1, 30, tzinfo=dt.UTC), order="AB12")
    assert evaluate("hour", s) == 10  # in the flow's zone, Asia/Tokyo
    assert evaluate("weekday", s) == "tue"
    assert evaluate("today", s) == "2026-11-24"
    assert evaluate("startswith(caller, '+81') and len(order) == 4", s) is True
    assert evaluate("lower(order) + upper('x')", s) == "ab12X"
    assert evaluate("int('42') + 1", s) == 43
    assert check_syntax("startswith(caller, '+81') and open('office')") == []


@pytest.mark.parametrize(
    ("at", "is_open"),
    [
        (dt.datetime(2026, 11, 24, 9, 0, tzinfo=JST), True),  # Tuesday, opening minute
        (dt.datetime(2026, 11, 24, 17, 59, tzinfo=JST), True),
        (dt.datetime(2026, 11, 24, 18, 0, tzinfo=JST), False),  # closing time is closed
        (dt.datetime(2026, 11, 24, 8, 59, tzinfo=JST), False),
        (dt.datetime(2026, 11, 24, 0, 30, tzinfo=dt.UTC), True),  # 09:30 in Tokyo
        (dt.datetime(2026, 11, 23, 23, 30, tzinfo=dt.UTC), False),  # 08:30 in Tokyo
        (dt.datetime(2026, 11, 28, 10, 0, tzinfo=JST), False),  # Saturday
        (dt.datetime(2026, 11, 23, 10, 0, tzinfo=JST), False),  # 勤労感謝の日, a Monday
        (dt.datetime(2026, 12, 31, 10, 0, tzinfo=JST), False),  # configured closed day
        (dt.datetime(2027, 1, 1, 10, 0, tzinfo=JST), False),  # 元日
        (dt.datetime(2027, 1, 4, 10, 0, tzinfo=JST), True),  # first working day
    ],
)
def test_open_office_in_asia_tokyo(main_flow: Flow, at: dt.datetime, is_open: bool) -> None:
    assert evaluate("open('office')", scope(main_flow, at)) is is_open


def test_holiday_and_closed(main_flow: Flow) -> None:
    labor_thanksgiving = dt.datetime(2026, 11, 23, 10, 0, tzinfo=JST)
    assert evaluate("holiday('JP')", scope(main_flow, labor_thanksgiving)) is True
    assert evaluate("holiday()", scope(main_flow, labor_thanksgiving)) is True
    assert evaluate("holiday('JP')", scope(main_flow, AT)) is False
    # the evening before in New York is already the holiday in Tokyo
    new_york = dt.timezone(dt.timedelta(hours=-5))
    assert evaluate(
        "holiday('JP')", scope(main_flow, dt.datetime(2026, 11, 22, 20, 0, tzinfo=new_york))
    )
    assert evaluate("holiday('US')", scope(main_flow, labor_thanksgiving)) is False
    new_years_eve = dt.datetime(2026, 12, 31, 10, 0, tzinfo=JST)
    assert evaluate("closed('office')", scope(main_flow, new_years_eve)) is True
    assert evaluate("holiday('JP')", scope(main_flow, new_years_eve)) is False
    assert evaluate("closed('office')", scope(main_flow, labor_thanksgiving)) is True
    assert evaluate("closed('office')", scope(main_flow, AT)) is False


def test_runtime_expression_errors_are_expression_errors(main_flow: Flow) -> None:
    for expression in ("int('x')", "len(nothing)", "open('x')", "holiday('XX')", "1 / 0"):
        with pytest.raises(ExpressionError):
            evaluate(expression, scope(main_flow, AT))


def test_a_queue_with_its_own_hours_names_hours_that_exist(context: CheckContext) -> None:
    text = (
        "start: a\nnodes:\n  a:\n    type: queue\n    queue: billing\n"
        "    hours: billing_hours\n    when_closed: bye\n" + BYE
    )
    problem = only_problem(text, context)
    assert (problem.line, problem.column) == (6, 12)
    assert "no hours named 'billing_hours'" in problem.message


def test_queue_hours_need_a_place_to_go_when_closed(context: CheckContext) -> None:
    text = (
        "start: a\nhours:\n  h: {weekly: {mon-fri: '09:00-17:00'}}\nnodes:\n  a:\n"
        "    type: queue\n    queue: billing\n    hours: h\n"
    )
    with pytest.raises(FlowInvalid) as raised:
        flow_problems(text, context)
    assert "hours and when_closed go together" in str(raised.value)
