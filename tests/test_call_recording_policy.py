"""Who decides whether a call is recorded: the flow's `recording:` wins over the queue's
`record`; the consent announcement; the `recording` node. Flow language and engine only."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ivr.engine import CallState, Enqueue, RecordingControl, Say
from ivr.loader import FlowInvalid, parse_flow
from ivr.validator import CheckContext, check
from kokan.config import QueueSettings
from recording.policy import effective_mode
from tests.test_flow_engine import DictFlows, make_engine

QUEUED = """
start: billing
language: ja
{recording}
nodes:
  billing:
    type: queue
    queue: billing
    prompt:
      ja: 請求担当におつなぎします。
"""


def queued_turn(recording: str, **others: str) -> tuple[CallState, tuple[object, ...]]:
    engine = make_engine(DictFlows(main=QUEUED.format(recording=recording), **others))
    turn = engine.start("main", "CA1", "+819012345678", "+81312345678")
    return turn.state, turn.actions


def test_a_flow_without_a_policy_leaves_it_to_the_queue() -> None:
    state, actions = queued_turn("")
    assert state.outcome is not None
    assert "recording" not in state.outcome
    assert [type(a) for a in actions] == [Say, Enqueue]


def test_the_short_spelling_sets_the_mode() -> None:
    state, _actions = queued_turn("recording: always")
    assert state.outcome is not None
    assert state.outcome["recording"] == "always"


def test_the_consent_is_said_at_the_queue_node_in_the_callers_language() -> None:
    state, actions = queued_turn(
        "recording:\n  mode: always\n  consent:\n    ja: この通話は録音されます。\n"
        "    en: This call is recorded."
    )
    assert [a.text for a in actions if isinstance(a, Say)] == [
        "請求担当におつなぎします。",
        "この通話は録音されます。",
    ]
    assert state.outcome is not None
    assert state.outcome["consent_said"] is True


def test_no_consent_is_said_when_the_flow_never_records() -> None:
    state, actions = queued_turn("recording: never")
    assert [type(a) for a in actions] == [Say, Enqueue]
    assert state.outcome is not None
    assert state.outcome["recording"] == "never"


def test_a_subflow_inherits_the_calling_flows_policy() -> None:
    main = """
start: go
nodes:
  go:
    type: subflow
    flow: sales
    next: bye
  bye:
    type: hangup
recording: on_demand
"""
    sales = """
start: q
nodes:
  q:
    type: queue
    queue: sales
"""
    engine = make_engine(DictFlows(main=main, sales=sales))
    turn = engine.start("main", "CA2", "+819012345678", "+81312345678")
    assert turn.state.outcome is not None
    assert turn.state.outcome["recording"] == "on_demand"


@pytest.mark.parametrize(
    ("recording", "message"),
    [
        ("recording: sometimes", "recording"),
        ("recording: {mode: always, consent: {japanese: はい}}", "language code"),
        ("recording: {mode: always, consent: {ja: '  '}}", "must not be empty"),
        ("recording: {consent: {ja: はい}}", "mode"),
        ("recording: {mode: always, extra: 1}", "extra"),
        ("recording: 3", "recording"),
    ],
)
def test_a_bad_policy_is_refused_with_its_line(recording: str, message: str) -> None:
    with pytest.raises(FlowInvalid) as caught:
        parse_flow(QUEUED.format(recording=recording), "flows/main.yaml", name="main")
    text = str(caught.value)
    assert "flows/main.yaml:4" in text, text
    assert message in text


def test_the_validator_refuses_a_consent_for_calls_never_recorded(tmp_path: Path) -> None:
    parsed = parse_flow(
        QUEUED.format(recording="recording:\n  mode: never\n  consent: {ja: 録音します}"),
        "flows/main.yaml",
        name="main",
    )
    problems = check(parsed, CheckContext(flows_dir=tmp_path, known_queues=frozenset({"billing"})))
    assert [(p.line, "never" in p.message) for p in problems] == [(6, True)]


def test_the_recording_node_pauses_and_resumes_without_a_word() -> None:
    flow = """
start: pause
nodes:
  pause:
    type: recording
    action: pause
    next: card
  card:
    type: gather
    prompt: カード番号をどうぞ。
    into: card
    next: resume
    on_failure: resume
  resume:
    type: recording
    action: resume
    next: bye
  bye:
    type: hangup
"""
    engine = make_engine(DictFlows(main=flow))
    first = engine.start("main", "CA3", "+819012345678", "+81312345678")
    assert first.actions[0] == RecordingControl("pause")
    from ivr.engine import Input

    after = engine.resume(first.state, Input(digits="4242424242424242"))
    assert after.actions[0] == RecordingControl("resume")
    with pytest.raises(FlowInvalid, match="action"):
        parse_flow(flow.replace("action: pause", "action: stop"), "f.yaml", name="main")


def test_queue_settings_take_a_mode_and_consent_texts() -> None:
    queue = QueueSettings(record="always", recording_consent={"ja": "録音します。"})
    assert (queue.record, QueueSettings().record) == ("always", "never")
    with pytest.raises(ValidationError, match="language code"):
        QueueSettings(recording_consent={"日本語": "録音します。"})
    with pytest.raises(ValidationError, match="1 to 1000"):
        QueueSettings(recording_consent={"ja": ""})
    with pytest.raises(ValidationError):
        QueueSettings(record="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flow", "queue", "expected"),
    [
        (None, None, "never"),
        (None, "always", "always"),
        ("never", "always", "never"),
        ("always", "never", "always"),
        ("on_demand", None, "on_demand"),
    ],
)
def test_the_flow_wins_over_the_queue(flow: str | None, queue: str | None, expected: str) -> None:
    settings = QueueSettings(record=queue) if queue else None  # type: ignore[arg-type]
    assert effective_mode(flow, settings) == expected
