"""The fetch job: Twilio's copy of a recording into Kokan's storage, checked and measured.

Safe to run any number of times: a stored recording is left alone (only the deletion at
Twilio, when configured and not yet done, is tried again), and the file appears under
its key whole or not at all. A failure retrying cannot fix marks the row failed with the
reason; one it might fix raises, so that rq retries with growing pauses.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from rq import get_current_job
from sqlalchemy import update

from kokan import logs
from kokan.config import Settings
from kokan.db import Database, utcnow
from kokan.job_context import job_context
from recording.errors import (
    FetchInterrupted,
    RecordingGone,
    RecordingUnusable,
    StorageFull,
    TwilioCredentialsRefused,
    TwilioNotConfigured,
)
from recording.links import link_recent
from recording.models import Recording, RecordingKind, RecordingStatus
from recording.services import (
    PROVIDER_TWILIO,
    CallFacts,
    enqueue_processing,
    enqueue_stalled,
    fetch_retry,
    link_call,
    recordings_queue,
    voicemail_recorded,
)
from recording.storage import Storage, key_for, storage_for
from recording.twilio_media import Download, TwilioMediaClient
from recording.twilio_urls import MEDIA_EXTENSION, TwilioRecordingRef
from recording.wav_info import read_wav_info

DELETE_TIMEOUT_S = 30
"""Deleting is one small request; a slow answer is retried with the job rather than waited on."""
DEFAULT_CONTENT_TYPE = "audio/wav"
"""What Twilio's .wav is, for a server that names it vaguely (application/octet-stream)."""
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
"""Answers that say "not now" rather than "never"."""
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""A full disk or an exhausted quota: space can be freed, so the fetch is retried."""
NOT_READY_GRACE = dt.timedelta(minutes=10)
"""Twilio processes a recording after the call ("may not be ready right away"): a 404 this
soon after the callback means not yet and is retried; later it means the recording is gone."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Target:
    recording_id: int
    provider: str
    ref: TwilioRecordingRef | None
    status: str
    provider_deleted: bool
    call_sid: str
    created_at: dt.datetime


def keep_twilio_voicemail(
    provider_call_id: str, recording_url: str, recording_sid: str, duration_s: int | None
) -> int:
    """The rq job the voice webhook enqueues: the recording's row, then its fetch job."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("keep_twilio_voicemail runs as an rq job (it enqueues on its Redis)")
    token = logs.call_id_var.set(provider_call_id)
    try:
        with job_context() as (settings, database):
            received = voicemail_recorded(
                database,
                recordings_queue(job.connection),
                provider_call_id=provider_call_id,
                recording_url=recording_url,
                recording_sid=recording_sid,
                duration_s=duration_s,
                retry=fetch_retry(settings.recording.fetch_retry_intervals_s),
            )
        return received.recording_id
    finally:
        logs.call_id_var.reset(token)


def keep_twilio_call_recording(
    provider_call_id: str,
    recording_url: str,
    recording_sid: str,
    duration_s: int | None,
    agent_id: str | None,
    queue_name: str | None,
    pauses: list[dict[str, int | None]],
) -> int:
    """The rq job the recording status callback enqueues: the call recording's row
    (agent, queue, paused spans), then its fetch job, which chains conversion and
    transcription."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("keep_twilio_call_recording runs as an rq job (it enqueues on Redis)")
    token = logs.call_id_var.set(provider_call_id)
    try:
        with job_context() as (settings, database):
            received = voicemail_recorded(
                database,
                recordings_queue(job.connection),
                provider_call_id=provider_call_id,
                recording_url=recording_url,
                recording_sid=recording_sid,
                duration_s=duration_s,
                retry=fetch_retry(settings.recording.fetch_retry_intervals_s),
                kind=RecordingKind.CALL,
                facts=CallFacts(agent_id=agent_id, queue=queue_name, pauses=pauses),
            )
        return received.recording_id
    finally:
        logs.call_id_var.reset(token)


