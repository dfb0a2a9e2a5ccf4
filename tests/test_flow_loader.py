"""The loader: YAML text -> a typed Flow, or every mistake as file:LINE:COL: message."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ivr import model as m
from ivr.loader import MAX_FLOW_BYTES, FlowInvalid, FlowProblem, load_flow_file, parse_flow

OK_FLOW = """\
start: hello
nodes:
  hello:
    type: say
    text: こんにちは
    next: bye
  bye:
    type: hangup
"""


def problems(text: str, file: str = "flows/x.yaml") -> list[FlowProblem]:
    with pytest.raises(FlowInvalid) as caught:
        parse_flow(text, file)
    assert caught.value.problems, "FlowInvalid without a problem"
    assert str(caught.value) == "\n".join(str(problem) for problem in caught.value.problems)
    return caught.value.problems


def only_problem(text: str) -> FlowProblem:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def test_a_good_flow_loads_into_typed_nodes() -> None:
    parsed = parse_flow(OK_FLOW, "flows/x.yaml", name="x")
    assert parsed.name == "x"
    assert isinstance(parsed.flow.nodes["hello"], m.SayNode)
    assert isinstance(parsed.flow.nodes["bye"], m.HangupNode)
    assert parsed.positions.of_key(("nodes", "bye")) == (7, 3)


def test_a_problem_prints_as_file_line_col_message() -> None:
    problem = only_problem("start: a\nnodes:\n  a:\n    type: dance\n")
    assert str(problem).startswith("flows/x.yaml:3:3: node 'a': unknown node type 'dance'")


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        pytest.param(
            "start: a\nnodes:\n  a:\n    type: say\n    text: hi\n   next: b\n",
            6,
            4,
            "expected <block end>",
            id="bad indentation",
        ),
        pytest.param(
            "start: a\nnodes:\n  a:\n    type: say\n    text: a: b\n    next: b\n",
            5,
            12,
            "mapping values are not allowed here",
            id="colon inside a value",
        ),
        pytest.param(
            "start: a\nnodes:\n\ta: {type: hangup}\n", 3, 1, "'\\t'", id="tab indentation"
        ),
        pytest.param(
            'start: a\nnodes:\n  a:\n    type: say\n    text: "hi\n    next: b\n',
            5,
            11,
            "quoted scalar that is never closed",
            id="unclosed quote points at its start",
        ),
        pytest.param(
            "start: a\nnodes:\n  a: {type: hangup\n",
            3,
            6,
            "flow mapping that is never closed",
            id="unclosed brace points at its start",
        ),
    ],
)
def test_yaml_syntax_errors_point_at_the_line(
    text: str, line: int, column: int, words: str
) -> None:
    problem = only_problem(text)
    assert (problem.file, problem.line, problem.column) == ("flows/x.yaml", line, column)
    assert problem.message.startswith("YAML: ")
    assert words in problem.message


def test_unknown_node_type_names_it_and_lists_the_known_ones() -> None:
    problem = only_problem(OK_FLOW.replace("type: hangup", "type: hang_up"))
    assert (problem.line, problem.column) == (7, 3)
    assert "node 'bye': unknown node type 'hang_up'" in problem.message
    assert "say, play, menu, gather" in problem.message
    assert "hangup" in problem.message


def test_missing_required_field_points_at_the_node() -> None:
    problem = only_problem(OK_FLOW.replace("    next: bye\n", ""))
    assert (problem.line, problem.column) == (3, 3)
    assert problem.message == "node 'hello': missing required field 'next'"


def test_missing_type_is_a_missing_field() -> None:
    problem = only_problem("start: a\nnodes:\n  a:\n    next: a\n")
    assert (problem.line, problem.message) == (3, "node 'a': missing required field 'type'")


def test_unknown_field_points_at_that_field() -> None:
    problem = only_problem(
        OK_FLOW.replace("    type: hangup\n", "    type: hangup\n    colour: red\n")
    )
    assert (problem.line, problem.column) == (9, 5)
    assert problem.message == "node 'bye': unknown field 'colour'"


def test_unknown_top_level_field() -> None:
    problem = only_problem("start: hello\ncolour: red\n" + OK_FLOW.split("\n", 1)[1])
    assert (problem.line, problem.column, problem.message) == (2, 1, "unknown field 'colour'")


def test_wrong_type_names_the_field_on_its_line() -> None:
    text = """\
start: m
nodes:
  m:
    type: menu
    prompt: どうぞ
    options: {"1": m}
    timeout: soon
    on_failure: m
