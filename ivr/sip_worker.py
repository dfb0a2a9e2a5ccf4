"""One SIP media worker (`kokan sip`): a pjsua2 endpoint walking calls through the engine.

The wiring only: published flows and the clock for the engine, Redis for call state, the
ACD (and this worker's inbox for the offers of the callers it holds) and call-detail
events, the database for flows and voicemails, a prompt cache under the data folder.
Voicemails are handed to the recording pipeline on a side thread, so SQL never holds up
the event loop that carries every call's audio.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from acd.keys import Keys
from acd.queue_settings import StoredQueues
from acd.schemas import DEFAULT_RING_TIMEOUT_S
from acd.services import AcdService
from acd.sip_handoff import SipHandoff
from ivr.call_store import CallStore
from ivr.engine import Engine, Environment
from ivr.http_fetch import fetch_json
from ivr.publishing import PublishedFlows
from ivr.sip_adapter import SipEndpoint
from ivr.sip_driver import PROVIDER, Driver
from ivr.sip_pool import PoolMember, PoolRegistry, PoolReporter
from ivr.sip_prompts import PromptCache
from ivr.sip_recordings import keep_bridged_recording
from ivr.sip_speech import SpeechJobs
from ivr.sip_transfer import TransferRules
from ivr.twiml import APOLOGY
from kokan import logs
from kokan.config import Settings
from kokan.db import Database, utcnow
from recording.services import fetch_retry, recordings_queue, voicemail_recorded_locally
from recording.storage import LocalStorage

VOICEMAIL_FOLDER = "sip-voicemail"
"""Under the data folder: a voicemail being recorded; moved into recordings once kept."""
SPEECH_FOLDER = "sip-speech"
"""Under the data folder: callers' spoken answers, read by `kokan worker`'s `asr` jobs."""
VOICEMAIL_THREADS = 1
"""Voicemails are few and each is one insert: one side thread keeps them in order."""

JOIN_ACD = True
"""Queued SIP callers join the ACD, and its offers come back to this worker to be rung
and bridged here; off, a queued caller only hears the queue's music."""

log = logging.getLogger(__name__)


class SipWorker:
    def __init__(self, settings: Settings, database: Database, client: redis.Redis) -> None:
        self.settings = settings
        self.database = database
        self.redis = client
        data_dir = settings.resolved_data_dir
        self.prompts = PromptCache(data_dir, settings.flows_dir)
        self.endpoint = SipEndpoint(settings.sip)
        self._keeper = ThreadPoolExecutor(VOICEMAIL_THREADS, thread_name_prefix="sip-voicemail")
        self.worker_id = worker_id(settings)
        acd = AcdService(client, defer_routing=True) if JOIN_ACD else None
        self.queues = StoredQueues(client, Keys(), settings.queues)
        engine = Engine(PublishedFlows(database), Environment(now=utcnow, fetch_json=fetch_json))
        self.driver = Driver(
            engine=engine,
            store=CallStore(client, namespace=PROVIDER),
            media=self.endpoint,
            prompts=self.prompts,
            flow_for_number=lambda called: settings.ivr.numbers.get(
                called, settings.ivr.default_flow
            ),
            hold_music=self._hold_music,
            recordings_dir=data_dir / VOICEMAIL_FOLDER,
            keep_voicemail=self._keep_voicemail,
            clock=time.monotonic,
            acd=acd,
            handoff=SipHandoff(client, acd.keys.prefix) if acd is not None else None,
            worker_id=self.worker_id,
            ring_timeout=self._ring_timeout,
            queues=self.queues,
            survey_by_sms=settings.tickets.sms_survey.mode == "always",
            keep_call_recording=lambda recorded: self._keeper.submit(
                keep_bridged_recording, settings, database, client, recorded
            ),
            speech=SpeechJobs(client, data_dir / SPEECH_FOLDER),
            max_calls=settings.sip.max_calls,
            transfer=TransferRules.of(settings.sip),
        )
        self.endpoint.driver = self.driver
        self.pool = PoolReporter(PoolRegistry(client), self.pool_member)

    def pool_member(self) -> PoolMember:
        """This worker as the pool sees it. Read from the report thread: the sizes of the
        driver's dicts only, never a pjsua2 object."""
        sip = self.settings.sip
        return PoolMember(
            worker=self.worker_id,
            host=sip.public_address or sip.host,
            port=sip.port,
            capacity=sip.max_calls,
            # every pjsua call takes a slot: a caller's leg, each agent leg rung for it and
            # each supervisor listening in
            live_calls=self.driver.legs_in_use(),
            pid=os.getpid(),
        )

    def _hold_music(self, queue: str) -> str | None:
        configured = self.queues.get(queue)
        return configured.hold_music if configured is not None else None

    def _ring_timeout(self, queue: str) -> float:
        configured = self.queues.get(queue)
        return configured.ring_timeout_seconds if configured is not None else DEFAULT_RING_TIMEOUT_S

    def _keep_voicemail(self, call_id: str, path: Path, seconds: int) -> None:
        self._keeper.submit(self._keep, call_id, path)

    def _keep(self, call_id: str, path: Path) -> None:
        token = logs.call_id_var.set(call_id)
        try:
            recording = self.settings.recording
            voicemail_recorded_locally(
                self.database,
                recordings_queue(self.redis) if recording.post_process else None,
                LocalStorage(self.settings.recordings_dir),
                provider_call_id=call_id,
                recording_id=path.stem,
                path=path,
                retry=fetch_retry(recording.fetch_retry_intervals_s),
            )
        except Exception:
            log.exception("could not keep the voicemail %s; the file stays there", path)
        finally:
            logs.call_id_var.reset(token)

    def prepare(self) -> None:
        """Speak the apology once before the first call: a broken TTS shows at start, and a
        failing call never waits for espeak-ng to say sorry."""
        for say in APOLOGY:
            self.prompts.audio(say)
        self.prompts.beep()
        self.prompts.ringback()

    def run(self, stop: threading.Event) -> None:
        self.prepare()
        self.endpoint.start()
        handoff = self.driver.handoff
        try:
            if handoff is not None:  # alive before the first call can be offered
                handoff.beat(self.worker_id)
            self.pool.start()
            self.endpoint.run(stop)
        finally:
            self.pool.stop()
            self._keeper.shutdown(wait=True)
            if handoff is not None:
                try:  # every call is hung up and ended in the ACD by now
                    handoff.stopped(self.worker_id)
                except Exception:
                    log.exception("could not mark this worker stopped; its heartbeat expires")


def worker_id(settings: Settings) -> str:
    """Names this worker's inbox: unique per process across machines, and readable in
    Redis (host, SIP port, pid)."""
    sip = settings.sip
    return f"{socket.gethostname()}-{sip.public_address or sip.host}-{sip.port}-{os.getpid()}"


def run_until_signalled(settings: Settings, database: Database, client: redis.Redis) -> None:
    """`kokan sip`: serve calls until SIGTERM or Ctrl-C, then hang up and stop cleanly."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    SipWorker(settings, database, client).run(stop)
