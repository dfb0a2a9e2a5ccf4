"""Call state in Redis, so any web process can take a call's next webhook.

A webhook costs two round trips: one script claims the call's lock and reads the reply
already given to this step and the state; one writes the new state and the reply and
releases the lock, with the turn's call events. A call's first webhook takes one. A
duplicate delivery whose reply exists is answered from that reply at once, without waiting
for the lock.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script

from ivr.engine import CallState
from kokan.redis_round_trip import Command, RoundTrip

CALL_STATE_TTL_S = 4 * 3600
"""No IVR leg lasts four hours; an abandoned call's state then expires by itself."""
CALL_LOCK_TIMEOUT_MS = 15_000
"""A turn takes milliseconds (an http node at most its timeout); a crashed holder frees it."""
CALL_LOCK_WAIT_S = 10.0
"""Twilio waits 15 s for an answer; a concurrent delivery waits for the first to finish."""
CALL_LOCK_POLL_S = 0.02
STATE_KEY = "kokan:ivr:call:{{{call}}}"
REPLY_KEY = "kokan:ivr:reply:{{{call}}}:{step}"
"""The answer already given to a step, replayed when Twilio delivers the same request again."""
LOCK_KEY = "kokan:ivr:lock:{{{call}}}"
"""The call id in braces is a hash tag: a call's keys share one Redis Cluster slot."""
START_STEP = "start"
RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
"""Only the holder releases the lock; an expired lock taken by another process is left alone."""
CLAIM = """
local reply = redis.call('get', KEYS[2])
if reply then return {0, reply, false} end
if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {-1, false, false} end
return {1, false, redis.call('get', KEYS[3])}
"""
"""KEYS lock, reply, state; ARGV token, lock ms -> {0 replay | -1 busy | 1 claimed, reply, state}."""
SAVE_AND_RELEASE = """
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('set', KEYS[2], ARGV[2], 'EX', ARGV[3])
if redis.call('get', KEYS[3]) == ARGV[4] then redis.call('del', KEYS[3]) end
return 1
"""
"""KEYS state, reply, lock; ARGV state, reply, ttl, token: one atomic write per webhook."""
SAVE_FIRST = """
local earlier = redis.call('get', KEYS[2])
if earlier then return earlier end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('set', KEYS[2], ARGV[2], 'EX', ARGV[3])
return false
"""
"""KEYS state, start reply; ARGV state, reply, ttl: the first delivery of a new call wins, a
duplicate gets the reply that won; one round trip and no lock for a call's first webhook."""


STATE_JSON = json.JSONEncoder(ensure_ascii=False)
"""Call states as UTF-8 JSON, one encoder for every save (json.dumps with options builds a
new one on each call)."""


AlsoSend = Sequence[Command] | None
"""Extra commands to send in the same round trip as a save (e.g. call-detail events)."""


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
        self._round_trip = RoundTrip(client)
        self._release = client.register_script(RELEASE_IF_OWNER)
        self._claim = client.register_script(CLAIM)
        self._save = client.register_script(SAVE_AND_RELEASE)
        self._save_first = client.register_script(SAVE_FIRST)

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
            outcome, reply, raw_state = self._run(
                self._claim, [lock_key, reply_key, state_key], [token, CALL_LOCK_TIMEOUT_MS]
            )
            if outcome == 0:
                return Claim(token=None, reply=_text(reply), state=None)
            if outcome == 1:
                state = CallState.from_json(json.loads(raw_state)) if raw_state else None
                return Claim(token=token, reply=None, state=state)
            if time.monotonic() > deadline:
                raise CallBusy(call_id)
            time.sleep(CALL_LOCK_POLL_S)

    def release(self, call_id: str, token: str) -> None:
        lock_key, _reply, _state = self._keys(call_id, START_STEP)
        self._run(self._release, [lock_key], [token])

    def save(
        self, state: CallState, step: str, reply: str, token: str, also: AlsoSend = None
    ) -> None:
        """State, the reply to `step` and the lock release commit together; `also` adds
        commands (call events) to the same round trip."""
        lock_key, reply_key, state_key = self._keys(state.call_id, step)
        state_json = STATE_JSON.encode(state.to_json())
        self._run(
            self._save,
            [state_key, reply_key, lock_key],
            [state_json, reply, CALL_STATE_TTL_S, token],
            also,
        )

    def save_first(self, state: CallState, reply: str, also: AlsoSend = None) -> str | None:
        """Store a new call's first turn unless one is stored already; return the stored one.
        `also` adds commands to the same round trip (they run for duplicates too)."""
        _lock, reply_key, state_key = self._keys(state.call_id, START_STEP)
        state_json = STATE_JSON.encode(state.to_json())
        earlier = self._run(
            self._save_first, [state_key, reply_key], [state_json, reply, CALL_STATE_TTL_S], also
        )
        return _text(earlier)

    def _run(
        self, script: Script, keys: list[str], args: list[str | int], also: AlsoSend = None
    ) -> Any:
        """EVALSHA plus `also`'s commands in one round trip; the script's reply.

        (redis-py's Script objects in a pipeline ask SCRIPT EXISTS first on every execute,
        a second round trip on the hot path.)"""
        commands: list[Command] = [("EVALSHA", script.sha, len(keys), *keys, *args)]
        if also:
            commands += also
        for attempt in (1, 2):
            replies = self._round_trip.send(commands)
            refused = next((r for r in replies if isinstance(r, redis.ResponseError)), None)
            if isinstance(replies[0], redis.exceptions.NoScriptError) and attempt == 1:
                # Redis restarted or was flushed: load the script; `also` commands are
                # idempotent call events, so sending them again is harmless
                self.redis.script_load(script.script)
                continue
            if refused is not None:
                raise refused
            return replies[0]
        raise AssertionError("unreachable")

    def load(self, call_id: str) -> CallState | None:
        _lock, _reply, state_key = self._keys(call_id, START_STEP)
        raw = self.redis.get(state_key)
        return CallState.from_json(json.loads(raw)) if raw else None

    def reply(self, call_id: str, step: str) -> str | None:
        _lock, reply_key, _state = self._keys(call_id, step)
        return _text(self.redis.get(reply_key))
