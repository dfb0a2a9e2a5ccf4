"""A prompt file gone after publishing: the flow's words for it (or its apology) are said
instead, by both drivers, and a warning names the file and the call."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
import redis

from ivr.call_store import CallStore
from ivr.engine import Listen, Play, Record, Say
from ivr.prompt_fallback import FILE_CHECK_TTL_S, PromptFiles, file_missing, resolve
from ivr.twilio_calls import IncomingCall, VoiceService
from ivr.twiml import Urls
from kokan.logs import ContextFilter
from tests.test_flow_engine import DictFlows, make_engine, start

FLOW = """
start: welcome
language: en
fallback:
  prompt: {en: "Sorry, a small problem here."}
nodes:
  welcome:
    type: play
    file: prompts/welcome.wav
    text: {en: Welcome to Kokan., ja: ようこそ。}
    next: chime
  chime:
    type: play
    file: prompts/chime.wav
    next: menu
  menu:
    type: menu
    prompt:
      - {play: prompts/menu.wav, say: Press 1 for billing.}
      - {play: prompts/tail.wav}
    options: {"1": bye}
    on_failure: bye
  bye:
    type: hangup
"""
CALL = "CA0123456789"


def test_the_flow_carries_each_files_words_to_the_play_actions() -> None:
    _engine, turn = start(FLOW)
    welcome, chime, listen = turn.actions
    assert welcome == Play("prompts/welcome.wav", Say("Welcome to Kokan.", "en"))
    assert chime == Play("prompts/chime.wav")  # no text: nothing of its own to say
    assert isinstance(listen, Listen)
    assert listen.prompts == (
        Play("prompts/menu.wav", Say("Press 1 for billing.", "en")),
        Play("prompts/tail.wav"),
    )


def test_missing_files_are_said_as_their_text_or_the_flows_apology(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine, turn = start(FLOW)
    gone = {"prompts/welcome.wav", "prompts/chime.wav", "prompts/tail.wav"}
    caplog.handler.addFilter(ContextFilter())  # as Kokan's handlers: the call's id
    with caplog.at_level(logging.WARNING, logger="ivr.prompt_fallback"):
        resolved = resolve(
            turn.actions,
            missing=gone.__contains__,
            apology=lambda: engine.apology(turn.state),
            call_id=CALL,
        )
    sorry = Say("Sorry, a small problem here.", "en")
    welcome, chime, listen = resolved
    assert welcome == Say("Welcome to Kokan.", "en")
    assert chime == sorry
    assert isinstance(listen, Listen)
    assert listen.prompts == (Play("prompts/menu.wav", Say("Press 1 for billing.", "en")), sorry)
    assert listen.digits  # the rest of the action is as it was
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 3
    assert all(getattr(r, "call_id", None) == CALL for r in warned)
    assert "prompts/welcome.wav" in warned[0].getMessage()
    assert "saying its text" in warned[0].getMessage()
    assert "apologising" in warned[1].getMessage()


def test_nothing_missing_leaves_the_turn_as_it_is() -> None:
    _engine, turn = start(FLOW)
    resolved = resolve(
        turn.actions, missing=lambda _source: False, apology=lambda: (), call_id=CALL
    )
    assert resolved == turn.actions


def test_without_a_fallback_prompt_kokans_own_apology_is_said_in_the_calls_language() -> None:
    flow = "".join(
        line for line in FLOW.splitlines(True) if not line.startswith(("fallback", "  prompt"))
    )
    engine, turn = start(flow)
    [apology] = engine.apology(turn.state)
    assert apology.language == "en"
    assert apology.text
    record = Record((Play("prompts/gone.wav"),), 60, "#")
    [resolved] = resolve(
        (record,), missing=lambda _s: True, apology=lambda: (apology,), call_id=CALL
    )
    assert resolved == Record((apology,), 60, "#")


def test_a_file_is_missing_when_gone_or_outside_the_flows_folder(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "here.wav").write_bytes(b"RIFF")
    (tmp_path / "outside.wav").write_bytes(b"RIFF")
    flows = tmp_path / "prompts" / ".."
    assert not file_missing(flows, "prompts/here.wav")
    assert file_missing(flows, "prompts/gone.wav")
    assert file_missing(tmp_path / "prompts", "../outside.wav")
    assert file_missing(flows, "prompts")  # a folder is not a prompt
    assert not file_missing(flows, "https://example.com/hi.wav")  # known only when fetched


def test_the_webhook_looks_at_a_file_once_per_interval_and_notices_it_gone(
    tmp_path: Path,
) -> None:
    prompt = tmp_path / "prompts" / "hello.wav"
    prompt.parent.mkdir()
    prompt.write_bytes(b"RIFF")
    now = [100.0]
    files = PromptFiles(tmp_path, clock=lambda: now[0])
    assert not files.missing("prompts/hello.wav")

    prompt.unlink()
    now[0] += FILE_CHECK_TTL_S / 2
    assert not files.missing("prompts/hello.wav"), "trusted until the interval ends"
    now[0] += FILE_CHECK_TTL_S
    assert files.missing("prompts/hello.wav")


def test_twilio_says_the_text_of_a_file_gone_since_publishing(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """The Twilio driver renders the resolved turn: <Say>, not a <Play> that would 404."""
    engine = make_engine(DictFlows(main=FLOW))
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "chime.wav").write_bytes(b"RIFF")
    service = VoiceService(
        engine,
        CallStore(redis_client),
        Urls("https://kokan.example"),
        lambda _number: "main",
        flows_dir=tmp_path,
    )
    twiml = service.start(IncomingCall(f"CA{uuid.uuid4().hex}", "+819012345678", "+81312345678"))
    assert "<Say" in twiml
    assert "Welcome to Kokan." in twiml
    assert "/media/flows/prompts/chime.wav" in twiml  # still there: played
    assert "welcome.wav" not in twiml
