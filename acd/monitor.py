"""Supervisor listen-in on a live SIP call: listen, whisper to the agent, or barge in.

Only the SIP worker that holds a call owns its audio, so the ACD cannot connect a
supervisor itself: this module checks the request, keeps the monitor's state beside the
ACD's keys and sends the worker a message through its inbox (`acd.sip_handoff`). The
worker (`ivr.sip_monitor`) dials the supervisor's URI, wires the conference ports for the
mode, and writes back how it went into the same state, which the API reads: a request is
accepted at once (202) and its outcome (ringing, active, failed with an error_id, ended)
is read with GET. A live monitor changes mode through the same request, so a supervisor
goes listen -> whisper -> barge on one leg.

The check-and-set of a request is one Lua script: two supervisors clicking at once get
one monitor, and a second supervisor cannot take over a live one by naming another URI.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from acd.errors import CallEnded
from acd.services import AcdService
from acd.sip_handoff import SipHandoff
from ivr.sip_pool import POOL_KEY, PoolMember
from kokan.errors import Conflict, InvalidInput, NotFound
from kokan.redis_conn import redis_text

MONITOR_KEY = "sip:monitor:{call}"
"""After the ACD's prefix: HASH, the supervisor monitor of one call (request and outcome)."""
LIVE_TTL_S = 12 * 3600
"""As the call's owner key (`sip_handoff.OWNER_TTL_S`): longer than any call."""
KEPT_TTL_S = 3600
"""An ended or failed monitor stays readable this long, as the ACD keeps an ended call."""
URI_MAX_CHARS = 256
"""Far above any softphone's address; a longer one is a mistake."""
URI_PATTERN = r"^sips?:[^\s<>\"]+$"
"""A SIP URI as an agent's `sip_uri` is (acd.schemas.AgentConfig), minus what would break
out of a header (angle brackets, quotes)."""

LISTEN = "listen"
"""The supervisor hears caller and agent; nobody hears the supervisor."""
WHISPER = "whisper"
"""As listen, and the agent (only) hears the supervisor."""
BARGE = "barge"
"""All three hear each other."""
MODES = (LISTEN, WHISPER, BARGE)
STOP = "stop"
"""The message that hangs up the supervisor's leg (DELETE), not a mode one can ask for."""

REQUESTED = "requested"
"""Sent to the worker, not yet acted on."""
RINGING = "ringing"
ACTIVE = "active"
"""The supervisor's leg is up and wired for `applied_mode`."""
ENDED = "ended"
FAILED = "failed"
LIVE = (REQUESTED, RINGING, ACTIVE)

SupervisorUri = Annotated[
    str, StringConstraints(max_length=URI_MAX_CHARS, pattern=URI_PATTERN, strip_whitespace=True)
]


class MonitorRequest(BaseModel):
    """POST /api/acd/calls/<call_id>/monitor."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["listen", "whisper", "barge"]
    uri: SupervisorUri | None = Field(
        default=None,
        description="the supervisor's phone; default: the SIP URI of the agent the user is",
    )


class NotSipBridged(Conflict):
    """The call is not talking to an agent on a live SIP worker (waiting, on Twilio...)."""

    error_id = "acd-call-not-sip-bridged"


class NoMonitorUri(InvalidInput):
    error_id = "acd-monitor-no-uri"


class MonitorBusy(Conflict):
    """Another supervisor's phone already monitors the call."""

    error_id = "acd-monitor-busy"


class NoMonitorSlot(Conflict):
    """The worker holding the call has no free call slot for the supervisor's leg."""

    error_id = "acd-monitor-no-slot"


class NoMonitor(NotFound):
    error_id = "acd-no-monitor"


@dataclass(frozen=True)
class MonitorView:
    call_id: str
    status: str
    mode: str
    """The mode asked for last."""
    applied_mode: str | None
    """The mode the conference ports are wired for (None until the supervisor answers)."""
    uri: str
    by: str
    error_id: str | None
    message: str | None
    updated_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "status": self.status,
            "mode": self.mode,
            "applied_mode": self.applied_mode,
            "uri": self.uri,
            "by": self.by,
            "error_id": self.error_id,
            "message": self.message,
            "updated_ms": self.updated_ms,
        }


