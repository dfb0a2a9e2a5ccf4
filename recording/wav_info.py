"""What a WAV file holds, read with the standard library, and whether it is whole."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

from recording.errors import RecordingCorrupt, RecordingEmpty

READ_FRAMES = 64 * 1024
"""Frames read per step while checking the data is all there: bounded memory on long files."""


@dataclass(frozen=True)
class WavInfo:
    channels: int
    sample_rate: int
    frames: int

    @property
    def duration_ms(self) -> int:
        return round(self.frames * 1000 / self.sample_rate)


def read_wav_info(path: Path) -> WavInfo:
    """Refuse an empty file, a file that is not WAV, and one shorter than its header says."""
    if path.stat().st_size == 0:
        raise RecordingEmpty("the recording file is empty (0 bytes)")
    try:
        with wave.open(str(path), "rb") as audio:
            channels, rate, frames = audio.getnchannels(), audio.getframerate(), audio.getnframes()
            if rate <= 0:
                raise RecordingCorrupt("the WAV header gives a sample rate of 0")
            present = 0
            while chunk := audio.readframes(READ_FRAMES):
                present += len(chunk) // (audio.getsampwidth() * channels)
    except (wave.Error, EOFError) as exc:
        raise RecordingCorrupt(f"the recording is not a readable WAV file ({exc})") from None
    if frames == 0:
        raise RecordingEmpty("the recording holds no audio (0 frames)")
    if present < frames:
        raise RecordingCorrupt(
            f"the WAV file is cut short: {present} of {frames} frames are present"
        )
    return WavInfo(channels=channels, sample_rate=rate, frames=frames)
