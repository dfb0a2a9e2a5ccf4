"""Recordings of calls in progress on Twilio: start, pause, resume, and what to remember.

Kokan records the caller's own leg through Twilio's Call Recordings API with two
channels (the caller on one, what the caller hears — the agent — on the other), started
the moment an agent answers when the policy says `always`, or by the API when it says
`on_demand`. Recording the caller's leg (not the conference) also keeps a post-call
survey or payment subflow on the same file, where a `recording` node can pause it.
When Twilio refuses the REST start, the conference itself records instead (mono), so
an `always` call is never silently left unrecorded.

Pauses are kept here as offsets from the start (Kokan's clock, milliseconds) and copied
onto the recording's row when its status callback arrives; Twilio replaces the paused
span with silence (`pause_behavior="silence"`), so offsets in the file stay true.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import redis
from twilio.base.exceptions import TwilioException
from twilio.rest import Client

from kokan.config import QueueSettings
from kokan.errors import Conflict, KokanError
from kokan.redis_conn import redis_text
from kokan.twilio_rest import TwilioNotConfigured
from recording import policy

LIVE_KEY = "kokan:recording:live:{{{call}}}"
"""HASH per call that may be recorded: the flow's policy, agent, queue, the recording's SID,
state and start, and pauses:<RecordingSid> -> JSON list of spans. Braces: the call's
hash tag, as for the IVR's and the ACD driver's keys of the same call."""
LIVE_TTL_S = 4 * 3600
"""As long as the IVR keeps a call's state: no call is recorded longer than that."""
PAUSES_PREFIX = "pauses:"
RECORDING_CALLBACK_EVENTS = ["completed", "absent"]
"""Only the end matters: a finished file to fetch, or none (absent: silence throughout)."""
PAUSE_BEHAVIOR = "silence"
"""Twilio keeps the paused span as silence, so word timings and pause offsets stay true."""
STARTING_FIELD = "starting"
"""Set while one process starts the recording, so two requests never make two files."""
STARTING_TTL_MS = 15_000
"""A start stuck this long (the process died mid-request) may be tried again."""

RECORDING = "recording"
PAUSED = "paused"
FAILED = "failed"
"""The REST start failed: the conference records instead (see bridge_recording)."""

log = logging.getLogger(__name__)


class RecordingNotAllowed(Conflict):
    error_id = "recording-not-allowed"


class NotRecording(Conflict):
    error_id = "recording-not-live"


class RecordingControlFailed(KokanError):
    """Twilio refused or did not answer; the recording stays as it was."""

    error_id = "recording-control-failed"
    status = 502


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class LiveRecording:
    call_id: str
    flow_mode: str | None = None
    consent_said: bool = False
    agent: str | None = None
    queue: str | None = None
    recording_sid: str | None = None
    state: str | None = None
    started_ms: int | None = None
    pauses: dict[str, list[dict[str, int | None]]] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.recording_sid is not None and self.state in (RECORDING, PAUSED)


def remember_flow_policy(
    client: redis.Redis, call_id: str, mode: str, consent_said: bool = False
) -> None:
    """For the IVR driver: the flow's own policy for a call handed to a queue."""
    key = LIVE_KEY.format(call=call_id)
    pipe = client.pipeline(transaction=False)
    pipe.hset(key, mapping={"flow_mode": mode, "consent_said": "1" if consent_said else ""})
    pipe.expire(key, LIVE_TTL_S)
    pipe.execute()


def read(client: redis.Redis, call_id: str) -> LiveRecording:
    raw = {
        redis_text(k): redis_text(v)
        for k, v in client.hgetall(LIVE_KEY.format(call=call_id)).items()
    }
    pauses = {
        name[len(PAUSES_PREFIX) :]: json.loads(value)
        for name, value in raw.items()
        if name.startswith(PAUSES_PREFIX)
    }
    started = raw.get("started_ms", "")
    return LiveRecording(
        call_id=call_id,
        flow_mode=raw.get("flow_mode") or None,
        consent_said=bool(raw.get("consent_said")),
        agent=raw.get("agent") or None,
        queue=raw.get("queue") or None,
        recording_sid=raw.get("recording_sid") or None,
        state=raw.get("state") or None,
        started_ms=int(started) if started.isdigit() else None,
        pauses=pauses,
    )


@dataclass(frozen=True)
class BridgeRecording:
    """What the bridge TwiML adds: the consent to say, and (fallback) the conference's record."""

    consent: tuple[str, str] | None = None
    conference_callback: str | None = None