"""
    problem = only_problem(text)
    assert (problem.line, problem.column) == (7, 14)  # the value, not the key
    assert problem.message.startswith("node 'm': timeout: ")
    assert "integer" in problem.message


def test_an_unquoted_yes_gets_the_yaml_boolean_hint() -> None:
    text = """\
start: a
nodes:
  a:
    type: say
    text:
      ja: はい
      en: yes
    next: b
  b: {type: hangup}
"""
    problem = only_problem(text)
    assert (problem.line, problem.column) == (7, 11)
    assert problem.message.startswith("node 'a': text.en: Input should be a valid string")
    assert "yes/no/on/off as true/false: quote it" in problem.message
    assert parse_flow(text.replace("en: yes", 'en: "yes"'), "x").flow.nodes["a"]


@pytest.mark.parametrize("key", ["x", "10", "'11'", "'#1'", "'A'"])
def test_a_menu_option_that_is_not_one_keypad_key_is_refused(key: str) -> None:
    text = f"""\
start: m
nodes:
  m:
    type: menu
    prompt: hi
    options:
      "1": m
      {key}: m
    on_failure: m
"""
    problem = only_problem(text)
    assert (problem.line, problem.column) == (8, 7)
    assert "is not a keypad key (0-9, * or #)" in problem.message
    assert problem.message.startswith("node 'm': options: option ")


def test_keypad_keys_written_as_yaml_numbers_are_accepted() -> None:
    text = "start: m\nnodes:\n  m:\n    type: menu\n    prompt: hi\n    options:\n"
    text += "      1: m\n      0: m\n      '*': m\n      '#': m\n    on_failure: m\n"
    menu = parse_flow(text, "x").flow.nodes["m"]
    assert isinstance(menu, m.MenuNode)
    assert set(menu.options) == {"1", "0", "*", "#"}


def test_a_file_over_the_size_limit_is_refused_without_parsing(tmp_path: Path) -> None:
    assert MAX_FLOW_BYTES == 512 * 1024
    path = tmp_path / "huge.yaml"
    path.write_text(OK_FLOW + "#" * (MAX_FLOW_BYTES - len(OK_FLOW.encode())) + "\n")
    with pytest.raises(FlowInvalid) as caught:
        load_flow_file(path, display="flows/huge.yaml")
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.column) == ("flows/huge.yaml", 1, 1)
    assert f"a flow may be {MAX_FLOW_BYTES}" in problem.message
    with pytest.raises(FlowInvalid, match="at most 524288 bytes"):
        parse_flow(path.read_text(), "text")


def test_a_file_exactly_at_the_size_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    padding = MAX_FLOW_BYTES - len(OK_FLOW.encode()) - 1
    path.write_text(OK_FLOW + "#" * padding + "\n")
    assert path.stat().st_size == MAX_FLOW_BYTES
    assert load_flow_file(path).flow.start == "hello"


def test_non_utf8_bytes_are_refused_at_their_line(tmp_path: Path) -> None:
    path = tmp_path / "sjis.yaml"
    path.write_bytes(
        OK_FLOW.replace("こんにちは", "")
        .encode()
        .replace(b"    text: \n", b"    text: " + "こんにちは".encode("shift_jis") + b"\n")
    )
    with pytest.raises(FlowInvalid) as caught:
        load_flow_file(path, display="flows/sjis.yaml")
    [problem] = caught.value.problems
    assert (problem.line, problem.column) == (5, 11)
    assert problem.message.startswith("not UTF-8 text")
    assert "save the file as UTF-8" in problem.message


def test_a_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + OK_FLOW.encode())
    assert load_flow_file(path).flow.start == "hello"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_file_is_refused(text: str) -> None:
    problem = only_problem(text)
    assert (problem.line, problem.column) == (1, 1)
    assert problem.message.startswith("the file is empty")


@pytest.mark.parametrize(
    ("text", "found"),
    [("- start\n- nodes\n", "not a list"), ("just words\n", "not a single value")],
)
def test_a_flow_must_be_a_mapping(text: str, found: str) -> None:
    problem = only_problem(text)
    assert problem.message == f"a flow is a mapping with start and nodes, {found}"


def test_nodes_given_as_a_list() -> None:
    problem = only_problem("start: a\nnodes:\n  - a\n")
    assert (problem.line, problem.column) == (3, 3)
    assert problem.message.startswith("nodes: ")


def test_japanese_prompts_load_unchanged() -> None:
    text = OK_FLOW.replace(
        "    type: hangup\n",
        "    type: hangup\n    prompt:\n      ja: 「ありがとう」🙂、またのお電話を!\n      en: Bye\n",
    )
    flow = parse_flow(text, "x").flow
    hello = flow.nodes["hello"]
    assert isinstance(hello, m.SayNode)
    assert hello.text.parts[0].say == {"*": "こんにちは"}
    bye = flow.nodes["bye"]
    assert isinstance(bye, m.HangupNode)
    assert bye.prompt is not None
    assert bye.prompt.parts[0].say == {"ja": "「ありがとう」🙂、またのお電話を!", "en": "Bye"}


def test_a_node_name_with_non_ascii_letters_is_refused_clearly() -> None:
    text = OK_FLOW.replace("  bye:", "  さようなら:").replace("next: bye", "next: さようなら")
    found = problems(text)
    assert [(p.line, p.column) for p in found] == [(6, 11), (7, 3)]
    assert found[1].message.startswith("node name 'さようなら' is not allowed: use ASCII letters")
    assert "put other text in prompts" in found[1].message
    assert found[0].message.startswith("node 'hello': next: name 'さようなら' is not allowed")


def test_a_start_and_variable_with_non_ascii_names_are_refused() -> None:
    text = """\