_REQUEST = """
local status = redis.call('HGET', KEYS[1], 'status')
local live = status == 'requested' or status == 'ringing' or status == 'active'
if live then
  local uri = redis.call('HGET', KEYS[1], 'uri')
  if ARGV[1] ~= '' and ARGV[1] ~= uri then
    return {'busy', uri}
  end
  redis.call('HSET', KEYS[1], 'mode', ARGV[3], 'updated', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  return {'changed', uri}
end
local uri = ARGV[1]
if uri == '' then uri = ARGV[2] end
if uri == '' then
  return {'no-uri', ''}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'requested', 'mode', ARGV[3], 'uri', uri,
  'by', ARGV[4], 'updated', ARGV[5], 'applied_mode', '', 'error_id', '', 'message', '')
redis.call('EXPIRE', KEYS[1], ARGV[6])
return {'new', uri}
"""
"""Change the mode of a live monitor, or start a new one (ARGV: uri asked, default uri,
mode, by, now ms, ttl); one step, so two requests never make two supervisor legs."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class Monitors:
    def __init__(self, service: AcdService) -> None:
        self.service = service
        self.redis = service.redis
        self.handoff = SipHandoff(service.redis, service.keys.prefix)
        self._request = service.redis.register_script(_REQUEST)

    def key(self, call_id: str) -> str:
        return self.service.keys.prefix + MONITOR_KEY.format(call=call_id)

    # -- the API's side ---------------------------------------------------------------

    def request(
        self, call_id: str, request: MonitorRequest, *, default_uri: str | None, by: str
    ) -> MonitorView:
        """Start monitoring the call in `request.mode`, or change a live monitor's mode.
        Raises UnknownCall (404), CallEnded / NotSipBridged / MonitorBusy / NoMonitorSlot
        (409), NoMonitorUri (400)."""
        call = self.service.call(call_id)  # UnknownCall, or a bad id's 400
        if call.state == "ended":
            raise CallEnded(f"call {call_id!r} has already ended")
        worker = self.handoff.owner(call_id)
        if call.state != "connected" or worker is None:
            raise NotSipBridged(
                f"call {call_id!r} is not talking to an agent over SIP (it is {call.state})"
            )
        if not self.handoff.alive(worker):
            raise NotSipBridged(f"the SIP worker holding call {call_id!r} is gone")
        live = self._live(call_id)
        if live is None and self._full(worker):
            raise NoMonitorSlot(
                f"the SIP worker holding call {call_id!r} has no free call slot for the "
                "supervisor's leg; try again when one of its calls ends"
            )
        outcome, uri = (
            redis_text(part)
            for part in self._request(
                keys=[self.key(call_id)],
                args=[
                    request.uri or "",
                    default_uri or "",
                    request.mode,
                    by,
                    _now_ms(),
                    LIVE_TTL_S,
                ],
            )
        )
        if outcome == "busy":
            raise MonitorBusy(
                f"call {call_id!r} is already monitored from {uri}; change its mode "
                "without a uri, or wait until it ends"
            )
        if outcome == "no-uri":
            raise NoMonitorUri(
                "uri: name the supervisor's SIP URI (you are not an agent with a sip_uri)",
                problems=[{"field": "uri", "message": "required: no SIP URI of your own"}],
            )
        self.handoff.send_monitor(worker, call_id, request.mode, uri)
        return self.view(call_id)

    def stop(self, call_id: str) -> MonitorView:
        """Hang up the supervisor's leg; the call goes on. NoMonitor (404) when none is live."""
        live = self._live(call_id)
        worker = self.handoff.owner(call_id)
        if live is None or worker is None:
            raise NoMonitor(f"call {call_id!r} has no live supervisor monitor")
        self.handoff.send_monitor(worker, call_id, STOP, live.uri)
        return live

    def _live(self, call_id: str) -> MonitorView | None:
        try:
            found = self.view(call_id)
        except NoMonitor:
            return None
        return found if found.status in LIVE else None

    def _full(self, worker: str) -> bool:
        """What the worker last reported (a second old at most); no report: not known,
        and the worker itself refuses when it has no slot."""
        raw = self.redis.get(POOL_KEY.format(worker=worker))
        if raw is None:
            return False
        try:
            return PoolMember(**json.loads(raw)).free == 0
        except (ValueError, TypeError):
            return False  # another version's report: the worker decides

    def view(self, call_id: str) -> MonitorView:
        raw = self.redis.hgetall(self.key(call_id))
        if not raw:
            raise NoMonitor(f"call {call_id!r} has no supervisor monitor")
        m = {redis_text(k): redis_text(v) for k, v in raw.items()}
        return MonitorView(
            call_id=call_id,
            status=m.get("status", ""),
            mode=m.get("mode", ""),
            applied_mode=m.get("applied_mode") or None,
            uri=m.get("uri", ""),
            by=m.get("by", ""),
            error_id=m.get("error_id") or None,
            message=m.get("message") or None,
            updated_ms=int(m.get("updated") or 0),
        )

    # -- the worker's side ------------------------------------------------------------

    def report(self, call_id: str, status: str, **fields: str) -> None:
        """The worker's word on the monitor: its status and any of applied_mode, error_id,
        message. An ended or failed monitor is kept an hour for the supervisor's page."""
        key = self.key(call_id)
        pipe = self.redis.pipeline(transaction=False)
        mapping: dict[str, str | int] = {"status": status, "updated": _now_ms(), **fields}
        pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]  # redis-py's invariant dict
        pipe.expire(key, LIVE_TTL_S if status in LIVE else KEPT_TTL_S)
        pipe.execute()
