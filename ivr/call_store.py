"""Call state in Redis, so any web process can take a call's next webhook.

A webhook costs two round trips: one pipeline claims the call's lock and reads the
reply already given to this step and the state; one MULTI writes the new state, the
reply and releases the lock. A duplicate delivery whose reply exists is answered from
that reply at once, without waiting for the lock.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

import redis

from ivr.engine import CallState

CALL_STATE_TTL_S = 4 * 3600
"""No IVR leg lasts four hours; an abandoned call's state then expires by itself."""
CALL_LOCK_TIMEOUT_MS = 15_000
"""A turn takes milliseconds (an http node at most its timeout); a crashed holder frees it."""
CALL_LOCK_WAIT_S = 10.0
"""Twilio waits 15 s for an answer; a concurrent delivery waits for the first to finish."""
CALL_LOCK_POLL_S = 0.02
STATE_KEY = "kokan:ivr:call:{call}"
REPLY_KEY = "kokan:ivr:reply:{call}:{step}"
"""The answer already given to a step, replayed when Twilio delivers the same request again."""
LOCK_KEY = "kokan:ivr:lock:{call}"
START_STEP = "start"
RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
"""Only the holder releases the lock; an expired lock taken by another process is left alone."""


class CallBusy(Exception):
    """Another process holds the call's lock for longer than a webhook may wait."""


@dataclass(frozen=True)
class Claim:
    """The call's lock is held (token) unless a reply to this step already exists (replay)."""

    token: str | None
    reply: str | None
    state: CallState | None


def _text(raw: object) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class CallStore:
    def __init__(self, client: redis.Redis, namespace: str = "twilio") -> None:
        self.redis = client
        self.namespace = namespace
        self._release = client.register_script(RELEASE_IF_OWNER)

    def _keys(self, call_id: str, step: str) -> tuple[str, str, str]:
        call = f"{self.namespace}:{call_id}"
        return (
            LOCK_KEY.format(call=call),
            REPLY_KEY.format(call=call, step=step),
            STATE_KEY.format(call=call),
        )

    def claim(self, call_id: str, step: str) -> Claim:
        lock_key, reply_key, state_key = self._keys(call_id, step)
        token = secrets.token_hex(8)
        deadline = time.monotonic() + CALL_LOCK_WAIT_S
        while True:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(lock_key, token, nx=True, px=CALL_LOCK_TIMEOUT_MS)
            pipe.get(reply_key)
            pipe.get(state_key)
            acquired, reply, raw_state = pipe.execute()
            if reply is not None:
                if acquired:
                    self.release(call_id, token)
                return Claim(token=None, reply=_text(reply), state=None)
            if acquired:
                state = CallState.from_json(json.loads(raw_state)) if raw_state else None
                return Claim(token=token, reply=None, state=state)
            if time.monotonic() > deadline:
                raise CallBusy(call_id)
            time.sleep(CALL_LOCK_POLL_S)

    def release(self, call_id: str, token: str) -> None:
        lock_key, _reply, _state = self._keys(call_id, START_STEP)
        self._release(keys=[lock_key], args=[token])

    def save(self, state: CallState, step: str, reply: str, token: str) -> None:
        """State, the reply to `step` and the lock release commit together."""
        lock_key, reply_key, state_key = self._keys(state.call_id, step)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(state_key, json.dumps(state.to_json(), ensure_ascii=False), ex=CALL_STATE_TTL_S)
        pipe.set(reply_key, reply, ex=CALL_STATE_TTL_S)
        self._release(keys=[lock_key], args=[token], client=pipe)
        pipe.execute()

    def load(self, call_id: str) -> CallState | None:
        _lock, _reply, state_key = self._keys(call_id, START_STEP)
        raw = self.redis.get(state_key)
        return CallState.from_json(json.loads(raw)) if raw else None

    def reply(self, call_id: str, step: str) -> str | None:
        _lock, reply_key, _state = self._keys(call_id, step)
        return _text(self.redis.get(reply_key))
