"""Recordings from the moment a provider reports one: one row per recording, one fetch job.

Two steps, because a webhook never waits for SQL: `enqueue_voicemail` (in the webhook,
Redis only) hands the callback's facts to a short job, and that job calls
`voicemail_recorded`, which writes the row and enqueues the fetch. The fetch is enqueued
only after the row is committed, so it never starts on a row that is not there yet.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kokan.config import FETCH_RETRY_INTERVALS_S
from kokan.db import Database, utcnow
from kokan.work_queues import DEFAULT_QUEUE, RECORDINGS_QUEUE, queue
from recording.errors import RecordingNotFound
from recording.models import Recording, RecordingKind, RecordingStatus
from recording.storage import Storage, key_for
from recording.twilio_urls import parse_recording_url
from recording.wav_info import read_wav_info
from tickets.models import Call, Interaction

PROVIDER_TWILIO = "twilio"
KEEP_VOICEMAIL_JOB = "recording.jobs.keep_twilio_voicemail"
KEEP_CALL_RECORDING_JOB = "recording.jobs.keep_twilio_call_recording"
FETCH_JOB = "recording.jobs.fetch_twilio_recording"
"""Jobs named by path: recording.jobs imports this module, and the web process needs only the name."""
PROCESS_JOB = "recording.processing.process_recording"
TRANSCRIBE_JOB = "recording.processing.transcribe_recording"

PROCESS_JOB_TIMEOUT_S = 15 * 60
"""Conversion runs at ~600x real time here: even the largest allowed file takes minutes."""
TRANSCRIBE_JOB_TIMEOUT_S = 60 * 60
"""Free-form vosk runs at ~0.14x real time: an eight-hour recording takes over an hour."""

FETCH_JOB_TIMEOUT_S = 15 * 60
"""The largest allowed recording at a slow 1 MB/s downloads in under ten minutes."""
REGISTER_RETRY_INTERVALS_S = (5, 30, 120, 600)
"""Writing the row fails only while the database is away (a restart, a failover)."""
REGISTER_JOB_TIMEOUT_S = 60
"""One insert and one enqueue; a minute means the database is stuck, so try again later."""
RESULT_TTL_S = 3600
"""The outcome lives on the recording row; rq's copy is only for watching the queue."""
FAILURE_TTL_S = 7 * 24 * 3600
"""A failed job's traceback stays a week, long enough for someone to look after a weekend."""
STALLED_AFTER_S = 15 * 60
"""A pending recording this old with no live job lost its job (Redis down at enqueue time)."""
LIVE_JOB_STATUSES = frozenset(
    {
        JobStatus.CREATED,
        JobStatus.QUEUED,
        JobStatus.STARTED,
        JobStatus.DEFERRED,
        JobStatus.SCHEDULED,
    }
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordingReceived:
    recording_id: int
    created: bool
    enqueued: bool


def fetch_retry(intervals: Sequence[int] = FETCH_RETRY_INTERVALS_S) -> Retry:
    """One retry per interval (recording.fetch_retry_intervals_s), waiting that long first."""
    return Retry(max=len(intervals), interval=list(intervals))


def fetch_job_id(recording_id: int) -> str:
    """One job id per recording, so a live fetch can be recognised and not started twice."""
    return f"kokan-recording-fetch-{recording_id}"


def enqueue_voicemail(
    connection: redis.Redis,
    *,
    provider_call_id: str,
    recording_url: str,
    recording_sid: str | None = None,
    duration_s: int | None = None,
) -> Job:
    """For the webhook: check the URL names a Twilio recording, then hand it to a job.

    Raises InvalidRecordingUrl at once, so a bad callback is refused rather than queued.
    """
    ref = parse_recording_url(recording_url, recording_sid)
    job: Job = queue(connection, DEFAULT_QUEUE).enqueue(
        KEEP_VOICEMAIL_JOB,
        provider_call_id,
        recording_url,
        ref.recording_sid,
        duration_s,
        retry=Retry(max=len(REGISTER_RETRY_INTERVALS_S), interval=list(REGISTER_RETRY_INTERVALS_S)),
        job_timeout=REGISTER_JOB_TIMEOUT_S,
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        description=f"keep voicemail {ref.recording_sid}",
    )
    return job


def enqueue_call_recording(
    connection: redis.Redis,
    *,
    provider_call_id: str,
    recording_url: str,
    recording_sid: str,
    duration_s: int | None,
    agent_id: str | None,
    queue_name: str | None,
    pauses: list[dict[str, int | None]],
) -> Job:
    """For the recording status callback: as enqueue_voicemail, for a call's recording."""
    ref = parse_recording_url(recording_url, recording_sid)
    job: Job = queue(connection, DEFAULT_QUEUE).enqueue(
        KEEP_CALL_RECORDING_JOB,
        provider_call_id,
        recording_url,
        ref.recording_sid,
        duration_s,
        agent_id,
        queue_name,
        pauses,
        retry=Retry(max=len(REGISTER_RETRY_INTERVALS_S), interval=list(REGISTER_RETRY_INTERVALS_S)),
        job_timeout=REGISTER_JOB_TIMEOUT_S,
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        description=f"keep call recording {ref.recording_sid}",
    )
    return job


@dataclass(frozen=True)
class CallFacts:
    """What a call recording's callback tells beyond the voicemail's: who, where, pauses."""

    agent_id: str | None = None
    queue: str | None = None
    pauses: list[dict[str, int | None]] | None = None


def voicemail_recorded(
    database: Database,
    recordings_queue: Queue,
    *,
    provider_call_id: str,
    recording_url: str,
    recording_sid: str | None = None,
    duration_s: int | None = None,
    retry: Retry | None = None,
    kind: RecordingKind = RecordingKind.VOICEMAIL,
    facts: CallFacts | None = None,
) -> RecordingReceived:
    """Keep a Twilio recording (a voicemail, or a call's with `facts`): a pending row (once
    per RecordingSid) and its fetch job.

    A duplicate delivery finds the row and changes nothing, unless the row is still
    pending with no live job (the first delivery's enqueue was lost): then it enqueues.
    Raises InvalidRecordingUrl for a URL that does not name a Twilio recording.
    """
    ref = parse_recording_url(recording_url, recording_sid)
    facts = facts or CallFacts()
    created = False
    try:
        with database.unit_of_work() as session:
            row = _find(session, PROVIDER_TWILIO, ref.recording_sid)
            if row is None:
                row = Recording(
                    call_id=_call_row_id(session, PROVIDER_TWILIO, provider_call_id),
                    provider=PROVIDER_TWILIO,
                    provider_call_id=provider_call_id,
                    provider_account_id=ref.account_sid,
                    provider_recording_id=ref.recording_sid,
                    kind=kind,
                    status=RecordingStatus.PENDING,
                    duration_ms=duration_s * 1000 if duration_s is not None else None,
                    agent_id=facts.agent_id,
                    queue=facts.queue,
                    pauses=facts.pauses or None,
                )
                session.add(row)
                session.flush()
                link_interaction(session, row)
                created = True
            recording_id, status = row.id, row.status
    except IntegrityError:
        # a concurrent delivery inserted the same recording first; it enqueues the fetch
        with database.unit_of_work() as session:
            row = _find(session, PROVIDER_TWILIO, ref.recording_sid)
            if row is None:
                raise
            recording_id = row.id
        log.info("recording %s was inserted by a concurrent delivery", ref.recording_sid)
        return RecordingReceived(recording_id, created=False, enqueued=False)

    if created:
        enqueue_fetch(recordings_queue, recording_id, retry)
        log.info("%s %s is recording %s; fetch enqueued", kind, ref.recording_sid, recording_id)
        return RecordingReceived(recording_id, created=True, enqueued=True)
    if status == RecordingStatus.PENDING and not fetch_is_live(recordings_queue, recording_id):
        enqueue_fetch(recordings_queue, recording_id, retry)
        log.warning("recording %s was pending with no fetch job; enqueued again", recording_id)
        return RecordingReceived(recording_id, created=False, enqueued=True)
    log.info("duplicate delivery of recording %s: nothing to do", ref.recording_sid)
    return RecordingReceived(recording_id, created=False, enqueued=False)


def recordings_queue(connection: redis.Redis) -> Queue:
    return queue(connection, RECORDINGS_QUEUE)


def enqueue_fetch(queue: Queue, recording_id: int, retry: Retry | None = None) -> Job:
    job: Job = queue.enqueue(
        FETCH_JOB,
        recording_id,
        job_id=fetch_job_id(recording_id),
        retry=retry or fetch_retry(),
        job_timeout=FETCH_JOB_TIMEOUT_S,
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        description=f"fetch recording {recording_id}",
    )
    return job


def fetch_is_live(queue: Queue, recording_id: int) -> bool:
    """A fetch job for the recording is waiting, scheduled for a retry, or running."""
    try:
        job = Job.fetch(fetch_job_id(recording_id), connection=queue.connection)
    except NoSuchJobError:
        return False
    return job.get_status(refresh=False) in LIVE_JOB_STATUSES


def process_job_id(recording_id: int) -> str:
    return f"kokan-recording-process-{recording_id}"


def transcribe_job_id(recording_id: int) -> str:
    return f"kokan-recording-transcribe-{recording_id}"


def job_is_live(queue: Queue, job_id: str) -> bool:
    try:
        job = Job.fetch(job_id, connection=queue.connection)
    except NoSuchJobError:
        return False
    return job.get_status(refresh=False) in LIVE_JOB_STATUSES


def enqueue_processing(queue: Queue, recording_id: int, retry: Retry | None = None) -> bool:
    """Chain the post-processing job after a fetch, unless one is already on its way."""
    job_id = process_job_id(recording_id)
    if job_is_live(queue, job_id):
        return False
    queue.enqueue(
        PROCESS_JOB,
        recording_id,
        job_id=job_id,
        retry=retry or fetch_retry(),
        job_timeout=PROCESS_JOB_TIMEOUT_S,
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        description=f"convert recording {recording_id}",
    )
    return True


def enqueue_transcription(queue: Queue, recording_id: int, retry: Retry | None = None) -> bool:
    job_id = transcribe_job_id(recording_id)
    if job_is_live(queue, job_id):
        return False
    queue.enqueue(
        TRANSCRIBE_JOB,
        recording_id,
        job_id=job_id,
        retry=retry or fetch_retry(),
        job_timeout=TRANSCRIBE_JOB_TIMEOUT_S,
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        description=f"transcribe recording {recording_id}",
    )
    return True


def fetch_again(
    database: Database, queue: Queue, recording_id: int, retry: Retry | None = None
) -> bool:
    """Try a failed recording once more (after fixing the credentials, freeing disk, …)."""
    with database.unit_of_work() as session:
        row = session.get(Recording, recording_id)
        if row is None:
            raise RecordingNotFound(f"no recording {recording_id}")
        changed = row.status == RecordingStatus.FAILED
        if changed:
            row.status, row.failure_reason = RecordingStatus.PENDING, None
    if changed:
        enqueue_fetch(queue, recording_id, retry)
    return changed


def enqueue_stalled(
    database: Database,
    queue: Queue,
    older_than_s: float = STALLED_AFTER_S,
    retry: Retry | None = None,
) -> list[int]:
    """Give a fetch job to every pending recording that has lost its own; for a periodic run."""
    cutoff = utcnow() - dt.timedelta(seconds=older_than_s)
    with database.unit_of_work() as session:
        pending = session.scalars(
            select(Recording.id).where(
                Recording.status == RecordingStatus.PENDING, Recording.created_at < cutoff
            )
        ).all()
    requeued = [rid for rid in pending if not fetch_is_live(queue, rid)]
    for recording_id in requeued:
        enqueue_fetch(queue, recording_id, retry)
        log.warning("recording %s had no fetch job; enqueued again", recording_id)
    return requeued


def link_call(session: Session, row: Recording) -> None:
    """Call-detail rows are written asynchronously: link the call once its row exists."""
    if row.call_id is None and row.provider_call_id:
        row.call_id = _call_row_id(session, row.provider, row.provider_call_id)
    link_interaction(session, row)


def link_interaction(session: Session, row: Recording) -> None:
    """The call's interaction (and so its ticket) is made when the call ends, in any order
    with the recording: link it whenever a step meets both."""
    if row.interaction_id is None and row.provider_call_id:
        row.interaction_id = session.scalar(
            select(Interaction.id).where(
                Interaction.provider == row.provider,
                Interaction.provider_message_id == row.provider_call_id,
            )
        )


def _call_row_id(session: Session, provider: str, provider_call_id: str) -> int | None:
    return session.scalar(
        select(Call.id).where(Call.provider == provider, Call.provider_call_id == provider_call_id)
    )


def _find(session: Session, provider: str, provider_recording_id: str) -> Recording | None:
    return session.scalar(
        select(Recording).where(
            Recording.provider == provider,
            Recording.provider_recording_id == provider_recording_id,
        )
    )


PROVIDER_SIP = "sip"
LOCAL_CONTENT_TYPE = "audio/wav"
"""What a SIP media worker records: 16-bit PCM WAV at the bridge's rate."""


def voicemail_recorded_locally(
    database: Database,
    recordings_queue: Queue | None,
    storage: Storage,
    *,
    provider_call_id: str,
    recording_id: str,
    path: Path,
    retry: Retry | None = None,
) -> RecordingReceived:
    """Keep a voicemail a SIP media worker recorded itself (see `recorded_locally`)."""
    return recorded_locally(
        database,
        recordings_queue,
        storage,
        provider_call_id=provider_call_id,
        recording_id=recording_id,
        path=path,
        retry=retry,
    )


def recorded_locally(
    database: Database,
    recordings_queue: Queue | None,
    storage: Storage,
    *,
    provider_call_id: str,
    recording_id: str,
    path: Path,
    retry: Retry | None = None,
    kind: RecordingKind = RecordingKind.VOICEMAIL,
    agent_id: str | None = None,
    queue: str | None = None,
) -> RecordingReceived:
    """Keep a recording a SIP media worker made itself (a voicemail, or a bridged call's
    two-channel WAV with its agent and queue): nothing to fetch, so the row is stored at
    once (once per `recording_id`), the file moved under its key, and the conversion job
    enqueued (unless `recordings_queue` is None: post-processing is off).

    Raises RecordingEmpty / RecordingCorrupt for a file with no whole audio; it is left
    where it is.
    """
    info = read_wav_info(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        with database.unit_of_work() as session:
            row = _find(session, PROVIDER_SIP, recording_id)
            if row is not None:
                return RecordingReceived(row.id, created=False, enqueued=False)
            row = Recording(
                call_id=_call_row_id(session, PROVIDER_SIP, provider_call_id),
                provider=PROVIDER_SIP,
                provider_call_id=provider_call_id,
                provider_recording_id=recording_id,
                kind=kind,
                status=RecordingStatus.STORED,
                agent_id=agent_id,
                queue=queue,
                duration_ms=info.duration_ms,
                channels=info.channels,
                size_bytes=path.stat().st_size,
                sha256=digest,
                content_type=LOCAL_CONTENT_TYPE,
                stored_at=utcnow(),
            )
            session.add(row)
            session.flush()
            row.storage_key = key_for(row.id, "wav")
            with storage.staging() as temp:
                shutil.copyfile(path, temp)
                storage.put(row.storage_key, temp)
            link_interaction(session, row)
            stored_id = row.id
    except IntegrityError:
        with database.unit_of_work() as session:
            row = _find(session, PROVIDER_SIP, recording_id)
            if row is None:
                raise
            return RecordingReceived(row.id, created=False, enqueued=False)
    path.unlink(missing_ok=True)
    enqueued = recordings_queue is not None and enqueue_processing(
        recordings_queue, stored_id, retry
    )
    log.info("SIP %s %s stored as recording %s", kind.value, recording_id, stored_id)
    return RecordingReceived(stored_id, created=True, enqueued=enqueued)
