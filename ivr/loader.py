"""YAML text -> a validated Flow, or every mistake as `file:line:col: message`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from ivr.model import KEYPAD_KEY, NODE_NAME, NODE_TYPES, VARIABLE_NAME, Flow, Node

MAX_FLOW_BYTES = 512 * 1024
"""A hand-written flow is a few KiB; refuse anything that is clearly not one."""
MAX_YAML_NODES = 100_000
"""Values in a flow once aliases are expanded: stops a small file that expands enormously."""
NAME_RULES = {
    NODE_NAME: "use ASCII letters, digits, _, . or - (starting with a letter or _, at most 64); "
    "put other text in prompts",
    VARIABLE_NAME: "use ASCII letters, digits and _ (starting with a letter or _, at most 64)",
}

Position = tuple[int, int]
Path_ = tuple[str | int, ...]

node_adapter: TypeAdapter[Node] = TypeAdapter(Node)


@dataclass(frozen=True, order=True)
class FlowProblem:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class FlowInvalid(Exception):
    """The flow has mistakes; the published version (if any) keeps serving."""

    def __init__(self, problems: Iterable[FlowProblem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


@dataclass
class Positions:
    """Where each key and value of the YAML document starts (1-based line and column)."""

    keys: dict[Path_, Position] = field(default_factory=dict)
    values: dict[Path_, Position] = field(default_factory=dict)

    def of_key(self, path: Path_) -> Position:
        for length in range(len(path), 0, -1):
            if path[:length] in self.keys:
                return self.keys[path[:length]]
        return (1, 1)

    def of_value(self, path: Path_) -> Position:
        if path in self.values:
            return self.values[path]
        return self.of_key(path)


def _mark(node: yaml.Node) -> Position:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _TooLarge(Exception):
    pass


def _collect(
    node: yaml.Node,
    path: Path_,
    positions: Positions,
    duplicates: list[tuple[Path_, Position]],
    budget: list[int],
) -> None:
    """Record positions; note duplicate keys; count values so alias bombs are refused."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge
    positions.values[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*path, key)
            if key in seen:
                duplicates.append((child, _mark(key_node)))
            seen.add(key)
            positions.keys[child] = _mark(key_node)
            _collect(value_node, child, positions, duplicates, budget)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            positions.keys[child] = _mark(item)
            _collect(item, child, positions, duplicates, budget)


@dataclass
class ParsedFlow:
    """A flow that validated, with what the graph checks need to point at lines."""

    name: str
    file: str
    flow: Flow
    positions: Positions
    source: str


