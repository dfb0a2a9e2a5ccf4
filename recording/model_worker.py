"""rq's forking worker, taught to load the vosk model in itself before forking a horse.

rq runs every job in a forked work horse, so a model a horse loads dies with it and the
next transcription pays 1-1.5 s and ~500 MB again. Loaded in the worker process just
before the first transcription job forks, the model is inherited by every later horse
(copy-on-write): once per worker process, and only in workers that get such work.
"""

from __future__ import annotations

import logging
from typing import Any

from rq import Worker

from ivr.speech import RECOGNISE_JOB
from kokan import config
from recording import transcribe
from recording.services import TRANSCRIBE_JOB

log = logging.getLogger(__name__)


class ModelSharingWorker(Worker):
    def execute_job(self, job: Any, queue: Any) -> Any:
        if job.func_name in (TRANSCRIBE_JOB, RECOGNISE_JOB):
            try:
                settings = config.load().settings
                if job.func_name == TRANSCRIBE_JOB:
                    transcribe.preload(settings)
                elif (folder := transcribe.model_path(settings)) is not None:
                    transcribe.load_model(folder)  # callers' speech: whatever post_process says
            except Exception:
                # the horse meets the same problem and fails the job with it, visibly
                log.exception("could not load the vosk model before recognising speech")
        return super().execute_job(job, queue)
