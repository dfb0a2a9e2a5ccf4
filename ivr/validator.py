"""Checks that need the whole flow: transitions, reachability, loops, files, queues, hours."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ivr import model as m
from ivr.expressions import check_syntax, holiday_countries_used, hours_used
from ivr.hours import UnknownTimeZone, supported_country, zone
from ivr.loader import FlowInvalid, FlowProblem, ParsedFlow, Path_, Positions, load_flow_file

WAITING_TYPES = (m.MenuNode, m.GatherNode, m.VoicemailNode)
"""Nodes that stop and wait for the caller, so a loop through them is a retry, not a spin."""
CHANGING_TYPES = (m.SetNode, m.HttpNode, m.SubflowNode)
"""Nodes that can change the variables a branch tests, so a loop through them may end."""


class _Reporter(Protocol):
    def __call__(self, path: Path_, message: str, *, at_value: bool = False) -> None: ...


@dataclass(frozen=True)
class CheckContext:
    """What a flow may refer to outside itself."""

    flows_dir: Path
    known_queues: frozenset[str] | None = None
    known_flows: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def for_directory(cls, flows_dir: Path, queues: Iterable[str] | None) -> CheckContext:
        names = frozenset(path.stem for path in flows_dir.glob("*.yaml"))
        return cls(
            flows_dir=flows_dir,
            known_queues=frozenset(queues) if queues is not None else None,
            known_flows=names,
        )


def _yaml_path(field_path: str) -> Path_:
    """'rules.0.next' -> ('rules', 0, 'next'): list items are numbered, mapping keys are text."""
    parts: list[str | int] = []
    for part in field_path.split("."):
        parts.append(int(part) if parts and parts[-1] == "rules" else part)
    return tuple(parts)


def _reachable(graph: dict[str, list[str]], start: str, stop: set[str]) -> set[str]:
    """Nodes reachable from start (itself included), not going through nodes in stop."""
    found = {start}
    frontier = [start]
    while frontier:
        for target in graph.get(frontier.pop(), []):
            if target not in found and target not in stop and target in graph:
                found.add(target)
                frontier.append(target)
    return found


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (flows can be long chains)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child_index = work.pop()
            if child_index == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = graph.get(node, [])
            if child_index < len(children):
                work.append((node, child_index + 1))
                child = children[child_index]
                if child not in graph:
                    continue
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def check(parsed: ParsedFlow, context: CheckContext) -> list[FlowProblem]:
    flow, positions, file = parsed.flow, parsed.positions, parsed.file
    problems: list[FlowProblem] = []

    def report(path: Path_, message: str, *, at_value: bool = False) -> None:
        line, column = positions.of_value(path) if at_value else positions.of_key(path)
        problems.append(FlowProblem(file, line, column, message))

    graph: dict[str, list[str]] = {}
    for name, node in flow.nodes.items():
        graph[name] = []
        for field_path, target in m.transitions(node):
            if target not in flow.nodes:
                report(
                    ("nodes", name, *_yaml_path(field_path)),
                    f"node {name!r}: {field_path} goes to node {target!r}, which does not exist",
                    at_value=True,
                )
            else:
                graph[name].append(target)

    if flow.start not in flow.nodes:
        report(("start",), f"start node {flow.start!r} does not exist", at_value=True)
    else:
        reached = _reachable(graph, flow.start, set())
        covered: set[str] = set()
        for name in flow.nodes:
            if name in reached or name in covered:
                continue
            # one message per unreachable region, not one per node behind a misspelt `next`
            behind = _reachable(graph, name, reached | covered) - {name}
            covered |= behind | {name}
            more = f" (nor can the {len(behind)} nodes it leads to)" if behind else ""
            report(("nodes", name), f"node {name!r} can never be reached from {flow.start!r}{more}")

    for component in _strongly_connected(graph):
        members = set(component)
        looping = len(component) > 1 or component[0] in graph[component[0]]
        if not looping:
            continue
        ordered = [name for name in flow.nodes if name in members]
        exits = any(t not in members for name in members for t in graph[name])
        ends = any(isinstance(flow.nodes[name], m.TransferNode | m.QueueNode) for name in members)
        first = ordered[0]
        loop_text = " -> ".join([*ordered, first])
        if not exits and not ends:
            menus = [name for name in ordered if isinstance(flow.nodes[name], m.MenuNode)]
            if menus:
                report(
                    ("nodes", menus[0]),
                    f"menu {menus[0]!r} has no way out: every option and on_failure lead "
                    f"back into {loop_text}",
                )
            else:
                report(("nodes", first), f"loop with no exit: {loop_text}")
        elif not any(
            isinstance(flow.nodes[name], WAITING_TYPES + CHANGING_TYPES) for name in members
        ):
            report(
                ("nodes", first),
                f"loop with no caller input repeats forever: {loop_text} "
                "(nothing inside it waits for the caller or changes what its branches test)",
            )

    for name, node in flow.nodes.items():
        _check_node(name, node, flow, context, report, positions)

    for hours_name, hours in flow.hours.items():
        if hours.timezone:
            try:
                zone(hours.timezone)
            except UnknownTimeZone as exc:
                report(("hours", hours_name, "timezone"), str(exc), at_value=True)
        if hours.holidays and not supported_country(hours.holidays):
            report(
                ("hours", hours_name, "holidays"),
                f"no public holiday calendar for {hours.holidays!r} (use a country code like JP)",
                at_value=True,
            )
    try:
        zone(flow.timezone)
    except UnknownTimeZone as exc:
        report(("timezone",), str(exc), at_value=True)
    if flow.recording is not None and flow.recording.mode == "never" and flow.recording.consent:
        report(
            ("recording", "consent"),
            "recording: a consent announcement for calls that are never recorded (mode is never)",
        )
    if flow.fallback.queue:
        _check_queue(flow.fallback.queue, ("fallback", "queue"), context, report)
    if flow.fallback.prompt is not None:
        _check_prompt(flow.fallback.prompt, ("fallback", "prompt"), context, report, positions)
    return problems


def _check_queue(queue: str, path: Path_, context: CheckContext, report: _Reporter) -> None:
    if context.known_queues is not None and queue not in context.known_queues:
        known = ", ".join(sorted(context.known_queues)) or "none configured"
        report(path, f"unknown queue {queue!r} (configured: {known})", at_value=True)


def _prompt_missing(source: str, context: CheckContext) -> bool:
    if source.startswith(("http://", "https://")):
        return False
    candidate = (context.flows_dir / source).resolve()
    inside = context.flows_dir.resolve() in candidate.parents
    return not inside or not candidate.is_file()


def _check_prompt(
    prompt: m.Prompt,
    path: Path_,
    context: CheckContext,
    report: _Reporter,
    positions: Positions,
) -> None:
    """Every play: file of every part, reported at the line of that part's file."""
    for index, part in enumerate(prompt.parts):
        part_path = (*path, index) if (*path, index) in positions.keys else path
        for language, source in (part.play or {}).items():
            if not _prompt_missing(source, context):
                continue
            play_path: Path_ = (*part_path, "play")
            if (*play_path, language) in positions.keys:
                play_path = (*play_path, language)
            shown = "" if language == "*" else f" ({language})"
            report(
                play_path,
                f"prompt file {source!r}{shown} does not exist under {context.flows_dir}",
                at_value=True,
            )