start: 開始
nodes:
  a:
    type: gather
    prompt: 番号をどうぞ
    into: 番号
    next: a
    on_failure: a
"""
    found = problems(text)
    assert [(p.line, p.message.split(":")[0]) for p in found] == [(1, "start"), (6, "node 'a'")]
    assert "name '開始' is not allowed" in found[0].message
    assert "into: variable name '番号' is not allowed" in found[1].message


def test_several_mistakes_in_one_file_are_all_reported_in_line_order() -> None:
    text = """\
start: a
nodes:
  a:
    type: dance
  b:
    type: hangup
    colour: red
  c:
    type: say
    next: a
  d:
    type: menu
    prompt: hi
    options: {"1": a, x: a}
    timeout: 0
    on_failure: a
"""
    found = problems(text)
    assert [(p.line, p.column) for p in found] == [(3, 3), (7, 5), (8, 3), (14, 23), (15, 14)]
    messages = [p.message for p in found]
    assert "unknown node type 'dance'" in messages[0]
    assert messages[1] == "node 'b': unknown field 'colour'"
    assert messages[2] == "node 'c': missing required field 'text'"
    assert "option 'x' is not a keypad key" in messages[3]
    assert messages[4].startswith("node 'd': timeout: ")


def test_a_key_given_twice_is_reported_not_silently_dropped() -> None:
    text = OK_FLOW + "  hello:\n    type: hangup\n"
    problem = only_problem(text)
    assert (problem.line, problem.column) == (9, 3)
    assert "'hello' is given twice" in problem.message


def test_an_alias_bomb_is_refused_quickly() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for level in "bcdefgh":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]")
    text = "\n".join(lines) + "\nstart: a\nnodes: {a: {type: hangup}}\n"
    began = time.monotonic()
    problem = only_problem(text)
    assert time.monotonic() - began < 5
    assert "aliases are expanded" in problem.message


def test_hours_mistakes_point_at_the_hours() -> None:
    text = (
        "start: a\nhours:\n  office:\n    weekly: {mon-fri: '9-5'}\nnodes:\n  a: {type: hangup}\n"
    )
    problem = only_problem(text)
    assert problem.line == 4
    assert problem.message.startswith("hours.office.weekly: '9-5': hours are 'HH:MM-HH:MM'")


def test_an_unquoted_yes_where_a_number_belongs_is_refused() -> None:
    text = """\
start: q
nodes:
  q:
    type: queue
    queue: billing
    skills: {billing: on}
"""
    problem = only_problem(text)
    assert (problem.line, problem.column) == (6, 23)
    assert problem.message.startswith("node 'q': skills.billing: must be a number, not true/false")
    menu = "start: m\nnodes:\n  m: {type: menu, prompt: p, options: {'1': m}, on_failure: m, retries: yes}\n"
    assert "retries: must be a number" in only_problem(menu).message


def test_a_field_named_like_its_node_type_is_reported_under_its_own_name() -> None:
    problem = only_problem("start: q\nnodes:\n  q:\n    type: queue\n    queue: [billing]\n")
    assert (problem.line, problem.column) == (5, 12)
    assert problem.message == "node 'q': queue: Input should be a valid string"
