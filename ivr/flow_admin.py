"""The flow editor's rules: list, show, check, diff, test, simulate, publish, roll back, audit.

Each operation takes a Session and the Settings, so the JSON API stays a thin shell and the
rules are the ones `kokan flows` uses: the loader and validator check a source, the flow
tests and the simulator run it, publishing stores versions. What differs from the command
line is where the flow comes from: the text in the editor, not a file. The other flows a
call may reach (subflows, surveys) are what a live call would reach: their active published
version, else their working file.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr import publishing
from ivr.flowtests import CaseResult, load_tests, run_case
from ivr.loader import MAX_FLOW_BYTES, FlowInvalid, FlowProblem, parse_flow, read_flow_text
from ivr.model import Flow
from ivr.models import FlowVersion
from ivr.simulator import (
    SIMULATED_CALLED,
    Simulation,
    Transcript,
    make_engine,
    outcome_text,
    parse_moment,
    run_scripted,
)
from ivr.sources import WORKING_VERSION, DirectoryFlows
from ivr.validator import CheckContext
from kokan.config import Settings
from kokan.errors import InvalidInput, KokanError, NotFound
from tickets.models import AuditEntry

FLOW_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
"""A flow is named by its file's stem and stored in a 64-character column; nothing that
could climb out of flows_dir."""
AUDIT_SUBJECT = publishing.AUDIT_SUBJECT
MAX_AUDIT_ENTRIES = 500
"""The audit page shows recent history; older entries stay in the database."""
DIFF_CONTEXT_LINES = 3
"""The usual unified-diff context: enough to recognise the place in a flow."""


class FlowNotFound(NotFound):
    error_id = "flow-not-found"


class FlowSourceInvalid(KokanError):
    """Carries every problem so the editor can mark each line; nothing was published."""

    error_id = "flow-invalid"
    status = 422

    def __init__(self, name: str, problems: list[FlowProblem]) -> None:
        super().__init__(f"flow {name!r}: {len(problems)} mistake(s); nothing was stored")
        self.problems = problems

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "errors": [problem_json(p) for p in self.problems]}


class FlowTestsFailed(KokanError):
    """Publishing runs the flow's tests first, as `kokan flows publish` does."""

    error_id = "flow-tests-failed"
    status = 422

    def __init__(self, name: str, run: TestRun) -> None:
        super().__init__(
            f"flow {name!r}: {run.failed} flow test(s) fail; nothing was published "
            "(skip_tests overrides)"
        )
        self.run = run

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), **self.run.to_json()}


class FlowTooLarge(KokanError):
    error_id = "flow-too-large"
    status = 413


class SimulationInputInvalid(InvalidInput):
    error_id = "simulation-input-invalid"


def problem_json(problem: FlowProblem) -> dict[str, Any]:
    return {
        "line": problem.line,
        "column": problem.column,
        "message": problem.message,
        "file": problem.file,
    }


def _display(name: str) -> str:
    """Problems name the flow as its file would be named, like `kokan flows check` does."""
    return f"{name}.yaml"


def _limit(source: str) -> None:
    size = len(source.encode("utf-8"))
    if size > MAX_FLOW_BYTES:
        raise FlowTooLarge(f"source: {size} bytes; a flow may be at most {MAX_FLOW_BYTES}")


def _working_file(settings: Settings, name: str) -> Path:
    return settings.flows_dir / f"{name}.yaml"


def _file_names(settings: Settings) -> set[str]:
    return {
        path.stem
        for path in settings.flows_dir.glob("*.yaml")
        if path.is_file() and FLOW_NAME.fullmatch(path.stem)
    }


def require_flow(session: Session, settings: Settings, name: str) -> None:
    """The editor works on flows that exist (a working file or a published version)."""
    if not FLOW_NAME.fullmatch(name) or (
        publishing.active_version(session, name) is None
        and not publishing.versions(session, name)
        and not _working_file(settings, name).is_file()
    ):
        raise FlowNotFound(f"no flow named {name!r}")


def check_context(session: Session, settings: Settings) -> CheckContext:
    """The queues configured and the prompts under flows_dir, as for `kokan flows check`;
    published flows count as known subflows even without a file."""
    base = CheckContext.for_directory(settings.flows_dir, frozenset(settings.queues))
    known = base.known_flows | frozenset(publishing.published_names(session))
    return CheckContext(base.flows_dir, base.known_queues, known)


# ---- reading ----


def version_json(row: FlowVersion, active: int | None) -> dict[str, Any]:
    return {
        "version": row.version,
        "published_at": row.published_at.isoformat(),
        "published_by": row.published_by,
        "active": row.version == active,
        "sha256": row.sha256,
    }


