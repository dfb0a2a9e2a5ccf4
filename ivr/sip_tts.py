"""Spoken prompts for the SIP driver: `say` text turned into a WAV by espeak-ng.

Twilio speaks `<Say>` in its cloud; a SIP call has no cloud, so the text is synthesised
here, once per text + language + voice (the prompt cache keeps the result).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ESPEAK = "espeak-ng"
"""The Debian package `espeak-ng` (in `run`'s SYSTEM_PACKAGES): small, fast, many languages."""
ESPEAK_VOICES = {"ja": "ja", "en": "en-us", "ko": "ko", "zh": "cmn"}
"""Flow language codes to espeak-ng voice names; other codes are passed through as they are."""
VOICE_PREFIX = "espeak:"
"""A flow's `voice` naming an espeak-ng voice (espeak:en-gb); others (Polly.…) are Twilio's."""
TTS_TIMEOUT_S = 30
"""espeak-ng speaks ~100x faster than real time; a minute-long prompt takes well under a second."""
MAX_TEXT_CHARS = 4000
"""A prompt longer than this is a mistake in the flow, not something a caller should hear."""


class SpeechUnavailable(Exception):
    """The text could not be spoken (no espeak-ng, or it failed); the caller gets the fallback."""


def espeak_voice(language: str, voice: str | None) -> str:
    if voice and voice.startswith(VOICE_PREFIX):
        return voice.removeprefix(VOICE_PREFIX)
    base = language.split("-")[0].lower()
    return ESPEAK_VOICES.get(base, language)


def synthesise(text: str, language: str, voice: str | None, target: Path) -> None:
    """Write `text` spoken in `language` to the WAV file `target` (espeak-ng's own rate)."""
    program = shutil.which(ESPEAK)
    if program is None:
        raise SpeechUnavailable(f"{ESPEAK} is not installed (Debian package espeak-ng)")
    # "--" so a text starting with "-" is spoken, not taken for an option
    command = [program, "-v", espeak_voice(language, voice), "-w", str(target), "--"]
    try:
        done = subprocess.run(
            [*command, text[:MAX_TEXT_CHARS]],
            capture_output=True,
            timeout=TTS_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SpeechUnavailable(f"{ESPEAK} failed: {exc}") from exc
    if done.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
        message = done.stderr.decode(errors="replace").strip()[:200]
        raise SpeechUnavailable(f"{ESPEAK} exited with {done.returncode}: {message}")
