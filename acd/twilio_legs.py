"""What the Twilio side of the ACD must remember about a queued call, beyond the ACD.

The ACD knows calls and agents; dialing agents through Twilio also needs the number the
caller dialled (the caller ID for agents' phones and callbacks), the language they chose
in the flow (for announcements), and the Twilio call SID of each agent leg ringing for
the call (to stop the others when one answers, or all when the offer runs out). Any web
process or router may need it, so it lives in Redis beside the call's IVR state.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from kokan.redis_conn import redis_text

CALL_KEY = "kokan:twilio:acd:{{{call}}}"
"""HASH per queued call: caller, called, language, and leg:<agent> -> agent leg CallSid.
The call id in braces is the hash tag, as for the IVR's state keys."""
ANNOUNCED_KEY = "kokan:twilio:acd:announced:{{{call}}}"
"""Exists while the last announcement is recent: the hold loop announces only when it
has expired, whichever web process serves the loop."""
CALL_TTL_S = 4 * 3600
"""As long as the IVR keeps a call's state: no call waits and talks longer than that."""
LEG_PREFIX = "leg:"


@dataclass(frozen=True)
class QueuedCall:
    caller: str
    called: str
    language: str


class TwilioLegs:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def remember(self, call_id: str, caller: str, called: str, language: str) -> None:
        key = CALL_KEY.format(call=call_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={"caller": caller, "called": called, "language": language})
        pipe.expire(key, CALL_TTL_S)
        pipe.execute()

    def call(self, call_id: str) -> QueuedCall | None:
        raw = self.redis.hmget(CALL_KEY.format(call=call_id), ["caller", "called", "language"])
        if raw[0] is None and raw[1] is None:
            return None
        caller, called, language = (redis_text(value) for value in raw)
        return QueuedCall(caller=caller, called=called, language=language)

    def add_leg(self, call_id: str, agent_id: str, leg_sid: str) -> None:
        key = CALL_KEY.format(call=call_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, LEG_PREFIX + agent_id, leg_sid)
        pipe.expire(key, CALL_TTL_S)
        pipe.execute()

    def legs(self, call_id: str) -> dict[str, str]:
        """Agent id -> the Twilio CallSid of the leg that rang (or rings) them."""
        raw = self.redis.hgetall(CALL_KEY.format(call=call_id))
        return {
            redis_text(field)[len(LEG_PREFIX) :]: redis_text(value)
            for field, value in raw.items()
            if redis_text(field).startswith(LEG_PREFIX)
        }

    def announcement_due(self, call_id: str, every_s: int) -> bool:
        """True at most once per `every_s` for a call, across every process."""
        return bool(self.redis.set(ANNOUNCED_KEY.format(call=call_id), 1, nx=True, ex=every_s))
