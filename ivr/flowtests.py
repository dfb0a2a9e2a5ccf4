"""Flow tests: `flows/tests/*.yaml` pin a flow's path, prompts and outcome for given callers.

flow: main
cases:
  - name: a Japanese caller reaches billing on a weekday
    from: "+819012345678"
    at: "2026-11-24T10:00+09:00"
    inputs: ["1", "1"]          # keys; "speech:はい"; "timeout"; "record"
    http: {URL: JSON answer}    # what the http node's server answers
    expect:
      path: [welcome, choose_language, ...]
      heard: ["お電話ありがとうございます", ...]   # substrings, in order
      outcome: {kind: queued, queue: billing}   # the keys given must match
      variables: {order_id: "123456"}
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ivr.engine import FlowSource
from ivr.loader import FlowInvalid, FlowProblem, locate, read_flow_text
from ivr.simulator import Simulation, make_engine, parse_input, parse_moment, waiting_for


class Expectation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: list[str] | None = None
    heard: list[str] = Field(default_factory=list)
    outcome: dict[str, Any] | None = None
    variables: dict[str, Any] = Field(default_factory=dict)


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1)
    caller: str = Field(default="+819012345678", alias="from")
    at: dt.datetime
    inputs: list[str] = Field(default_factory=list)
    http: dict[str, Any] = Field(default_factory=dict)
    expect: Expectation

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs_as_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(item) for item in value]
        return value

    @field_validator("at", mode="before")
    @classmethod
    def _aware(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_moment(value)
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            raise ValueError("give a UTC offset, e.g. 2026-12-31T20:00+09:00")
        return value


class TestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flow: str
    cases: list[Case] = Field(min_length=1)


@dataclass
class CaseResult:
    file: str
    name: str
    failures: list[str] = field(default_factory=list)
    path: list[str] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def load_tests(path: Path, display: str | None = None) -> TestFile:
    shown = display or str(path)
    text = read_flow_text(path, shown)
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise FlowInvalid([FlowProblem(shown, line, column, f"YAML: {exc.problem}")]) from None
    try:
        return TestFile.model_validate(data)
    except ValidationError as exc:
        positions = locate(text)
        problems = []
        for error in exc.errors():
            where = tuple(part for part in error["loc"] if isinstance(part, str | int))
            line, column = positions.of_key(where)
            field = ".".join(str(part) for part in where)
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(FlowProblem(shown, line, column, f"{field}: {message}"))
        raise FlowInvalid(problems) from None


def _matches(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict) and isinstance(actual, dict):
        return all(
            key in actual and _matches(value, actual[key]) for key, value in expected.items()
        )
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        return bool(expected == actual)
    return str(expected) == str(actual) if not isinstance(expected, bool) else expected is actual


@dataclass
class Played:
    """What one case's call did, on whichever transport played it: the engine alone
    (`play_case`) or a real SIP call through the SIP driver (tests/test_sip_flowtests.py)."""

    path: list[str]
    heard: list[str]
    outcome: dict[str, Any] | None
    variables: dict[str, Any]
    waiting_for: str | None
    """What the call still waits for after the last input (None: it ended or is queued)."""
    failures: list[str] = field(default_factory=list)
    """What went wrong while playing (an input given after the call had ended)."""


def ended_early(index: int, text: str) -> str:
    return f"input {index} ({text!r}) given, but the call had already ended"


def play_case(flows: FlowSource, flow_name: str, case: Case) -> Played:
    """The case's inputs answered through the engine, one turn each."""
    simulation = Simulation(make_engine(flows, case.at, case.http), flow_name, case.caller)
    turn = simulation.start()
    failures: list[str] = []
    for index, text in enumerate(case.inputs, start=1):
        if waiting_for(turn) is None:
            failures.append(ended_early(index, text))
            break
        turn = simulation.answer(parse_input(text))
    return Played(
        path=simulation.path,
        heard=simulation.heard,
        outcome=turn.state.outcome,
        variables=dict(turn.state.variables),
        waiting_for=waiting_for(turn),
        failures=failures,
    )


def judge(expect: Expectation, played: Played) -> list[str]:
    """The one comparison of a played call with the case's expectation, for every transport."""
    failures = list(played.failures)
    if expect.path is not None and expect.path != played.path:
        failures.append(f"path: expected {expect.path}, got {played.path}")
    position = 0
    for wanted in expect.heard:
        found = next(
            (i for i in range(position, len(played.heard)) if wanted in played.heard[i]), None
        )
        if found is None:
            failures.append(
                f"heard: {wanted!r} not heard (after prompt {position}); heard {played.heard}"
            )
            break
        position = found + 1
    outcome = played.outcome
    if expect.outcome is not None:
        if played.waiting_for is not None and outcome is None:
            failures.append(f"outcome: the call is still waiting for {played.waiting_for}")
        elif not _matches(expect.outcome, outcome or {}):
            failures.append(f"outcome: expected {expect.outcome}, got {outcome}")
    for variable, value in expect.variables.items():
        actual = played.variables.get(variable)
        if not _matches(value, actual):
            failures.append(f"variables.{variable}: expected {value!r}, got {actual!r}")
    return failures


def run_case(flows: FlowSource, flow_name: str, case: Case, file: str) -> CaseResult:
    played = play_case(flows, flow_name, case)
    return CaseResult(
        file=file,
        name=case.name,
        failures=judge(case.expect, played),
        path=played.path,
        heard=played.heard,
    )


def run_file(flows: FlowSource, path: Path, display: str | None = None) -> list[CaseResult]:
    shown = display or str(path)
    tests = load_tests(path, shown)
    return [run_case(flows, tests.flow, case, shown) for case in tests.cases]