def list_flows(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """Every published flow and every working file, by name."""
    names = sorted(set(publishing.published_names(session)) | _file_names(settings))
    found = []
    for name in names:
        active = publishing.active_version(session, name)
        rows = publishing.versions(session, name)
        found.append(
            {
                "name": name,
                "active_version": active,
                "versions": [version_json(row, active) for row in rows],
                "has_file": _working_file(settings, name).is_file(),
            }
        )
    return found


def _version_row(session: Session, name: str, version: int) -> FlowVersion | None:
    return session.scalar(
        select(FlowVersion).where(FlowVersion.flow == name, FlowVersion.version == version)
    )


def _active_source(session: Session, name: str) -> tuple[int | None, str | None]:
    active = publishing.active_version(session, name)
    if active is None:
        return None, None
    row = _version_row(session, name, active)
    return active, row.source if row is not None else None


def show_flow(session: Session, settings: Settings, name: str) -> dict[str, Any]:
    """The active version's text, or the working file's when the flow was never published."""
    require_flow(session, settings, name)
    active, source = _active_source(session, name)
    origin = "published"
    if source is None:
        origin = "file"
        try:
            source = read_flow_text(_working_file(settings, name), _display(name))
        except FlowInvalid as exc:
            raise FlowSourceInvalid(name, exc.problems) from None
    rows = publishing.versions(session, name)
    return {
        "name": name,
        "active_version": active,
        "source": source,
        "source_from": origin,
        "versions": [version_json(row, active) for row in rows],
    }


def show_version(session: Session, settings: Settings, name: str, version: int) -> dict[str, Any]:
    require_flow(session, settings, name)
    row = _version_row(session, name, version)
    if row is None:
        raise publishing.FlowVersionNotFound(f"flow {name!r} has no version {version}")
    return {**version_json(row, publishing.active_version(session, name)), "source": row.source}


# ---- checking and comparing ----


def validate(session: Session, settings: Settings, name: str, source: str) -> Flow:
    """The loader's and the validator's rules in full; FlowInvalid lists every mistake."""
    _limit(source)
    return publishing.validate_source(
        name, source, _display(name), check_context(session, settings)
    )


def check_source(session: Session, settings: Settings, name: str, source: str) -> list[FlowProblem]:
    require_flow(session, settings, name)
    try:
        validate(session, settings, name, source)
    except FlowInvalid as exc:
        return exc.problems
    return []


def diff_source(session: Session, settings: Settings, name: str, source: str) -> dict[str, Any]:
    """Against the active version; against nothing (every line added) when never published."""
    require_flow(session, settings, name)
    _limit(source)
    active, published = _active_source(session, name)
    before = f"{name}@v{active}" if active is not None else "/dev/null"
    lines = difflib.unified_diff(
        (published or "").splitlines(keepends=True),
        source.splitlines(keepends=True),
        fromfile=before,
        tofile=f"{name} (edited)",
        n=DIFF_CONTEXT_LINES,
    )
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return {"against_version": active, "diff": text, "changed": bool(text)}


# ---- running ----


class EditedFlows:
    """The engine's FlowSource with the editor's text standing in for one flow; the others
    are what a live call would reach (active version, else working file)."""

    def __init__(self, session: Session, settings: Settings, name: str, flow: Flow) -> None:
        self.session = session
        self.name = name
        self.flow = flow
        self.directory = DirectoryFlows(settings.flows_dir, frozenset(settings.queues))
        self._others: dict[str, tuple[int, Flow]] = {}

    def active(self, name: str) -> tuple[int, Flow]:
        if name == self.name:
            return WORKING_VERSION, self.flow
        if name not in self._others:
            active, source = _active_source(self.session, name)
            if active is not None and source is not None:
                flow = parse_flow(source, f"{name}@v{active}", name=name).flow
                self._others[name] = (active, flow)
            else:
                self._others[name] = (WORKING_VERSION, self.directory.load(name))
        return self._others[name]

    def version(self, name: str, version: int) -> Flow:
        return self.active(name)[1]


@dataclass
class TestRun:
    results: list[CaseResult] = field(default_factory=list)
    problems: list[FlowProblem] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(not result.passed for result in self.results) + len(self.problems)

    @property
    def passed(self) -> int:
        return sum(result.passed for result in self.results)

    def to_json(self) -> dict[str, Any]:
        results = [
            {
                "file": result.file,
                "name": result.name,
                "ok": result.passed,
                "message": "; ".join(result.failures),
                "failures": result.failures,
                "path": result.path,
            }
            for result in self.results
        ]
        results += [
            {
                "file": problem.file,
                "name": "(the test file itself)",
                "ok": False,
                "message": str(problem),
                "failures": [str(problem)],
                "path": [],
            }
            for problem in self.problems
        ]
        return {"passed": self.passed, "failed": self.failed, "results": results}


def _run_tests(session: Session, settings: Settings, name: str, flow: Flow) -> TestRun:
    """The tests in flows_dir/tests whose `flow:` names this flow, as publish runs them."""
    flows = EditedFlows(session, settings, name, flow)
    run = TestRun()
    for path in sorted((settings.flows_dir / "tests").glob("*.yaml")):
        shown = f"tests/{path.name}"
        try:
            tests = load_tests(path, shown)
            if tests.flow != name:
                continue
            run.results += [run_case(flows, name, case, shown) for case in tests.cases]
        except FlowInvalid as exc:
            run.problems += exc.problems
    return run


def _checked(session: Session, settings: Settings, name: str, source: str) -> Flow:
    require_flow(session, settings, name)
    try:
        return validate(session, settings, name, source)
    except FlowInvalid as exc:
        raise FlowSourceInvalid(name, exc.problems) from None


def run_tests(session: Session, settings: Settings, name: str, source: str) -> TestRun:
    """A source with mistakes is refused (422) with them: its tests could only say 'fail'."""
    return _run_tests(session, settings, name, _checked(session, settings, name, source))


@dataclass(frozen=True)
class SimulatedCall:
    inputs: list[str]
    caller: str
    called: str = SIMULATED_CALLED
    at: str | None = None
    language: str | None = None
    http: dict[str, Any] = field(default_factory=dict)


def simulate(
    session: Session, settings: Settings, name: str, source: str, call: SimulatedCall
) -> dict[str, Any]:
    """A scripted pretend call. http nodes get only the answers given (unknown URLs fail
    like a 404): the server does not fetch URLs on an editor's behalf."""
    flow = _checked(session, settings, name, source)
    try:
        moment = parse_moment(call.at) if call.at else dt.datetime.now(dt.UTC)
    except ValueError as exc:
        raise SimulationInputInvalid(f"at: {exc}") from None
    if call.language is not None:
        flow = flow.model_copy(update={"language": call.language})
    engine = make_engine(EditedFlows(session, settings, name, flow), moment, call.http)
    try:  # a subflow's working file can be broken though this flow is not
        transcript: Transcript = run_scripted(
            Simulation(engine, name, call.caller, call.called), call.inputs
        )
    except FlowInvalid as exc:
        raise FlowSourceInvalid(name, exc.problems) from None
    return {
        "call": {"from": call.caller, "to": call.called, "at": moment.isoformat()},
        "heard": transcript.heard,
        "lines": transcript.lines,
        "path": transcript.path,
        "outcome": transcript.outcome,
        "outcome_text": outcome_text(transcript.outcome),
        "variables": transcript.variables,
        "waiting_for": transcript.waiting_for,
        "unused_inputs": transcript.unused_inputs,
    }


# ---- changing ----


def publish(
    session: Session,
    settings: Settings,
    name: str,
    source: str,
    by: str,
    note: str | None = None,
    skip_tests: bool = False,
) -> publishing.Published:
    """Mistakes first (422 with each line), then the flow's tests, then a new version."""
    flow = _checked(session, settings, name, source)
    if not skip_tests:
        run = _run_tests(session, settings, name, flow)
        if run.failed:
            raise FlowTestsFailed(name, run)
    try:
        published = publishing.publish(
            session,
            name,
            source,
            _display(name),
            check_context(session, settings),
            by,
            note=note,
            tests_skipped=skip_tests,
        )
    except FlowInvalid as exc:
        raise FlowSourceInvalid(name, exc.problems) from None
    return published


def rollback(session: Session, settings: Settings, name: str, version: int, by: str) -> int:
    require_flow(session, settings, name)
    return publishing.rollback(session, name, by, version)


def audit_entries(session: Session, flow: str | None = None) -> list[dict[str, Any]]:
    """Newest first; `flow` narrows to one flow's changes."""
    query = select(AuditEntry).where(AuditEntry.subject_type == AUDIT_SUBJECT)
    if flow is not None:
        query = query.where(AuditEntry.detail["flow"].as_string() == flow)
    rows = session.scalars(
        query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(MAX_AUDIT_ENTRIES)
    )
    return [
        {
            "at": row.at.isoformat(),
            "actor": row.actor,
            "action": row.action,
            "flow": row.detail.get("flow"),
            "version": row.detail.get("version"),
            "detail": row.detail,
        }
        for row in rows
    ]
