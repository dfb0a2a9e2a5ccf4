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


def run_case(flows: FlowSource, flow_name: str, case: Case, file: str) -> CaseResult:
    result = CaseResult(file=file, name=case.name)
    simulation = Simulation(make_engine(flows, case.at, case.http), flow_name, case.caller)
    turn = simulation.start()
    for index, text in enumerate(case.inputs, start=1):
        if waiting_for(turn) is None:
            result.failures.append(
                f"input {index} ({text!r}) given, but the call had already ended"
            )
            break
        turn = simulation.answer(parse_input(text))
    result.path, result.heard = simulation.path, simulation.heard
    expect = case.expect
    if expect.path is not None and expect.path != result.path:
        result.failures.append(f"path: expected {expect.path}, got {result.path}")
    position = 0
    for wanted in expect.heard:
        found = next(
            (i for i in range(position, len(result.heard)) if wanted in result.heard[i]), None
        )
        if found is None:
            result.failures.append(
                f"heard: {wanted!r} not heard (after prompt {position}); heard {result.heard}"
            )
            break
        position = found + 1
    outcome = turn.state.outcome
    if expect.outcome is not None:
        if waiting_for(turn) is not None and outcome is None:
            result.failures.append(f"outcome: the call is still waiting for {waiting_for(turn)}")
        elif not _matches(expect.outcome, outcome or {}):
            result.failures.append(f"outcome: expected {expect.outcome}, got {outcome}")
    for variable, value in expect.variables.items():
        actual = turn.state.variables.get(variable)
        if not _matches(value, actual):
            result.failures.append(f"variables.{variable}: expected {value!r}, got {actual!r}")
    return result


def run_file(flows: FlowSource, path: Path, display: str | None = None) -> list[CaseResult]:
    shown = display or str(path)
    tests = load_tests(path, shown)
    return [run_case(flows, tests.flow, case, shown) for case in tests.cases]