def requeue_stalled_fetches() -> list[int]:
    """A periodic rq job (rq's cron): pending recordings whose fetch job was lost get a new
    one, and recent recordings are linked to interactions that appeared since."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("requeue_stalled_fetches runs as an rq job (it enqueues on its Redis)")
    with job_context() as (settings, database):
        link_recent(database)  # recordings whose interaction appeared after every other step
        return enqueue_stalled(
            database,
            recordings_queue(job.connection),
            retry=fetch_retry(settings.recording.fetch_retry_intervals_s),
        )


def fetch_twilio_recording(recording_id: int) -> str:
    """The rq job that fetches one recording from Twilio into storage."""
    job = get_current_job()
    with job_context() as (settings, database):
        outcome = fetch_recording(
            recording_id,
            settings=settings,
            database=database,
            storage=storage_for(settings),
            http=TwilioMediaClient(),
            last_attempt=job is None or not job.retries_left,
        )
        if (
            job is not None
            and outcome == RecordingStatus.STORED
            and settings.recording.post_process
        ):
            # chained only now: conversion never starts on a file that is not stored yet
            enqueue_processing(
                recordings_queue(job.connection),
                recording_id,
                fetch_retry(settings.recording.fetch_retry_intervals_s),
            )
        return outcome


def fetch_recording(
    recording_id: int,
    *,
    settings: Settings,
    database: Database,
    storage: Storage,
    http: TwilioMediaClient,
    last_attempt: bool = True,
) -> str:
    """Fetch, check, store; returns the row's status. Raises FetchInterrupted to be retried."""
    target = _load(database, recording_id)
    if target is None:
        log.warning("recording %s no longer exists; nothing to fetch", recording_id)
        return "missing"
    token = logs.call_id_var.set(target.call_sid)
    try:
        if target.status == RecordingStatus.FAILED:
            log.info("recording %s failed earlier; fetch_again() retries it", recording_id)
            return RecordingStatus.FAILED.value
        if target.status == RecordingStatus.PENDING:
            stored = run_step(
                lambda: _fetch_and_store(target, settings, database, storage, http),
                database,
                recording_id,
                RecordingStatus.PENDING,
                last_attempt,
            )
            if not stored:
                return RecordingStatus.FAILED.value
        if settings.recording.delete_from_twilio and not target.provider_deleted:
            _delete_at_twilio(target, settings, database, http)
        return RecordingStatus.STORED.value
    finally:
        logs.call_id_var.reset(token)


def _load(database: Database, recording_id: int) -> _Target | None:
    with database.unit_of_work() as session:
        row = session.get(Recording, recording_id)
        if row is None:
            return None
        link_call(session, row)
        ref = (
            TwilioRecordingRef(row.provider_account_id, row.provider_recording_id)
            if row.provider_account_id
            else None
        )
        return _Target(
            recording_id=row.id,
            provider=row.provider,
            ref=ref,
            status=row.status,
            provider_deleted=row.provider_deleted_at is not None,
            call_sid=row.provider_call_id or "-",
            created_at=row.created_at,
        )


def _credentials(settings: Settings) -> tuple[str, str]:
    sid, token = settings.twilio.account_sid, settings.twilio.auth_token
    if not sid or token is None or not token.get_secret_value():
        raise TwilioNotConfigured(
            "twilio.account_sid and twilio.auth_token must be set to fetch recordings from Twilio"
        )
    return sid, token.get_secret_value()


def _fetch_and_store(
    target: _Target,
    settings: Settings,
    database: Database,
    storage: Storage,
    http: TwilioMediaClient,
) -> None:
    if target.provider != PROVIDER_TWILIO or target.ref is None:
        raise RecordingUnusable(f"recording from {target.provider!r} is not a Twilio recording")
    auth = _credentials(settings)
    key = key_for(target.recording_id, MEDIA_EXTENSION)
    with storage.staging() as temp:
        got = _download(http, target.ref.media_url(settings.twilio.api_base), auth, temp, settings)
        _check_status(got.status_code, utcnow() - target.created_at)
        audio = read_wav_info(temp)
        try:
            storage.put(key, temp)
        except OSError as exc:
            raise _storage_error(exc) from exc
    with database.unit_of_work() as session:
        session.execute(
            update(Recording)
            .where(
                Recording.id == target.recording_id,
                Recording.status == RecordingStatus.PENDING,
            )
            .values(
                status=RecordingStatus.STORED,
                failure_reason=None,
                storage_key=key,
                size_bytes=got.size,
                sha256=got.sha256,
                duration_ms=audio.duration_ms,
                content_type=_content_type(got.content_type),
                stored_at=utcnow(),
            )
        )
    log.info(
        "recording %s stored: %s bytes, %s ms", target.recording_id, got.size, audio.duration_ms
    )


