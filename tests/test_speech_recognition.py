"""Callers' spoken answers recognised on the `asr` queue by a real rq worker with the real
Korean vosk model, from telephone-rate audio spoken by espeak-ng: a phrase of the node is
recognised, anything else is no match (the model has no `[unk]` to lose to)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis
from pydub import AudioSegment
from rq import Queue
from rq.job import JobStatus

from ivr import speech
from kokan.config import Settings
from kokan.work_queues import ASR_QUEUE
from recording import transcribe
from tests.recording_support import work, write_config
from tests.test_sip_calls import _require_espeak

PHRASES = ["환불", "상담원", "배송 조회"]
TELEPHONE_RATE = 8000
"""What a SIP media worker captures: G.711's 8 kHz mono."""


def spoken(tmp_path: Path, text: str, name: str) -> Path:
    _require_espeak()
    raw = tmp_path / f"{name}.raw.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), text], check=True, timeout=30)
    target = tmp_path / f"{name}.wav"
    AudioSegment.from_wav(raw).set_frame_rate(TELEPHONE_RATE).set_channels(1).export(
        target, format="wav"
    )
    return target


def silent(tmp_path: Path) -> Path:
    target = tmp_path / "silence.wav"
    AudioSegment.silent(duration=1500, frame_rate=TELEPHONE_RATE).export(target, format="wav")
    return target


@pytest.fixture
def configured(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return write_config(tmp_path, settings, monkeypatch)


def recognised(redis_client: redis.Redis, audio: Path, phrases: list[str]) -> dict[str, object]:
    job = Queue(ASR_QUEUE, connection=redis_client).enqueue(
        speech.RECOGNISE_JOB, str(audio), phrases
    )
    work(redis_client)
    assert job.get_status(refresh=True) == JobStatus.FINISHED, job.latest_result()
    result = job.return_value()
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize(("said", "phrase"), [("환불", "환불"), ("배송 조회", "배송 조회")])
def test_a_phrase_of_the_node_is_recognised_from_telephone_audio(
    configured: Settings,
    redis_client: redis.Redis,
    tmp_path: Path,
    said: str,
    phrase: str,
) -> None:
    result = recognised(redis_client, spoken(tmp_path, said, "said"), PHRASES)
    assert result["phrase"] == phrase
    assert result["confidence"] == pytest.approx(1.0)


def test_a_sentence_outside_the_phrases_is_no_match(
    configured: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    audio = spoken(tmp_path, "오늘 날씨가 좋네요 정말로", "other")
    result = recognised(redis_client, audio, PHRASES)
    assert result["phrase"] is None
    assert result["heard"]  # the grammar forced words out of it: they are not a phrase


def test_silence_is_no_match(
    configured: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    result = recognised(redis_client, silent(tmp_path), PHRASES)
    assert result == {"phrase": None, "heard": "", "confidence": 0.0}


def test_phrases_written_with_other_spacing_or_width_still_match(
    configured: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    phrases = ["  배송   조회 ", "\uff21\uff22\uff23"]  # and one in full-width letters
    result = recognised(redis_client, spoken(tmp_path, "배송 조회", "spaced"), phrases)
    assert result["phrase"] == "  배송   조회 "  # the node's own phrase, as the flow wrote it


def test_a_node_without_phrases_fails_the_job_visibly(
    configured: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    job = Queue(ASR_QUEUE, connection=redis_client).enqueue(
        speech.RECOGNISE_JOB, str(silent(tmp_path)), ["  "]
    )
    work(redis_client)
    assert job.get_status(refresh=True) == JobStatus.FAILED
    latest = job.latest_result()
    assert latest is not None
    assert "no phrases" in (latest.exc_string or "")


def word(text: str, confidence: float) -> transcribe.Word:
    return transcribe.Word(word=text, start_ms=0, end_ms=100, confidence=confidence, channel=0)


def test_a_phrase_heard_without_confidence_is_no_match() -> None:
    assert speech.match([word("환불", 1.0)], PHRASES).phrase == "환불"
    assert speech.match([word("환불", 0.6)], PHRASES).phrase is None
    assert speech.match([word("배송", 1.0), word("조회", 0.95)], PHRASES).phrase == "배송 조회"
    assert speech.match([word("배송", 1.0)], PHRASES).phrase is None
    assert speech.match([], PHRASES).phrase is None
