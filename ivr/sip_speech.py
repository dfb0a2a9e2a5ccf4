"""Spoken answers over SIP, the media worker's half: capture the utterance, ask the `asr` queue.

A SIP media worker never loads vosk (~500 MB, 1-1.5 s per process): for a `gather` node
that accepts speech it records what the caller says into a WAV file, decides by the
caller's level when the utterance has ended, and enqueues `ivr.speech.recognise_phrase`
on the `asr` queue, where `kokan worker` keeps the model loaded. The result is polled from
the event loop between pjsua's event pumps, never waited for, and a job that fails or is
late is no input, so the node's retry and failure path runs and the caller is never left
in silence.

`Capture` is the end-of-utterance rule as a plain object fed with (time, level), so the
driver only reads the level and acts on its answer; `SpeechJobs` is the queue.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from ivr.engine import Event, Input, NoInput
from kokan.work_queues import ASR_QUEUE

RECOGNISE_JOB = "ivr.speech.recognise_phrase"
"""The job by name, not imported: ivr.speech brings pydub and vosk into the media worker."""
SPEECH_LEVEL = 6
"""The caller's level (pjsua's 0-255, linear: mean amplitude x 255 / 32767) at which they
are speaking: a silent line is 0, espeak-ng's words over G.711 measure 8-32 (mean amplitude
~1000-4000); 6 is ~ -35 dBFS, above line noise, below a quiet voice."""
END_SILENCE_S = 0.8
"""Quiet after speech that ends the utterance: longer than the pause between words of a
short answer, short enough that the caller does not wonder whether they were heard."""
MAX_SPEECH_S = 15.0
"""The longest answer captured: a menu answer is a few words; a caller who talks on (or a
noisy line) is cut here and recognised, not recorded for ever."""
RESULT_WAIT_S = 8.0
"""How long the caller waits for recognition (a few hundredths of real time on a worker
with the model loaded): past this the answer counts as no input and the node goes on."""
RESULT_POLL_S = 0.05
"""How often the loop asks Redis for the job's result: one round trip per 50 ms per call."""
JOB_TIMEOUT_S = 30
"""rq's limit on one recognition (a cold worker loads the model first)."""
RESULT_TTL_S = 60
"""Results are read within RESULT_WAIT_S; kept a little longer for someone looking into a call."""

log = logging.getLogger(__name__)


class Status(enum.Enum):
    PENDING = "pending"
    FAILED = "failed"
    DONE = "done"


@dataclass(frozen=True)
class Answer:
    """What the job said, or that it had nothing to say."""

    status: Status
    phrase: str | None = None
    """The node's phrase the caller said (None: something else, or nothing)."""
    heard: str = ""


@dataclass
class Capture:
    """One utterance being recorded for a Listen, then being recognised."""

    path: Path
    phrases: tuple[str, ...]
    language: str
    speech_at: float | None = None
    """When the caller's level first reached SPEECH_LEVEL."""
    quiet_since: float | None = None
    job: str | None = None
    """The recognition job, once the utterance has ended."""
    result_deadline: float = 0.0
    next_poll: float = 0.0

    @property
    def speaking(self) -> bool:
        return self.speech_at is not None

    def hear(self, now: float, level: int) -> bool:
        """Feed the caller's current level; True when the utterance has ended."""
        if level >= SPEECH_LEVEL:
            if self.speech_at is None:
                self.speech_at = now
            self.quiet_since = None
        elif self.speech_at is not None and self.quiet_since is None:
            self.quiet_since = now
        if self.speech_at is None:
            return False
        if now - self.speech_at >= MAX_SPEECH_S:
            return True
        return self.quiet_since is not None and now - self.quiet_since >= END_SILENCE_S


def event_for(answer: Answer) -> Event:
    """The engine's event for a recognition, as Twilio's Gather would give it: a phrase
    is the caller's speech; words that are none of the phrases are an answer that matches
    nothing (the node's invalid prompt); nothing heard, a failed or a late job is no input."""
    if answer.status is Status.DONE and answer.phrase is not None:
        return Input(speech=answer.phrase)
    if answer.status is Status.DONE and answer.heard:
        return Input(speech="")
    return NoInput()


def phrases_of(phrases: Sequence[str], hints: Sequence[str]) -> tuple[str, ...]:
    """What recognition is restricted to: the node's phrases, else its hints (the engine
    accepts any answer of a node without phrases); empty means speech cannot be recognised."""
    chosen = tuple(phrase for phrase in phrases if phrase.strip())
    return chosen or tuple(hint for hint in hints if hint.strip())


class SpeechJobs:
    """The `asr` queue as the driver sees it: submit an utterance, poll for its answer."""

    def __init__(self, connection: redis.Redis, folder: Path) -> None:
        """`folder`: where utterances are written; `kokan worker` must read the same path
        (the data folder, shared like the recordings' staging folder)."""
        self.connection = connection
        self.folder = folder
        self.queue = Queue(ASR_QUEUE, connection=connection)

    def path_for(self, call_id: str, step: int) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / f"{call_id}-{step}.wav"

    def submit(self, path: Path, phrases: Sequence[str], language: str) -> str:
        job = self.queue.enqueue(
            RECOGNISE_JOB,
            args=(str(path), list(phrases)),
            kwargs={"language": language},
            job_timeout=JOB_TIMEOUT_S,
            # a job nobody took within the caller's wait is stale: dropped, not recognised
            ttl=int(RESULT_WAIT_S) + 1,
            result_ttl=RESULT_TTL_S,
            failure_ttl=RESULT_TTL_S * 60,
            description=f"speech answer {path.name}",
        )
        return str(job.id)

    def result(self, job_id: str) -> Answer:
        try:
            job = Job.fetch(job_id, connection=self.connection)
        except NoSuchJobError:
            return Answer(Status.FAILED)
        status = job.get_status(refresh=False)
        if status == JobStatus.FINISHED:
            value: Any = job.return_value()
            if not isinstance(value, dict):
                return Answer(Status.FAILED)
            phrase = value.get("phrase")
            return Answer(
                Status.DONE,
                phrase=phrase if isinstance(phrase, str) else None,
                heard=str(value.get("heard") or ""),
            )
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            return Answer(Status.FAILED)
        return Answer(Status.PENDING)

    def forget(self, capture: Capture) -> None:
        """The utterance is no longer needed (answered, abandoned, or the caller left)."""
        with contextlib.suppress(OSError):
            capture.path.unlink(missing_ok=True)
