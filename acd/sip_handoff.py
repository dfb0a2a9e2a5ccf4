"""The ACD's hand-off to SIP media workers: an offer for a SIP caller is dialed by the
worker that holds the caller, because only that process owns the caller's media.

A SIP worker claims each call it queues (call id -> worker id) before joining it to the
ACD. Whichever process makes an offer (`kokan router`) looks the owner up and, for a SIP
call, pushes the offer onto the worker's inbox list instead of ringing through Twilio.
A reader thread of the worker waits on its inbox with a blocking pop and hands what comes
to the pjsua loop through a local queue (so the loop never calls Redis to look), which rings the agent
itself and reports answer, no-answer and the end to the ACD like the Twilio webhooks do.
Each worker keeps a heartbeat key alive. An offer for a call whose worker has no
heartbeat (killed, its calls lost with it) is not sent: the call is ended in the ACD, so
its agents are not rung for a caller who is no longer there.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from acd.results import Offer

SIP_CALL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,47}$")
"""Every id a SIP worker gives its calls (`ivr.sip_driver.kokan_call_id`: the Call-ID as
it is, or `sip-` + its hash), here so a web process checks one without loading the worker."""
OWNER_KEY = "sip:owner:{call}"
"""After the ACD's prefix: the SIP worker that holds a queued call (absent: not SIP)."""
INBOX_KEY = "sip:inbox:{worker}"
"""After the ACD's prefix: the list of offers and cancels one SIP worker must act on."""
ALIVE_KEY = "sip:alive:{worker}"
"""After the ACD's prefix: present while the worker's loop runs (its heartbeat)."""
HEARTBEAT_S = 1.0
"""How often a worker renews its heartbeat: one SET a second."""
ALIVE_TTL_S = 5
"""A worker silent this long is gone: five missed beats, well past a slow loop turn or a
garbage collection, and still short enough that its lost calls stop ringing agents soon."""
OWNER_TTL_S = 12 * 3600
"""Longer than any call; only a worker killed before its hang-up leaves one to expire."""
INBOX_TTL_S = 600
"""Refreshed by every push: the inbox of a worker gone for good disappears on its own."""
INBOX_MAX_LEN = 1000
"""Far above what a 4-call worker gets between two polls; a dead worker's list stays bounded."""
TAKE_BATCH = 16
"""Messages taken per poll: four calls ring-all to a few agents fit in one round trip."""
INBOX_WAIT_S = 1
"""How long the reader's blocking pop waits before it looks at its stop flag again."""
READ_RETRY_S = 1.0
"""The pause after a failed read (Redis away) before trying again; offers wait in the list."""

log = logging.getLogger(__name__)

OFFER = "offer"
CANCEL = "cancel"
"""The ACD expired the offer (its deadline passed): stop ringing the call's agents."""
MAX_WAIT = "max-wait"
"""The caller waited the queue's maximum; the ACD ended the call with `action`."""
MONITOR = "monitor"
"""A supervisor asked to monitor the call (`acd.monitor`): `action` is the mode, `uri`
the supervisor's phone."""
RECORD = "record"
"""Someone asked through the recordings API (`recording.sip_live`) to start, pause or
resume the bridge's two-channel recording: `action` says which."""


@dataclass(frozen=True)
class Message:
    kind: str
    call_id: str
    offer: Offer | None = None
    action: str = ""
    uri: str = ""


def _offer(data: Mapping[str, Any]) -> Offer:
    return Offer(
        call_id=str(data["call_id"]),
        queue=str(data["queue"]),
        agents=tuple(str(a) for a in data["agents"]),
        kind=str(data["kind"]),
        channel=str(data["channel"]),
        deadline_ms=int(data["deadline_ms"]),
        callback_number=data.get("callback_number") or None,
        attempt=int(data["attempt"]),
    )


