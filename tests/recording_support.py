"""Shared by the recording tests: Kokan's config file for the jobs, stored recordings, a worker.

The jobs read Kokan's configuration themselves (as under `kokan worker`), so each test
writes a config.yaml and points KOKAN_CONFIG at it. Workers are real rq workers over
Kokan's queues; each job runs in a forked work horse, which inherits whatever the test
process loaded before (the vosk model, loaded once per session).
"""

from __future__ import annotations

import io
import math
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from pydub import AudioSegment
from sqlalchemy import select

from kokan.config import Settings, load
from kokan.db import Database
from kokan.work_queues import ALL_QUEUES
from recording.ffmpeg import configure_pydub
from recording.model_worker import ModelSharingWorker
from recording.models import Recording, RecordingStatus
from recording.storage import STAGING_DIR, LocalStorage, key_for
from tests.conftest import SCRUBBED_ENV_PREFIXES

SAMPLE_RATE = 8000
"""Twilio's recordings are 8 kHz, 16-bit PCM."""


def write_config(
    tmp_path: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    twilio: dict[str, str] | None = None,
    **recording: Any,
) -> Settings:
    for name in list(os.environ):
        if name.startswith(SCRUBBED_ENV_PREFIXES):
            monkeypatch.delenv(name)
    recording.setdefault("fetch_retry_intervals_s", [0, 0])
    document = {
        "data_dir": str(settings.data_dir),
        "database_url": settings.database_url,
        "redis_url": settings.redis_url,
        "recording": recording,
        "twilio": twilio or {},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("KOKAN_CONFIG", str(path))
    return load().settings


def work(connection: redis.Redis) -> ModelSharingWorker:
    """A real rq worker in burst mode over Kokan's queues."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    worker = ModelSharingWorker(list(ALL_QUEUES), connection=connection)
    try:
        worker.work(burst=True, logging_level="WARNING")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return worker


def tone(seconds: float, amplitude: int = 3000, channels: int = 1, hz: int = 440) -> bytes:
    frames = int(seconds * SAMPLE_RATE)
    samples = [int(amplitude * math.sin(2 * math.pi * hz * n / SAMPLE_RATE)) for n in range(frames)]
    return struct.pack(f"<{frames * channels}h", *[s for s in samples for _ in range(channels)])


def silence(seconds: float, channels: int = 1) -> bytes:
    return b"\0\0" * int(seconds * SAMPLE_RATE) * channels


def wav(pcm: bytes, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(channels)
        audio.setsampwidth(2)
        audio.setframerate(SAMPLE_RATE)
        audio.writeframes(pcm)
    return buffer.getvalue()


def store_recording(
    database: Database,
    settings: Settings,
    content: bytes,
    *,
    content_type: str = "audio/x-wav",
    **columns: Any,
) -> int:
    """A recording as the fetch job leaves it: a stored WAV under its key."""
    with database.unit_of_work() as session:
        row = Recording(
            provider="twilio",
            provider_recording_id=f"RE{os.urandom(16).hex()}",
            provider_call_id=f"CA{os.urandom(16).hex()}",
            kind=columns.pop("kind", "call"),
            status=columns.pop("status", RecordingStatus.STORED),
            content_type=content_type,
            size_bytes=len(content),
            **columns,
        )
        session.add(row)
        session.flush()
        row.storage_key = key_for(row.id, "wav")
        recording_id, key = row.id, row.storage_key
    storage = LocalStorage(settings.recordings_dir)
    with storage.staging() as temp:
        temp.write_bytes(content)
        storage.put(key, temp)
    return recording_id


def row(database: Database, recording_id: int) -> Recording:
    with database.unit_of_work() as session:
        found = session.get(Recording, recording_id)
        assert found is not None
        return found


def rows(database: Database) -> list[Recording]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(Recording).order_by(Recording.id)))


def visible_files(settings: Settings) -> list[str]:
    folder = settings.recordings_dir
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != STAGING_DIR)


def stored_audio(settings: Settings, recording: Recording) -> AudioSegment:
    assert recording.storage_key is not None
    configure_pydub()
    path = LocalStorage(settings.recordings_dir).path(recording.storage_key)
    fmt, codec = {"audio/mpeg": ("mp3", "mp3"), "audio/ogg": ("ogg", "libopus")}.get(
        recording.content_type or "", ("wav", None)
    )
    return AudioSegment.from_file(path, format=fmt, codec=codec)


def require_tool(name: str) -> str:
    """A tool the test drives for real: missing is a failure under CI, a skip elsewhere."""
    found = shutil.which(name)
    if found is None:
        message = (
            f"{name} is not installed (./run test installs it as root: apt-get install {name})"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def korean_speech(text: str, speed: int = 140) -> AudioSegment:
    """What espeak-ng says, as a telephone line carries it: 8 kHz, mono, 16-bit."""
    espeak = require_tool("espeak-ng")
    with tempfile.TemporaryDirectory(prefix="kokan-espeak-") as folder:
        out = Path(folder) / "speech.wav"  # its --stdout WAV header gives no real length
        subprocess.run(
            [espeak, "-v", "ko", "-s", str(speed), "-w", str(out), text],
            capture_output=True,
            check=True,
            timeout=30,
        )
        segment = AudioSegment.from_file(out, format="wav")
    return segment.set_frame_rate(SAMPLE_RATE).set_channels(1).set_sample_width(2)


def wav_of(segment: AudioSegment) -> bytes:
    buffer = io.BytesIO()
    segment.export(buffer, format="wav")
    return buffer.getvalue()


PHRASES = ["상담원", "여섯", "아니요", "환불", "예약", "취소", "안녕하세요", "감사합니다"]
"""A phrase list like a contact center's: the words its calls are about."""
PAUSE_MS = 700
"""Between words: vosk hears espeak-ng's Korean best one word at a time."""


def spoken(*texts: str) -> AudioSegment:
    pause = AudioSegment.silent(PAUSE_MS, frame_rate=SAMPLE_RATE)
    audio = pause
    for text in texts:
        audio = audio + korean_speech(text) + pause
    return audio
