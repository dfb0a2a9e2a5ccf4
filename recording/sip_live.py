"""Start, pause and resume the recording of a call held by a SIP worker, through the same
API and the same state as a Twilio call's (`recording.live`).

Only the `kokan sip` worker that holds a call owns its audio, so the API cannot record it
itself: it checks the request as for Twilio (the policy: `never` refuses a start; a
running recording is the answer to a second start), sends the worker a message through
its inbox (`acd.sip_handoff`, as a supervisor's monitor does), and waits a moment for the
worker to say it acted. The worker (`ivr.sip_driver`) writes what it did into the call's
`recording.live` hash through `SipRecordingState`: so `recording.live.read` shows a SIP
call's recording, its state and its paused spans exactly as a Twilio call's.

Over SIP a pause stops both legs' recorders and a resume starts new files
(`ivr.sip_recordings`): the paused span is not in the two-channel WAV at all. The spans
kept here are, as for Twilio, offsets of Kokan's clock from the start.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import redis

from acd.services import AcdService
from acd.sip_handoff import SipHandoff
from kokan.errors import Conflict
from kokan.redis_conn import redis_text
from recording import policy
from recording.live import (
    LIVE_KEY,
    LIVE_TTL_S,
    PAUSED,
    PAUSES_PREFIX,
    RECORDING,
    CallRecorder,
    LiveRecording,
    NotRecording,
    RecordingControlFailed,
    RecordingNotAllowed,
    now_ms,
    read,
)

START = "start"
PAUSE = "pause"
RESUME = "resume"
ACTIONS = (START, PAUSE, RESUME)
COMPLETED = "completed"
"""The bridge ended and the file went to the recording pipeline (as Twilio's `finished`)."""
ERROR_FIELD = "sip_error"
"""In the call's live hash: why the worker could not do what was last asked (cleared by
each request before it is sent)."""
CONTROL_WAIT_S = 3.0
"""How long the API waits for the worker: its inbox reader hands a message to the loop
within ~50 ms; a loaded 2-core machine gets ample margin, a dead worker a clear 502."""
CONTROL_POLL_S = 0.02
"""How often the API looks whether the worker acted: one HGETALL every 20 ms."""


class SipCallNotBridged(Conflict):
    """The call is not talking to an agent on a live SIP worker (waiting, gone, ended)."""

    error_id = "recording-call-not-bridged"


class SipRecordingState:
    """The worker's side: what it did to a call's recording, into the hash the API reads."""

    def __init__(self, client: redis.Redis, clock: Callable[[], int] = now_ms) -> None:
        self.redis = client
        self.clock = clock

    def _write(self, call_id: str, mapping: dict[str, str | int]) -> None:
        key = LIVE_KEY.format(call=call_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]  # redis-py's invariant dict
        pipe.expire(key, LIVE_TTL_S)
        pipe.execute()

    def bridged(self, call_id: str, agent: str, queue: str, flow_mode: str | None) -> None:
        """The agent and queue, and the flow's own policy when it set one, for the API's
        checks (who may control it, whether it may be recorded at all)."""
        mapping: dict[str, str | int] = {"agent": agent, "queue": queue}
        if flow_mode is not None:
            mapping["flow_mode"] = flow_mode
        self._write(call_id, mapping)

    def started(self, call_id: str, recording_id: str) -> None:
        self._write(
            call_id,
            {"recording_sid": recording_id, "state": RECORDING, "started_ms": self.clock()},
        )

    def paused(self, call_id: str) -> None:
        self._change(call_id, PAUSED)

    def resumed(self, call_id: str) -> None:
        self._change(call_id, RECORDING)

    def _change(self, call_id: str, wanted: str) -> None:
        live = read(self.redis, call_id)
        sid = live.recording_sid
        if sid is None:
            return
        offset = max(0, self.clock() - (live.started_ms or self.clock()))
        spans = list(live.pauses.get(sid, []))
        if wanted == PAUSED:
            spans.append({"start_ms": offset, "end_ms": None})
        elif spans and spans[-1].get("end_ms") is None:
            spans[-1] = {**spans[-1], "end_ms": offset}
        self._write(call_id, {"state": wanted, PAUSES_PREFIX + sid: json.dumps(spans)})

    def ended(self, call_id: str) -> None:
        self._write(call_id, {"state": COMPLETED})

    def refused(self, call_id: str, message: str) -> None:
        self._write(call_id, {ERROR_FIELD: message})


class SipRecordings:
    """The API's side: a call's recording controlled through the worker that holds it."""

    def __init__(
        self,
        acd: AcdService,
        recorder: CallRecorder,
        *,
        wait_s: float | None = None,
        poll_s: float = CONTROL_POLL_S,
    ) -> None:
        """`recorder`: the Twilio recorder, for its queues (the policy of each);
        `wait_s`: how long to wait for the worker (default CONTROL_WAIT_S)."""
        self.acd = acd
        self.redis = acd.redis
        self.recorder = recorder
        self.handoff = SipHandoff(acd.redis, acd.keys.prefix)
        self.wait_s = CONTROL_WAIT_S if wait_s is None else wait_s
        self.poll_s = poll_s

    def worker(self, call_id: str) -> str | None:
        """The SIP worker that holds the call; None: not a SIP call (or no longer held)."""
        return self.handoff.owner(call_id)

    def control(self, call_id: str, worker: str, action: str) -> LiveRecording:
        """Raises SipCallNotBridged / RecordingNotAllowed / NotRecording (409) and
        RecordingControlFailed (502: the worker refused, or did not answer in time)."""
        call = self.acd.call(call_id)
        if call.state != "connected":
            raise SipCallNotBridged(
                f"call {call_id!r} is not talking to an agent over SIP (it is {call.state})"
            )
        if not self.handoff.alive(worker):
            raise SipCallNotBridged(f"the SIP worker holding call {call_id!r} is gone")
        live = read(self.redis, call_id)
        if action == START:
            if live.live:
                return live  # a second start: the running recording is the answer
            mode = self.recorder.mode(call_id, live.queue or call.queue)
            if not policy.may_record(mode):
                raise RecordingNotAllowed("this call's queue and flow never record (record: never)")
        else:
            if not live.live:
                raise NotRecording("the call is not being recorded")
            wanted = PAUSED if action == PAUSE else RECORDING
            if live.state == wanted:
                return live  # pausing a paused recording changes nothing
        key = LIVE_KEY.format(call=call_id)
        self.redis.hdel(key, ERROR_FIELD)
        self.handoff.send_record(worker, call_id, action)
        deadline = time.monotonic() + self.wait_s
        while True:
            live = read(self.redis, call_id)
            if _done(live, action):
                return live
            error = redis_text(self.redis.hget(key, ERROR_FIELD))
            if error:
                raise RecordingControlFailed(f"the SIP worker did not {action} it: {error}")
            if time.monotonic() >= deadline:
                raise RecordingControlFailed(
                    f"the SIP worker holding the call did not {action} the recording "
                    f"within {self.wait_s:g} s"
                )
            time.sleep(self.poll_s)


def _done(live: LiveRecording, action: str) -> bool:
    if action == START:
        return live.live
    return live.live and live.state == (PAUSED if action == PAUSE else RECORDING)