def _download(
    http: TwilioMediaClient, url: str, auth: tuple[str, str], temp: Path, settings: Settings
) -> Download:
    try:
        with open(temp, "wb") as out:
            return http.download(url, auth, out, settings.recording.max_bytes)
    except requests.RequestException as exc:
        raise FetchInterrupted(
            f"the download from Twilio broke off ({type(exc).__name__})"
        ) from exc
    except OSError as exc:
        raise _storage_error(exc) from exc


def _check_status(status: int, age: dt.timedelta) -> None:
    if status == 200:
        return
    if status == 404 and age < NOT_READY_GRACE:
        raise FetchInterrupted("Twilio has not finished processing the recording yet (HTTP 404)")
    if status in (401, 403):
        raise TwilioCredentialsRefused(
            f"Twilio refused the credentials (HTTP {status}): check twilio.account_sid and "
            "twilio.auth_token, and that the recording belongs to that account"
        )
    if status == 404:
        raise RecordingGone(
            "Twilio has no such recording (HTTP 404): it was deleted or never finished"
        )
    if status in RETRYABLE_STATUSES:
        raise FetchInterrupted(f"Twilio answered HTTP {status}")
    raise RecordingUnusable(f"Twilio answered HTTP {status} to the recording download")


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in DISK_FULL_ERRNOS:
        return StorageFull("the recordings folder is full (Twilio keeps the original)")
    return exc


def _content_type(announced: str | None) -> str:
    value = (announced or "").split(";", 1)[0].strip().lower()
    return value if value.startswith("audio/") and len(value) <= 64 else DEFAULT_CONTENT_TYPE


def mark_failed(
    database: Database, recording_id: int, from_status: RecordingStatus, reason: str
) -> None:
    """Only from the status the step started at: a concurrent success is never undone."""
    with database.unit_of_work() as session:
        session.execute(
            update(Recording)
            .where(Recording.id == recording_id, Recording.status == from_status)
            .values(status=RecordingStatus.FAILED, failure_reason=reason)
        )


def run_step(
    step: Callable[[], object],
    database: Database,
    recording_id: int,
    from_status: RecordingStatus,
    last_attempt: bool,
) -> bool:
    """One step of a recording's job. Unusable input marks the row failed at once (a retry
    would meet the same file); an interruption is left to rq's retries and marks the row
    failed only on the last attempt. False when the row was marked failed."""
    try:
        step()
    except RecordingUnusable as exc:
        mark_failed(database, recording_id, from_status, exc.message)
        log.warning("recording %s failed: %s", recording_id, exc.message)
        return False
    except FetchInterrupted as exc:
        if last_attempt:
            reason = f"gave up after the last retry: {exc.message}"
            mark_failed(database, recording_id, from_status, reason)
            log.error("recording %s failed: %s", recording_id, reason)
        raise
    return True


def _delete_at_twilio(
    target: _Target, settings: Settings, database: Database, http: TwilioMediaClient
) -> None:
    """Only after the file is stored and committed; a 404 means Twilio's copy is gone already."""
    if target.ref is None:
        return
    url = target.ref.resource_url(settings.twilio.api_base)
    try:
        response = http.request(
            "DELETE", url, auth=_credentials(settings), timeout=DELETE_TIMEOUT_S
        )
    except requests.RequestException as exc:
        raise FetchInterrupted(
            f"deleting the recording at Twilio broke off ({type(exc).__name__}); "
            "the stored file is kept"
        ) from exc
    except TwilioNotConfigured as exc:
        log.error("recording %s stays at Twilio: %s", target.recording_id, exc.message)
        return
    status = int(response.status_code)
    if status in RETRYABLE_STATUSES:
        raise FetchInterrupted(f"Twilio answered HTTP {status} to the deletion")
    if status not in (200, 204, 404):
        log.error(
            "Twilio refused to delete recording %s (HTTP %s); its copy stays at Twilio",
            target.recording_id,
            status,
        )
        return
    with database.unit_of_work() as session:
        session.execute(
            update(Recording)
            .where(Recording.id == target.recording_id)
            .values(provider_deleted_at=utcnow())
        )
    log.info("recording %s deleted at Twilio", target.recording_id)