class SipHandoff:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        """`prefix`: the ACD's key prefix (`AcdService.keys.prefix`), so a second ACD
        namespace has its own owners and inboxes."""
        self.redis = client
        self.prefix = prefix

    def _owner_key(self, call_id: str) -> str:
        return self.prefix + OWNER_KEY.format(call=call_id)

    def _inbox_key(self, worker: str) -> str:
        return self.prefix + INBOX_KEY.format(worker=worker)

    def _alive_key(self, worker: str) -> str:
        return self.prefix + ALIVE_KEY.format(worker=worker)

    # -- the SIP worker ---------------------------------------------------------------

    def beat(self, worker: str) -> None:
        self.redis.set(self._alive_key(worker), 1, ex=ALIVE_TTL_S)

    def stopped(self, worker: str) -> None:
        """A clean stop: its calls are hung up and ended in the ACD already."""
        self.redis.delete(self._alive_key(worker))

    def claim(self, call_id: str, worker: str) -> None:
        self.redis.set(self._owner_key(call_id), worker, ex=OWNER_TTL_S)

    def release(self, call_id: str) -> None:
        self.redis.delete(self._owner_key(call_id))

    def take(self, worker: str, most: int = TAKE_BATCH) -> list[Message]:
        """Never blocks: the caller is the pjsua loop that carries every call's audio."""
        raw = self.redis.lpop(self._inbox_key(worker), most)
        return [self._message(item) for item in (raw if isinstance(raw, list) else [])]

    def wait_and_take(self, worker: str, wait_s: int = INBOX_WAIT_S) -> list[Message]:
        """Blocks up to `wait_s` for the first message, then takes what else is there."""
        key = self._inbox_key(worker)
        first = self.redis.blpop([key], timeout=wait_s)
        if first is None:
            return []
        return [self._message(first[1]), *self.take(worker)]

    @staticmethod
    def _message(item: bytes | str) -> Message:
        data = json.loads(item)
        offer = _offer(data["offer"]) if data.get("offer") else None
        return Message(
            str(data["kind"]),
            str(data["call_id"]),
            offer,
            str(data.get("action", "")),
            str(data.get("uri", "")),
        )

    # -- the process that makes offers ------------------------------------------------

    def owner(self, call_id: str) -> str | None:
        found = self.redis.get(self._owner_key(call_id))
        if found is None:
            return None
        return found.decode() if isinstance(found, bytes) else str(found)

    def alive(self, worker: str) -> bool:
        return bool(self.redis.exists(self._alive_key(worker)))

    def _push(self, worker: str, data: dict[str, Any]) -> None:
        key = self._inbox_key(worker)
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(key, json.dumps(data, separators=(",", ":")))
        pipe.ltrim(key, -INBOX_MAX_LEN, -1)
        pipe.expire(key, INBOX_TTL_S)
        pipe.execute()

    def send_offer(self, worker: str, offer: Offer) -> None:
        self._push(worker, {"kind": OFFER, "call_id": offer.call_id, "offer": offer.to_json()})

    def send_cancel(self, call_id: str) -> bool:
        worker = self.owner(call_id)
        if worker is None:
            return False
        self._push(worker, {"kind": CANCEL, "call_id": call_id})
        return True

    def send_max_wait(self, call_id: str, action: str) -> bool:
        worker = self.owner(call_id)
        if worker is None:
            return False
        self._push(worker, {"kind": MAX_WAIT, "call_id": call_id, "action": action})
        return True

    def send_monitor(self, worker: str, call_id: str, mode: str, uri: str) -> None:
        self._push(worker, {"kind": MONITOR, "call_id": call_id, "action": mode, "uri": uri})

    def send_record(self, worker: str, call_id: str, action: str) -> None:
        self._push(worker, {"kind": RECORD, "call_id": call_id, "action": action})


class InboxReader:
    """A worker's inbox, read by a thread of its own: the pjsua loop only drains `messages`,
    so an idle worker costs Redis one blocking pop a second instead of a poll per loop turn."""

    def __init__(self, handoff: SipHandoff, worker: str) -> None:
        self.handoff = handoff
        self.worker = worker
        self.messages: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"inbox-{worker}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        self._stop.set()
        if wait and self._thread.is_alive():
            self._thread.join(INBOX_WAIT_S + READ_RETRY_S + 1)

    def drain(self) -> list[Message]:
        found: list[Message] = []
        while True:
            try:
                found.append(self.messages.get_nowait())
            except queue.Empty:
                return found

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for message in self.handoff.wait_and_take(self.worker):
                    self.messages.put(message)
            except Exception:
                log.exception("could not read this worker's offers; trying again")
                self._stop.wait(READ_RETRY_S)