class CallRecorder:
    def __init__(
        self,
        client: redis.Redis,
        rest: Callable[[], Client],
        base_url: str,
        queues: Mapping[str, QueueSettings],
        clock: Callable[[], int] = now_ms,
    ) -> None:
        """`rest` builds the Twilio client when first needed (a Kokan without credentials
        still starts); `base_url` is the public URL Twilio calls back."""
        self.redis = client
        self._rest = rest
        self.base_url = base_url
        self.queues = queues
        self.clock = clock

    def _key(self, call_id: str) -> str:
        return LIVE_KEY.format(call=call_id)

    def callback_url(self, call_id: str, agent: str | None, queue: str | None) -> str:
        """Where Twilio reports the finished recording; the call, agent and queue ride in the
        (signed) URL, so a conference's recording, which names no CallSid, is still placed."""
        params = {"call": call_id}
        if agent:
            params["agent"] = agent
        if queue:
            params["queue"] = queue
        return f"{self.base_url}/webhooks/twilio/recording?" + urlencode(params)

    def mode(self, call_id: str, queue: str | None) -> str:
        live = read(self.redis, call_id)
        return policy.effective_mode(live.flow_mode, self.queues.get(queue or ""))

    # -- the ACD driver's hooks ------------------------------------------------------

    def answered(self, call_id: str, agent_id: str, queue: str) -> None:
        """The agent took the call: remember who and where; start recording if always.
        Never raises: a recording problem must not stop the conversation."""
        key = self._key(call_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={"agent": agent_id, "queue": queue})
        pipe.expire(key, LIVE_TTL_S)
        pipe.execute()
        if self.mode(call_id, queue) != policy.ALWAYS:
            return
        try:
            self.start(call_id)
        except (RecordingControlFailed, RecordingNotAllowed) as exc:
            log.error("recording not started through the API (%s); the conference records", exc)

    def bridge(self, call_id: str, queue: str | None, language: str) -> BridgeRecording:
        """For the bridge TwiML: the queue's consent (unless the flow decided), and the
        conference's own recording when the REST start failed."""
        live = read(self.redis, call_id)
        settings = self.queues.get(queue or "")
        mode = policy.effective_mode(live.flow_mode, settings)
        consent = None
        if live.flow_mode is None and policy.may_record(mode):
            consent = policy.queue_consent(settings, language)
        fallback = None
        if mode == policy.ALWAYS and live.state == FAILED:
            fallback = self.callback_url(call_id, live.agent, live.queue or queue)
        return BridgeRecording(consent=consent, conference_callback=fallback)

    # -- start, pause, resume --------------------------------------------------------

    def start(self, call_id: str) -> LiveRecording:
        """Start the two-channel recording of the caller's leg; a second start while one
        runs returns the running one."""
        live = read(self.redis, call_id)
        if live.live:
            return live
        if not policy.may_record(self.mode(call_id, live.queue)):
            raise RecordingNotAllowed("this call's queue and flow never record (record: never)")
        key = self._key(call_id)
        claim = self.redis.hsetnx(key, STARTING_FIELD, str(self.clock()))
        if not claim:
            stamp = redis_text(self.redis.hget(key, STARTING_FIELD))
            if stamp.isdigit() and self.clock() - int(stamp) < STARTING_TTL_MS:
                raise RecordingNotAllowed("the recording is being started by another request")
            self.redis.hset(key, STARTING_FIELD, str(self.clock()))
        try:
            try:
                created = (
                    self._rest()
                    .calls(call_id)
                    .recordings.create(
                        recording_channels="dual",
                        recording_status_callback=self.callback_url(
                            call_id, live.agent, live.queue
                        ),
                        recording_status_callback_event=RECORDING_CALLBACK_EVENTS,
                        recording_status_callback_method="POST",
                        trim="do-not-trim",
                    )
                )
            except (TwilioException, TwilioNotConfigured, OSError) as exc:
                self.redis.hset(key, "state", FAILED)
                raise RecordingControlFailed(f"Twilio did not start the recording: {exc}") from exc
            sid = str(created.sid)
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(
                key,
                mapping={"recording_sid": sid, "state": RECORDING, "started_ms": self.clock()},
            )
            pipe.expire(key, LIVE_TTL_S)
            pipe.execute()
        finally:
            self.redis.hdel(key, STARTING_FIELD)
        log.info("recording %s of the call started (two channels)", sid)
        return read(self.redis, call_id)

    def pause(self, call_id: str) -> LiveRecording:
        return self._change(call_id, PAUSED)

    def resume(self, call_id: str) -> LiveRecording:
        return self._change(call_id, RECORDING)

    def _change(self, call_id: str, wanted: str) -> LiveRecording:
        live = read(self.redis, call_id)
        if not live.live or live.recording_sid is None:
            raise NotRecording("the call is not being recorded")
        if live.state == wanted:
            return live  # pausing a paused recording changes nothing
        sid = live.recording_sid
        update: dict[str, Any] = {"status": "in-progress"}
        if wanted == PAUSED:
            update = {"status": "paused", "pause_behavior": PAUSE_BEHAVIOR}
        try:
            self._rest().calls(call_id).recordings(sid).update(**update)
        except (TwilioException, TwilioNotConfigured, OSError) as exc:
            raise RecordingControlFailed(f"Twilio did not {wanted} the recording: {exc}") from exc
        offset = self.clock() - (live.started_ms or self.clock())
        spans = list(live.pauses.get(sid, []))
        if wanted == PAUSED:
            spans.append({"start_ms": max(0, offset), "end_ms": None})
        elif spans and spans[-1].get("end_ms") is None:
            spans[-1] = {**spans[-1], "end_ms": max(0, offset)}
        key = self._key(call_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={"state": wanted, PAUSES_PREFIX + sid: json.dumps(spans)})
        pipe.expire(key, LIVE_TTL_S)
        pipe.execute()
        log.info(
            "recording %s %s at %s ms", sid, "paused" if wanted == PAUSED else "resumed", offset
        )
        return read(self.redis, call_id)


def finished(client: redis.Redis, call_id: str, recording_sid: str) -> list[dict[str, int | None]]:
    """For the recording's status callback: its paused spans for the row (a span still
    open ran to the end); the call's recording is no longer live."""
    live = read(client, call_id)
    if live.recording_sid == recording_sid and live.state in (RECORDING, PAUSED):
        client.hset(LIVE_KEY.format(call=call_id), "state", "completed")
    return list(live.pauses.get(recording_sid, []))
