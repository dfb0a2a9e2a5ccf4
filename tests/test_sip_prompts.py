"""The SIP driver's prompt cache: any WAV to 8 kHz mono 16-bit once; `say` by espeak-ng."""

from __future__ import annotations

import array
import math
import os
import shutil
import wave
from pathlib import Path

import pytest

from ivr.engine import Play, Say
from ivr.sip_prompts import SAMPLE_RATE, PromptCache, PromptMissing
from ivr.sip_tts import espeak_voice


def write_tone(path: Path, rate: int, channels: int, seconds: float = 0.5) -> None:
    frames = int(rate * seconds)
    samples = array.array(
        "h",
        (
            int(8000 * math.sin(2 * math.pi * 440 * (n // channels) / rate))
            for n in range(frames * channels)
        ),
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


def shape(path: Path) -> tuple[int, int, int, float]:
    with wave.open(str(path), "rb") as audio:
        seconds = audio.getnframes() / audio.getframerate()
        return audio.getnchannels(), audio.getsampwidth(), audio.getframerate(), seconds


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "flows"
    (folder / "prompts").mkdir(parents=True)
    return folder


def test_a_wav_at_any_rate_becomes_8khz_mono_once(flows_dir: Path, tmp_path: Path) -> None:
    write_tone(flows_dir / "prompts" / "hi.wav", 44100, 2)
    cache = PromptCache(tmp_path / "var", flows_dir)

    first = cache.audio(Play("prompts/hi.wav"))
    channels, width, rate, seconds = shape(first)
    assert (channels, width, rate) == (1, 2, SAMPLE_RATE)
    assert seconds == pytest.approx(0.5, abs=0.01)

    made_at = first.stat().st_mtime_ns
    assert PromptCache(tmp_path / "var", flows_dir).audio(Play("prompts/hi.wav")) == first
    assert first.stat().st_mtime_ns == made_at  # a new process converts nothing again


def test_a_changed_prompt_file_gets_a_new_entry(flows_dir: Path, tmp_path: Path) -> None:
    source = flows_dir / "prompts" / "hi.wav"
    write_tone(source, 16000, 1)
    cache = PromptCache(tmp_path / "var", flows_dir)
    before = cache.file("prompts/hi.wav")
    write_tone(source, 16000, 1, seconds=1.0)
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    after = cache.file("prompts/hi.wav")
    assert after != before
    assert shape(after)[3] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("source", ["prompts/none.wav", "../outside.wav", "/etc/passwd"])
def test_a_missing_or_outside_file_is_refused(flows_dir: Path, tmp_path: Path, source: str) -> None:
    write_tone(tmp_path / "outside.wav", 8000, 1)
    with pytest.raises(PromptMissing):
        PromptCache(tmp_path / "var", flows_dir).file(source)


def test_say_is_spoken_once_per_text_and_language(flows_dir: Path, tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("espeak-ng is missing (Debian package espeak-ng)")
        pytest.skip("espeak-ng is not installed")
    cache = PromptCache(tmp_path / "var", flows_dir)
    english = cache.audio(Say("Hello there.", "en"))
    channels, width, rate, seconds = shape(english)
    assert (channels, width, rate) == (1, 2, SAMPLE_RATE)
    assert seconds > 0.3
    assert cache.audio(Say("Hello there.", "en")) == english
    assert cache.audio(Say("Hello there.", "ja")) != english
    assert cache.audio(Say("こんにちは。", "ja")).is_file()


def test_flow_languages_and_espeak_voices() -> None:
    assert espeak_voice("en", None) == "en-us"
    assert espeak_voice("ja", "Polly.Mizuki") == "ja"  # Twilio's voices mean nothing here
    assert espeak_voice("en", "espeak:en-gb") == "en-gb"
