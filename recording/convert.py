"""Post-processing of one audio file with pydub: loudness, silence at the ends, compression.

Pure file-in, file-out: the job around it (recording.processing) decides where files live
and what the row says. pydub runs the ffmpeg found by recording.ffmpeg; that ffmpeg has no
ffprobe, so every decode names its format and codec.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from pydub import AudioSegment
from pydub.exceptions import CouldntDecodeError, CouldntEncodeError
from pydub.silence import detect_leading_silence
from pydub.utils import make_chunks

from recording.errors import ProcessingInterrupted, RecordingCorrupt, RecordingEmpty
from recording.ffmpeg import configure_pydub
from recording.wav_info import read_wav_info

TARGET_DBFS = -20.0
"""Average loudness of speech after normalising: comfortable on a headset, room for peaks."""
PEAK_HEADROOM_DB = 1.0
"""Gain stops this far below full scale, so a loud shout never clips."""
SILENCE_THRESHOLD_DB = 30.0
"""Quieter than the recording's average by this much counts as silence (line hiss, not speech)."""
SILENCE_FLOOR_DBFS = -60.0
"""An absolute floor for that threshold, so a quiet recording's hiss still counts as silence."""
SILENCE_CHUNK_MS = 10
"""Resolution of the silence search: finer costs time and hears nothing more."""
LOUDNESS_CHUNK_MS = 100
"""Long enough to hold a syllable, short enough that a pause is its own chunk."""
KEEP_SILENCE_MS = 300
"""Left at each end after trimming, so the first syllable is never clipped."""
HASH_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class OutputFormat:
    extension: str
    pydub_format: str
    codec: str
    content_type: str
    kbps_per_channel: int
    """Speech at telephone bandwidth needs little: 32 kbit/s MP3, 24 kbit/s Opus per channel."""


OUTPUT_FORMATS = {
    "mp3": OutputFormat("mp3", "mp3", "libmp3lame", "audio/mpeg", 32),
    "ogg": OutputFormat("ogg", "ogg", "libopus", "audio/ogg", 24),
}

INPUT_FORMATS = {
    "audio/wav": ("wav", None),
    "audio/x-wav": ("wav", None),
    "audio/wave": ("wav", None),
    "audio/vnd.wave": ("wav", None),
    "audio/mpeg": ("mp3", "mp3"),
    "audio/mp3": ("mp3", "mp3"),
    "audio/ogg": ("ogg", "libopus"),
    "audio/opus": ("ogg", "libopus"),
}
"""Content type -> pydub format and ffmpeg decoder; WAV is read by pydub itself."""


@dataclass(frozen=True)
class Converted:
    duration_ms: int
    channels: int
    size_bytes: int
    sha256: str
    content_type: str


def decode(source: Path, content_type: str) -> AudioSegment:
    """The whole file as audio; an empty or unreadable file raises RecordingEmpty/Corrupt."""
    fmt = INPUT_FORMATS.get(content_type.split(";", 1)[0].strip().lower())
    if fmt is None:
        raise RecordingCorrupt(f"cannot convert audio of type {content_type!r}")
    pydub_format, codec = fmt
    if pydub_format == "wav":
        read_wav_info(source)  # a clear reason for an empty, foreign or cut-short WAV
    elif source.stat().st_size == 0:
        raise RecordingEmpty("the recording file is empty (0 bytes)")
    configure_pydub()
    try:
        audio = AudioSegment.from_file(source, format=pydub_format, codec=codec)
    except CouldntDecodeError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise RecordingCorrupt(f"the recording cannot be decoded ({first_line[:200]})") from None
    if len(audio) == 0:
        raise RecordingEmpty("the recording holds no audio (0 ms)")
    return audio


def normalise(audio: AudioSegment) -> AudioSegment:
    """Bring the loudness of the speech (pauses left out) to TARGET_DBFS; no peak may clip."""
    level = speech_dbfs(audio)
    if level is None:
        return audio  # silence: no gain makes it speech
    gain = min(TARGET_DBFS - level, -audio.max_dBFS - PEAK_HEADROOM_DB)
    return audio.apply_gain(gain)


def speech_dbfs(audio: AudioSegment) -> float | None:
    """Loudness over the chunks that are not silence (a gate, as loudness meters use), so a
    long pause does not make quiet speech look quieter still; None when all is silence."""
    if math.isinf(audio.dBFS):
        return None
    threshold = _silence_threshold(audio)
    powers = [
        chunk.rms**2 for chunk in make_chunks(audio, LOUDNESS_CHUNK_MS) if chunk.dBFS > threshold
    ]
    if not powers:
        return None
    return 20 * math.log10(math.sqrt(sum(powers) / len(powers)) / audio.max_possible_amplitude)


def _silence_threshold(audio: AudioSegment) -> float:
    return float(max(audio.dBFS - SILENCE_THRESHOLD_DB, SILENCE_FLOOR_DBFS))


def trim_silence(audio: AudioSegment) -> AudioSegment:
    """Cut silence at both ends, keeping a little; a recording that is all silence is kept."""
    if math.isinf(audio.dBFS):
        return audio
    threshold = _silence_threshold(audio)
    lead = detect_leading_silence(audio, threshold, SILENCE_CHUNK_MS)
    trail = detect_leading_silence(audio.reverse(), threshold, SILENCE_CHUNK_MS)
    start = max(0, lead - KEEP_SILENCE_MS)
    end = min(len(audio), len(audio) - trail + KEEP_SILENCE_MS)
    if end <= start:
        return audio
    trimmed: AudioSegment = audio[start:end]
    return trimmed


def encode(audio: AudioSegment, output: OutputFormat, destination: Path) -> None:
    configure_pydub()
    bitrate = f"{output.kbps_per_channel * audio.channels}k"
    try:
        with open(destination, "wb") as out:
            audio.export(out, format=output.pydub_format, codec=output.codec, bitrate=bitrate)
    except CouldntEncodeError as exc:
        raise ProcessingInterrupted(f"ffmpeg could not encode {output.extension}: {exc}") from exc


def convert_file(
    source: Path, content_type: str, output: OutputFormat, destination: Path
) -> Converted:
    """Decode, normalise, trim and encode `source` into `destination`; measure the result."""
    audio = trim_silence(normalise(decode(source, content_type)))
    encode(audio, output, destination)
    return Converted(
        duration_ms=len(audio),
        channels=audio.channels,
        size_bytes=destination.stat().st_size,
        sha256=file_sha256(destination),
        content_type=output.content_type,
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