def read_flow_text(path: Path, display: str | None = None) -> str:
    """The file's text; refused (as `display`, default the path) if too large or not UTF-8."""
    shown = display or str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FlowInvalid([FlowProblem(shown, 1, 1, f"cannot read: {exc.strerror}")]) from None
    if size > MAX_FLOW_BYTES:
        raise FlowInvalid(
            [FlowProblem(shown, 1, 1, f"file is {size} bytes; a flow may be {MAX_FLOW_BYTES}")]
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FlowInvalid([FlowProblem(shown, 1, 1, f"cannot read: {exc.strerror}")]) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise FlowInvalid(
            [
                FlowProblem(
                    shown,
                    line,
                    column,
                    f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8",
                )
            ]
        ) from None


def _describe(error: ErrorDetails, path: Path_ = ()) -> str:
    """A message in the flow's own words; `path` is where in the YAML (for the field's name)."""
    kind = error["type"]
    if kind == "missing":
        return f"missing required field {str(error['loc'][-1])!r}"
    if kind == "extra_forbidden":
        return f"unknown field {str(error['loc'][-1])!r}"
    if kind == "union_tag_invalid":
        found = error.get("ctx", {}).get("tag", "?")
        return f"unknown node type {found!r} (known: {', '.join(NODE_TYPES)})"
    if kind == "union_tag_not_found":
        return "missing required field 'type'"
    is_key = bool(error["loc"]) and error["loc"][-1] == "[key]"
    pattern = str(error.get("ctx", {}).get("pattern", ""))
    if kind == "string_pattern_mismatch" and pattern in NAME_RULES:
        if pattern == VARIABLE_NAME:
            what = "variable name"
        elif is_key and len(path) == 2 and path[0] in ("nodes", "hours"):
            what = "node name" if path[0] == "nodes" else "hours name"
        else:
            what = "name"
        if not is_key and path:
            what = f"{'.'.join(str(part) for part in path)}: {what}"
        return f"{what} {error['input']!r} is not allowed: {NAME_RULES[pattern]}"
    if kind == "string_pattern_mismatch" and pattern == KEYPAD_KEY:
        return f"options: option {error['input']!r} is not a keypad key (0-9, * or #)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "string_type" and isinstance(error.get("input"), bool):
        message += " (YAML reads an unquoted yes/no/on/off as true/false: quote it)"
    field_path = path[:-1] if is_key else path
    if field_path:
        message = f"{'.'.join(str(part) for part in field_path)}: {message}"
    return message


def _about_value(error: ErrorDetails) -> bool:
    """Point at the value for a wrong value; at the key for a missing, unknown or bad key."""
    structural = ("missing", "extra_forbidden", "union_tag_invalid", "union_tag_not_found")
    return error["type"] not in structural and error["loc"][-1:] != ("[key]",)


def locate(text: str) -> Positions:
    """Where each key and value of a YAML text starts; empty if it does not parse."""
    positions = Positions()
    try:
        document = yaml.compose(text, Loader=yaml.SafeLoader)
        if document is not None:
            _collect(document, (), positions, [], [MAX_YAML_NODES])
    except (yaml.YAMLError, _TooLarge):
        return Positions()
    return positions


def _yaml_problem(exc: yaml.MarkedYAMLError, file: str) -> FlowProblem:
    """Point at the problem; when it is only found at the end of the file (an unclosed
    quote or bracket), point at where the unclosed thing starts instead."""
    mark = exc.problem_mark or exc.context_mark
    message = f"YAML: {exc.problem}"
    at_end = "end of stream" in str(exc.problem) or "<stream end>" in str(exc.problem)
    if at_end and exc.context_mark is not None:
        mark = exc.context_mark
        message = f"YAML: {exc.context} that is never closed ({exc.problem})"
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    return FlowProblem(file, line, column, message)


def _user_path(loc: tuple[Any, ...], data: Any) -> Path_:
    """Drop the parts pydantic adds (union tags, the prompt wrapper) so the path is the YAML's."""
    path: list[str | int] = []
    cursor: Any = data
    for part in loc:
        if isinstance(cursor, dict) and str(part) in {str(key) for key in cursor}:
            key = next(k for k in cursor if str(k) == str(part))
            path.append(str(key))
            cursor = cursor[key]
        elif isinstance(cursor, list) and isinstance(part, int) and part < len(cursor):
            path.append(part)
            cursor = cursor[part]
    return tuple(path)


def parse_flow(text: str, file: str, name: str | None = None) -> ParsedFlow:
    """Validate everything the YAML alone can tell; raise FlowInvalid with every problem."""
    if len(text.encode("utf-8")) > MAX_FLOW_BYTES:
        raise FlowInvalid(
            [FlowProblem(file, 1, 1, f"a flow may be at most {MAX_FLOW_BYTES} bytes")]
        )
    try:
        document = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise FlowInvalid([_yaml_problem(exc, file)]) from None
    except yaml.YAMLError as exc:
        raise FlowInvalid([FlowProblem(file, 1, 1, f"YAML: {exc}")]) from None
    if document is None:
        raise FlowInvalid(
            [FlowProblem(file, 1, 1, "the file is empty: a flow is a mapping with start and nodes")]
        )
    if not isinstance(document, yaml.MappingNode):
        found = "a list" if isinstance(document, yaml.SequenceNode) else "a single value"
        line, column = _mark(document)
        raise FlowInvalid(
            [
                FlowProblem(
                    file, line, column, f"a flow is a mapping with start and nodes, not {found}"
                )
            ]
        )
    positions = Positions()
    duplicates: list[tuple[Path_, Position]] = []
    try:
        _collect(document, (), positions, duplicates, [MAX_YAML_NODES])
    except _TooLarge:
        raise FlowInvalid(
            [
                FlowProblem(
                    file, 1, 1, f"more than {MAX_YAML_NODES} values once aliases are expanded"
                )
            ]
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        raise FlowInvalid([_yaml_problem(exc, file)]) from None
    except yaml.YAMLError as exc:
        raise FlowInvalid([FlowProblem(file, 1, 1, f"YAML: {exc}")]) from None
    if not isinstance(data, dict):
        raise FlowInvalid([FlowProblem(file, 1, 1, "a flow is a mapping with start and nodes")])

    problems: list[FlowProblem] = [
        FlowProblem(
            file,
            line,
            column,
            f"{'.'.join(str(part) for part in path)}: "
            f"{str(path[-1])!r} is given twice (the first would be silently ignored)",
        )
        for path, (line, column) in duplicates
    ]

    def report(path: Path_, message: str, *, at_value: bool = False) -> None:
        line, column = positions.of_value(path) if at_value else positions.of_key(path)
        problems.append(FlowProblem(file, line, column, message))

    nodes = data.get("nodes")
    if isinstance(nodes, dict):
        for node_name, node_data in nodes.items():
            try:
                node_adapter.validate_python(node_data)
            except ValidationError as exc:
                for error in exc.errors():
                    loc = error["loc"]
                    if loc and isinstance(node_data, dict) and loc[0] == node_data.get("type"):
                        loc = loc[1:]  # the union tag pydantic adds, which can look like a field
                    inner = _user_path(loc, node_data)
                    path = ("nodes", str(node_name), *inner)
                    report(
                        path,
                        f"node {str(node_name)!r}: {_describe(error, inner)}",
                        at_value=_about_value(error),
                    )
    try:
        flow = Flow.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            if len(loc) >= 2 and loc[0] == "nodes" and loc[2:] != ("[key]",):
                continue  # reported node by node above, with clearer paths
            path = _user_path(loc, data)
            report(path, _describe(error, path), at_value=_about_value(error))
        raise FlowInvalid(problems) from None
    if problems:
        raise FlowInvalid(problems)
    return ParsedFlow(
        name=name or Path(file).stem, file=file, flow=flow, positions=positions, source=text
    )


def load_flow_file(path: Path, display: str | None = None) -> ParsedFlow:
    return parse_flow(read_flow_text(path, display), display or str(path), name=path.stem)
