"""`kokan flows …`: check, simulate, test, publish, roll back, list versions, print the schema."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Any

import click

from ivr import publishing
from ivr.engine import Engine, Environment
from ivr.flowtests import CaseResult, load_tests, run_case, run_file
from ivr.http_fetch import fetch_json
from ivr.loader import FlowInvalid, read_flow_text
from ivr.model import Flow
from ivr.simulator import (
    Simulation,
    canned_fetcher,
    describe,
    outcome_text,
    parse_input,
    parse_moment,
    waiting_for,
)
from ivr.sources import DirectoryFlows
from ivr.validator import CheckContext, check_file
from kokan.config import LoadedConfig, Settings
from kokan.db import Database

EXIT_PROBLEMS = 1
"""Mistakes in a flow or failing flow tests."""


def _loaded(ctx: click.Context) -> LoadedConfig:
    from kokan.cli import load_config  # the CLI root owns config loading and --config

    return load_config(ctx)


def _settings(ctx: click.Context) -> Settings:
    return _loaded(ctx).settings


def _queues(settings: Settings) -> frozenset[str]:
    return frozenset(settings.queues)


def _flow_files(settings: Settings, given: tuple[Path, ...]) -> list[Path]:
    if given:
        return list(given)
    return sorted(settings.flows_dir.glob("*.yaml"))


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _flows_dir_of(path: Path, settings: Settings) -> Path:
    return path.parent if path.parent != Path() else settings.flows_dir


@click.group("flows")
def flows() -> None:
    """Call flows: check, simulate, test, publish and roll back."""


@flows.command("check")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def flows_check(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Check flows (default: every flow in the flows folder); list every mistake as file:line:col."""
    settings = _settings(ctx)
    failed = False
    paths = _flow_files(settings, files)
    if not paths:
        click.echo(f"kokan: no flows in {settings.flows_dir}", err=True)
        sys.exit(EXIT_PROBLEMS)
    for path in paths:
        context = CheckContext.for_directory(_flows_dir_of(path, settings), _queues(settings))
        try:
            check_file(path, context, _display(path))
        except FlowInvalid as exc:
            failed = True
            for problem in exc.problems:
                click.echo(str(problem))
            continue
        click.echo(f"{_display(path)}: ok")
    if failed:
        sys.exit(EXIT_PROBLEMS)


def _answers(pairs: tuple[str, ...]) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for pair in pairs:
        url, separator, body = pair.partition("=")
        if not separator:
            raise click.BadParameter(f"{pair!r}: give URL=JSON", param_hint="--http-answer")
        try:
            answers[url] = json.loads(body)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(
                f"{url}: not JSON ({exc})", param_hint="--http-answer"
            ) from None
    return answers


@flows.command("simulate")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--from", "caller", default="+819012345678", show_default=True, help="caller's number"
)
@click.option("--to", "called", default="+81312345678", show_default=True, help="number called")
@click.option(
    "--at", "at", default=None, help="the clock, e.g. 2026-12-31T20:00+09:00 (default: now)"
)
@click.option("--inputs", default=None, help="answers without prompting: 1,2,#,timeout,speech:はい")
@click.option(
    "--http-answer",
    "http_answers",
    multiple=True,
    help="URL=JSON: answer the http node with this instead of fetching",
)
@click.pass_context
def flows_simulate(
    ctx: click.Context,
    file: Path,
    caller: str,
    called: str,
    at: str | None,
    inputs: str | None,
    http_answers: tuple[str, ...],
) -> None:
    """Walk a pretend call through a flow in the terminal."""
    import datetime as dt

    settings = _settings(ctx)
    try:
        moment = parse_moment(at) if at else dt.datetime.now(dt.UTC)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None
    answers = _answers(http_answers)
    source = DirectoryFlows(_flows_dir_of(file, settings), _queues(settings))
    try:
        source.load(file.stem)
    except FlowInvalid as exc:
        for problem in exc.problems:
            click.echo(str(problem))
        sys.exit(EXIT_PROBLEMS)
    fetcher = canned_fetcher(answers) if answers else fetch_json
    engine = Engine(source, Environment(now=lambda: moment, fetch_json=fetcher))
    simulation = Simulation(engine, file.stem, caller, called)
    scripted = [item.strip() for item in inputs.split(",")] if inputs is not None else None
    click.echo(f"call from {caller} to {called} at {moment.isoformat()}")
    turn = simulation.start()
    while True:
        for action in turn.actions:
            for line in describe(action):
                click.echo(f"  {line}")
        wanted = waiting_for(turn)
        if wanted is None:
            break
        if scripted is not None:
            if not scripted:
                click.echo("(no more scripted inputs)")
                break
            answer = scripted.pop(0)
            click.echo(f"> {answer}")
        else:
            answer = click.prompt(
                f"{wanted} (keys, speech:words, timeout, record)", default="timeout"
            )
        turn = simulation.answer(parse_input(answer))
    click.echo(f"path: {' -> '.join(simulation.path)}")
    click.echo(f"outcome: {outcome_text(turn.state.outcome)}")


def _test_files(settings: Settings, given: tuple[Path, ...]) -> list[Path]:
    if given:
        return list(given)
    return sorted((settings.flows_dir / "tests").glob("*.yaml"))


def _print_result(result: CaseResult) -> None:
    mark = "PASS" if result.passed else "FAIL"
    click.echo(f"{mark} {result.file}: {result.name}")
    for failure in result.failures:
        click.echo(f"     {failure}")


