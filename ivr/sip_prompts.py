"""The SIP driver's audio: every prompt as an 8 kHz mono 16-bit WAV, made once and cached.

pjsua's file player wants the bridge's own format; flows ship WAVs at any rate and `say`
texts have no audio at all. Each is converted (or spoken by espeak-ng) the first time it is
needed and kept under the data folder, named by a hash of what it was made from and the
rate, so a changed prompt file or text gets a new entry and a restart converts nothing.
"""

from __future__ import annotations

import array
import hashlib
import math
import os
import secrets
import wave
from collections.abc import Callable
from pathlib import Path

from ivr.engine import Audio, Play, Say
from ivr.prompt_fallback import file_missing
from ivr.sip_tts import synthesise
from recording.ffmpeg import AudioSegment, configure_pydub

SAMPLE_RATE = 8000
"""The bridge's clock (sip settings: narrowband G.711); prompts are stored at this rate."""
SAMPLE_WIDTH = 2
"""16-bit PCM: what pjsua's WAV player reads without converting."""
CACHE_FOLDER = "sip-prompts"
"""Under the data folder: converted prompts and spoken texts, safe to delete at any time."""
BEEP_HZ = 1000
BEEP_MS = 400
"""The tone before a voicemail, as Twilio's <Record playBeep>: callers know to speak."""
BEEP_LEVEL = 0.3
"""Of full scale: clearly audible, never clipping."""
RINGBACK_HZ = 400
RINGBACK_ON_MS = 1000
RINGBACK_OFF_MS = 2000
"""Japan's ringback cadence (400 Hz, 1 s on, 2 s off): what a caller hears while Kokan
rings a transfer's target, played in a loop."""


class PromptMissing(Exception):
    """A `play` names a file that is not there (or not a file under the flows folder)."""


def _write_atomically(target: Path, make: Callable[[Path], None]) -> Path:
    """Make the file under a temporary name, then rename: a reader never sees half of one."""
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        make(temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


def _convert(source: Path, target: Path) -> None:
    configure_pydub()
    audio = AudioSegment.from_file(str(source), format="wav")
    audio = audio.set_channels(1).set_sample_width(SAMPLE_WIDTH).set_frame_rate(SAMPLE_RATE)
    audio.export(str(target), format="wav")


class PromptCache:
    def __init__(self, data_dir: Path, flows_dir: Path, rate: int = SAMPLE_RATE) -> None:
        self.folder = data_dir / CACHE_FOLDER
        self.flows_dir = flows_dir.resolve()
        self.rate = rate
        self.folder.mkdir(parents=True, exist_ok=True)
        self._known: dict[tuple[str, int, int], Path] = {}

    def audio(self, item: Audio) -> Path:
        if isinstance(item, Say):
            return self.spoken(item.text, item.language, item.voice)
        return self.played(item)

    def missing(self, source: str) -> bool:
        """A flow's local audio file that is not (or no longer) there (a URL never is)."""
        return file_missing(self.flows_dir, source)

    def played(self, play: Play) -> Path:
        return self.file(play.source)

    def file(self, source: str) -> Path:
        """A flow's audio file (relative to the flows folder), converted once."""
        if source.startswith(("http://", "https://")):
            raise PromptMissing(f"{source}: prompts by URL are not played over SIP yet")
        path = (self.flows_dir / source).resolve()
        if not path.is_relative_to(self.flows_dir) or not path.is_file():
            raise PromptMissing(f"{source}: no such audio file under {self.flows_dir}")
        stat = path.stat()
        memo = (str(path), stat.st_mtime_ns, stat.st_size)
        known = self._known.get(memo)
        if known is not None and known.is_file():
            return known
        digest = hashlib.sha256(path.read_bytes())
        digest.update(f"|{self.rate}".encode())
        target = self.folder / f"play-{digest.hexdigest()[:32]}.wav"
        if not target.is_file():
            _write_atomically(target, lambda temp: _convert(path, temp))
        self._known[memo] = target
        return target

    def spoken(self, text: str, language: str, voice: str | None = None) -> Path:
        """The text spoken by espeak-ng, once per text, language, voice and rate."""
        key = "\x00".join((text, language, voice or "", str(self.rate)))
        target = self.folder / f"say-{hashlib.sha256(key.encode()).hexdigest()[:32]}.wav"
        if target.is_file():
            return target

        def make(temp: Path) -> None:
            raw = temp.with_suffix(".raw.wav")
            try:
                synthesise(text, language, voice, raw)
                _convert(raw, temp)
            finally:
                raw.unlink(missing_ok=True)

        return _write_atomically(target, make)

    def beep(self) -> Path:
        return self._tone("beep", BEEP_HZ, BEEP_MS)

    def ringback(self) -> Path:
        """One ringback cycle (tone, then quiet), to be played in a loop."""
        return self._tone("ringback", RINGBACK_HZ, RINGBACK_ON_MS, RINGBACK_OFF_MS)

    def _tone(self, name: str, hz: int, on_ms: int, off_ms: int = 0) -> Path:
        target = self.folder / f"{name}-{hz}-{on_ms}-{off_ms}-{self.rate}.wav"
        if target.is_file():
            return target
        count = self.rate * on_ms // 1000
        level = BEEP_LEVEL * 32767
        samples = array.array(
            "h",
            (int(level * math.sin(2 * math.pi * hz * n / self.rate)) for n in range(count)),
        )
        samples.extend([0] * (self.rate * off_ms // 1000))

        def make(temp: Path) -> None:
            with wave.open(str(temp), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(SAMPLE_WIDTH)
                out.setframerate(self.rate)
                out.writeframes(samples.tobytes())

        return _write_atomically(target, make)
