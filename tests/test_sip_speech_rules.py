"""The media worker's rules for a spoken answer, without a call: when an utterance has
ended, which engine event a recognition becomes (as Twilio's Gather would give it), and
how the `asr` queue's jobs read while the loop polls them (real Redis, a real rq worker)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from pydub import AudioSegment

from ivr.engine import Input, NoInput
from ivr.sip_speech import (
    END_SILENCE_S,
    MAX_SPEECH_S,
    SPEECH_LEVEL,
    Answer,
    Capture,
    SpeechJobs,
    Status,
    event_for,
    phrases_of,
)
from kokan.config import Settings
from tests.recording_support import work, write_config

LOUD, QUIET = SPEECH_LEVEL + 10, 0


def capture() -> Capture:
    return Capture(Path("answer.wav"), ("환불",), "ko")


def test_silence_alone_never_ends_an_utterance() -> None:
    heard = capture()
    assert not any(heard.hear(t / 10, QUIET) for t in range(100))
    assert not heard.speaking


def test_quiet_after_speech_ends_it_but_a_pause_between_words_does_not() -> None:
    heard = capture()
    assert not heard.hear(0.0, LOUD)
    assert not heard.hear(0.5, QUIET)
    assert not heard.hear(0.5 + END_SILENCE_S / 2, QUIET)  # a pause between words
    assert not heard.hear(1.0, LOUD)
    assert not heard.hear(1.1, QUIET)
    assert heard.hear(1.1 + END_SILENCE_S, QUIET)


def test_a_caller_who_talks_on_is_cut_at_the_longest_answer() -> None:
    heard = capture()
    assert not heard.hear(0.0, LOUD)
    assert not heard.hear(MAX_SPEECH_S - 0.1, LOUD)
    assert heard.hear(MAX_SPEECH_S, LOUD)


def test_recognitions_become_the_events_twilio_would_send() -> None:
    assert event_for(Answer(Status.DONE, phrase="환불", heard="환불")) == Input(speech="환불")
    assert event_for(Answer(Status.DONE, phrase=None, heard="상담원 상담원")) == Input(speech="")
    assert event_for(Answer(Status.DONE, phrase=None, heard="")) == NoInput()
    assert event_for(Answer(Status.FAILED)) == NoInput()
    assert event_for(Answer(Status.PENDING)) == NoInput()


def test_recognition_is_restricted_to_the_phrases_else_the_hints() -> None:
    assert phrases_of(("환불", " "), ("상담원",)) == ("환불",)
    assert phrases_of((), ("상담원", "")) == ("상담원",)
    assert phrases_of((), ()) == ()


def test_the_queue_tells_pending_finished_failed_and_lost_jobs_apart(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis
) -> None:
    """What the loop polls: a job not yet run is pending (the caller's wait goes on); a
    failed or vanished job is an answer of its own (no input), never an endless wait."""
    write_config(tmp_path, settings, monkeypatch)
    jobs = SpeechJobs(redis_client, tmp_path / "speech")
    path = jobs.path_for("call-1", 3)
    assert path == tmp_path / "speech" / "call-1-3.wav"
    missing = jobs.submit(path, ["환불"], "ko")  # no file was recorded there
    assert jobs.result(missing) == Answer(Status.PENDING)
    work(redis_client)
    assert jobs.result(missing) == Answer(Status.FAILED)
    assert jobs.result("no-such-job") == Answer(Status.FAILED)


def test_a_finished_job_gives_the_phrase_and_the_words_heard(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis
) -> None:
    write_config(tmp_path, settings, monkeypatch)
    jobs = SpeechJobs(redis_client, tmp_path / "speech")
    path = jobs.path_for("call-2", 1)
    AudioSegment.silent(duration=500, frame_rate=8000).export(path, format="wav")
    job = jobs.submit(path, ["환불"], "ko")
    work(redis_client)
    assert jobs.result(job) == Answer(Status.DONE, phrase=None, heard="")
    jobs.forget(Capture(path, ("환불",), "ko"))
    assert not path.exists()