@flows.command("test")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.pass_context
def flows_test(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Run flow tests (default: flows/tests/*.yaml) against the working flow files."""
    settings = _settings(ctx)
    source = DirectoryFlows(settings.flows_dir, _queues(settings))
    paths = _test_files(settings, files)
    if not paths:
        click.echo(f"kokan: no flow tests in {settings.flows_dir / 'tests'}", err=True)
        sys.exit(EXIT_PROBLEMS)
    passed = failed = 0
    for path in paths:
        try:
            results = run_file(source, path, _display(path))
        except FlowInvalid as exc:
            failed += 1
            for problem in exc.problems:
                click.echo(str(problem))
            continue
        for result in results:
            _print_result(result)
            passed, failed = passed + result.passed, failed + (not result.passed)
    click.echo(f"{passed} passed, {failed} failed")
    if failed:
        sys.exit(EXIT_PROBLEMS)


def _database(ctx: click.Context) -> Database:
    from kokan.cli import open_migrated_database

    return open_migrated_database(_loaded(ctx))


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _flow_path(settings: Settings, name_or_file: str) -> Path:
    candidate = Path(name_or_file)
    if candidate.suffix == ".yaml":
        return candidate
    return settings.flows_dir / f"{name_or_file}.yaml"


@flows.command("publish")
@click.argument("flows_given", metavar="FLOW...", nargs=-1, required=True)
@click.option("--by", default=None, help="who publishes (default: cli:<your user name>)")
@click.option("--skip-tests", is_flag=True, help="publish even if the flow's tests fail")
@click.pass_context
def flows_publish(
    ctx: click.Context, flows_given: tuple[str, ...], by: str | None, skip_tests: bool
) -> None:
    """Check a flow (and run its tests), then publish it as a new immutable version."""
    settings = _settings(ctx)
    database = _database(ctx)
    for given in flows_given:
        path = _flow_path(settings, given)
        name, display = path.stem, _display(path)
        try:
            source_text = read_flow_text(path, display)
        except FlowInvalid as exc:
            for problem in exc.problems:
                click.echo(str(problem))
            sys.exit(EXIT_PROBLEMS)
        flows_dir = _flows_dir_of(path, settings)
        context = CheckContext.for_directory(flows_dir, _queues(settings))
        try:  # mistakes first, as file:line:col; a broken flow's tests would only say "fail"
            publishing.validate_source(name, source_text, display, context)
        except FlowInvalid as exc:
            for problem in exc.problems:
                click.echo(str(problem))
            click.echo(f"kokan: {name}: not published; the active version keeps serving")
            sys.exit(EXIT_PROBLEMS)
        if not skip_tests and not _flow_tests_pass(settings, flows_dir, name):
            click.echo(f"kokan: {name}: flow tests fail; not published (--skip-tests overrides)")
            sys.exit(EXIT_PROBLEMS)
        try:
            with database.unit_of_work() as session:
                published = publishing.publish(
                    session, name, source_text, display, context, _who(by), None, skip_tests
                )
        except FlowInvalid as exc:
            for problem in exc.problems:
                click.echo(str(problem))
            click.echo(f"kokan: {name}: not published; the active version keeps serving")
            sys.exit(EXIT_PROBLEMS)
        click.echo(f"published {name} version {published.version} ({published.sha256[:12]})")


def _flow_tests_pass(settings: Settings, flows_dir: Path, name: str) -> bool:
    """Run the tests written for this flow (files in tests/ whose `flow:` names it)."""
    source = DirectoryFlows(flows_dir, _queues(settings))
    ok = True
    for path in sorted((flows_dir / "tests").glob("*.yaml")):
        try:
            tests = load_tests(path, _display(path))
            if tests.flow != name:
                continue
            results = [run_case(source, name, case, _display(path)) for case in tests.cases]
        except FlowInvalid as exc:
            for problem in exc.problems:
                click.echo(str(problem))
            return False
        for result in results:
            if not result.passed:
                _print_result(result)
                ok = False
    return ok


@flows.command("rollback")
@click.argument("name")
@click.option("--to", "to_version", type=int, default=None, help="version (default: the previous)")
@click.option("--by", default=None)
@click.pass_context
def flows_rollback(ctx: click.Context, name: str, to_version: int | None, by: str | None) -> None:
    """Make an earlier published version the one new calls use."""
    database = _database(ctx)
    with database.unit_of_work() as session:
        version = publishing.rollback(session, name, _who(by), to_version)
    click.echo(f"{name} now serves version {version}")


@flows.command("versions")
@click.argument("name")
@click.pass_context
def flows_versions(ctx: click.Context, name: str) -> None:
    """List a flow's published versions; the active one is marked with *."""
    database = _database(ctx)
    with database.sessions() as session:
        active = publishing.active_version(session, name)
        rows = publishing.versions(session, name)
        if not rows:
            raise publishing.FlowNotPublished(f"flow {name!r} has never been published")
        for row in rows:
            mark = "*" if row.version == active else " "
            click.echo(
                f"{mark} v{row.version}  {row.published_at:%Y-%m-%d %H:%M:%S}Z  "
                f"{row.published_by}  {row.sha256[:12]}"
            )


@flows.command("schema")
def flows_schema() -> None:
    """Print the JSON Schema of the flow language, for editors that validate as you type."""
    schema = Flow.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Kokan call flow"
    click.echo(json.dumps(schema, ensure_ascii=False, indent=2))