def _check_node(
    name: str,
    node: m.Node,
    flow: m.Flow,
    context: CheckContext,
    report: _Reporter,
    positions: Positions,
) -> None:
    base: Path_ = ("nodes", name)
    for prompt_field in ("prompt", "text", "invalid_prompt", "timeout_prompt"):
        prompt = getattr(node, prompt_field, None)
        if isinstance(prompt, m.Prompt):
            _check_prompt(prompt, (*base, prompt_field), context, report, positions)
    if isinstance(node, m.PlayNode) and _prompt_missing(node.file, context):
        report((*base, "file"), f"prompt file {node.file!r} does not exist", at_value=True)
    if isinstance(node, m.QueueNode):
        _check_queue(node.queue, (*base, "queue"), context, report)
        if node.hours is not None and node.hours not in flow.hours:
            report(
                (*base, "hours"),
                f"node {name!r}: no hours named {node.hours!r} in this flow",
                at_value=True,
            )
    if isinstance(node, m.SubflowNode | m.SurveyNode) and node.flow not in context.known_flows:
        report(
            (*base, "flow"),
            f"flow {node.flow!r} does not exist in {context.flows_dir}",
            at_value=True,
        )
    expressions: list[tuple[Path_, str]] = []
    if isinstance(node, m.BranchNode):
        expressions += [
            ((*base, "rules", index, "when"), rule.when) for index, rule in enumerate(node.rules)
        ]
    if isinstance(node, m.SetNode):
        expressions += [
            ((*base, "vars", key), value)
            for key, value in node.vars.items()
            if isinstance(value, str)
        ]
    if isinstance(node, m.QueueNode) and isinstance(node.priority, str):
        expressions.append(((*base, "priority"), node.priority))
    for path, expression in expressions:
        for problem in check_syntax(expression):
            report(path, f"node {name!r}: {problem}", at_value=True)
        for hours_name in hours_used(expression):
            if hours_name not in flow.hours:
                report(
                    path,
                    f"node {name!r}: no hours named {hours_name!r} in this flow",
                    at_value=True,
                )
        for country in holiday_countries_used(expression):
            if not supported_country(country):
                report(
                    path,
                    f"node {name!r}: no public holiday calendar for {country!r} "
                    "(use a country code like JP)",
                    at_value=True,
                )
    if isinstance(node, m.MenuNode):
        for key in node.options:
            if len(key) != 1:
                report((*base, "options", key), f"node {name!r}: option {key!r} must be one key")


def check_file(path: Path, context: CheckContext, display: str | None = None) -> ParsedFlow:
    """Parse and check; raise FlowInvalid with every problem found."""
    parsed = load_flow_file(path, display)
    problems = check(parsed, context)
    if problems:
        raise FlowInvalid(problems)
    return parsed
