"""The ACD's Twilio driver: a queued caller's hold loop, the callback key, agent legs
answering or not, and the caller hanging up.

The hold loop is Kokan's own (`<Play>` then `<Redirect>` back), not Twilio's
`<Enqueue>`: every turn reads the call from the ACD, so the caller is connected,
sent to voicemail or told about their callback by whichever web process serves the
turn, even when the REST call that should have moved them at once was lost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from acd import twilio_twiml as twiml
from acd.dialer import IGNORED_ACD_ERRORS, TwilioCalls
from acd.errors import AcdInvalidInput, AlreadyAnswered, NotWaiting
from acd.estimates import announcement
from acd.services import AcdService
from acd.twilio_legs import QueuedCall, TwilioLegs
from ivr.engine import CallState
from ivr.twiml import render_fallback
from kokan import logs
from kokan.config import QueueSettings
from kokan.db import utcnow
from recording.live import CallRecorder
from tickets import cdr
from tickets.models import Outcome

PROVIDER = "twilio"
UNANSWERED = frozenset({"busy", "no-answer", "failed", "canceled"})
"""Final statuses of an agent leg that never talked to anyone."""
CALL_OVER = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
"""Final statuses of the caller's own call (Twilio's status callback)."""
CALL_STARTED = frozenset({"queued", "initiated", "ringing", "in-progress", "answered"})
"""Statuses before the end: each only confirms the call exists (arrivals are idempotent)."""
ABANDON_RESULTS = frozenset({"abandoned", "short-abandon"})

log = logging.getLogger(__name__)


class QueueVoice:
    def __init__(
        self,
        acd: AcdService,
        legs: TwilioLegs,
        calls: TwilioCalls,
        urls: twiml.QueueUrls,
        queues: Mapping[str, QueueSettings],
        default_language: str = "ja",
    ) -> None:
        self.acd = acd
        self.legs = legs
        self.calls = calls
        self.urls = urls
        self.queues = queues
        self.default_language = default_language
        self.recorder = CallRecorder(acd.redis, lambda: calls.rest, urls.base, queues)

    # -- the caller ------------------------------------------------------------------

    def join(self, state: CallState) -> None:
        """The flow handed the call to a queue: remember the call, then queue it."""
        self.legs.remember(state.call_id, state.caller, state.called, state.language)
        self.acd.join_outcome(state.call_id, state.outcome or {}, caller=state.caller)

    def wait(self, call_sid: str) -> str:
        token = logs.call_id_var.set(call_sid)
        try:
            return self._wait(call_sid)
        except Exception:
            log.exception("the hold loop failed; answering with the fallback")
            return render_fallback(self.urls.ivr)
        finally:
            logs.call_id_var.reset(token)

    def _language(self, call_sid: str, queue: str | None, queued: QueuedCall | None = None) -> str:
        """The language the caller chose in the flow, else the queue's."""
        queued = queued or self.legs.call(call_sid)
        if queued is not None and queued.language:
            return queued.language
        settings = self.queues.get(queue or "")
        return settings.language if settings else self.default_language

    def _wait(self, call_sid: str) -> str:
        try:
            call = self.acd.call(call_sid)
        except IGNORED_ACD_ERRORS:
            log.warning("a hold-loop turn for a call the ACD does not hold")
            return render_fallback(self.urls.ivr)
        language = self._language(call_sid, call.queue)
        if call.state == "connected":
            if call.kind == "callback":
                return twiml.goodbye(language)  # the agent leg is calling them back
            recording = self.recorder.bridge(call_sid, call.queue, language)
            return twiml.caller_bridge(
                call_sid, self.urls, recording.consent, recording.conference_callback
            )
        if call.state == "ended":
            if call.result == "voicemail":
                return twiml.voicemail(self.urls)
            return twiml.goodbye(language)
        if call.kind == "callback":
            return twiml.callback_confirmed(language)
        settings = self.queues.get(call.queue) or QueueSettings()
        every_s = settings.announce_every_seconds or 0
        said = announcement(
            self.acd, call, settings, lambda: self.legs.announcement_due(call_sid, every_s)
        )
        position, wait_s = said if said is not None else (None, None)
        return twiml.waiting(
            self.urls,
            music=settings.hold_music,
            language=language,
            position=position,
            wait_s=wait_s,
            callback_key=settings.callback_key if call.state == "waiting" else None,
        )

    def key(self, call_sid: str, digits: str, caller: str) -> str:
        """A key pressed during the hold loop: the callback key keeps the caller's place
        and lets them hang up; any other key just continues the loop."""
        token = logs.call_id_var.set(call_sid)
        try:
            call = self.acd.call(call_sid)
            settings = self.queues.get(call.queue)
            if settings is None or not settings.callback_key or digits != settings.callback_key:
                return self._wait(call_sid)
            try:
                position = self.acd.request_callback(call_sid, caller)
            except (NotWaiting, AcdInvalidInput) as exc:
                log.info("callback not taken: %s", exc.message)
                return self._wait(call_sid)
            log.info("caller asked for a callback, keeping place %s", position)
            identity = cdr.CallIdentity(PROVIDER, call_sid, caller, "")
            cdr.append(
                self.acd.redis, "outcome", identity, utcnow(), outcome=Outcome.CALLBACK.value
            )  # the call's record, and the `callback.scheduled` proactive message
            return twiml.callback_confirmed(self._language(call_sid, call.queue))
        except IGNORED_ACD_ERRORS:
            return render_fallback(self.urls.ivr)
        finally:
            logs.call_id_var.reset(token)

    def caller_status(self, call_sid: str, status: str, caller: str, called: str) -> None:
        """Twilio's status callback for the caller's call: an early status makes sure the
        call has its record (even when the voice webhook never got through); the end is an
        abandon while waiting, the end of the conversation once connected."""
        identity = cdr.CallIdentity(PROVIDER, call_sid, caller, called)
        if status not in CALL_OVER:
            if status in CALL_STARTED:
                cdr.append(self.acd.redis, "arrived", identity, utcnow())
            return
        token = logs.call_id_var.set(call_sid)
        try:
            now = utcnow()
            pipe = self.acd.redis.pipeline(transaction=False)
            cdr.append(pipe, "ended", identity, now)
            try:
                ended = self.acd.hangup(call_sid)
            except IGNORED_ACD_ERRORS:
                ended = None
            if ended is not None and ended.result in ABANDON_RESULTS:
                cdr.append(pipe, "outcome", identity, now, outcome=Outcome.ABANDONED.value)
                self.calls.cancel_legs(call_sid)
            pipe.execute()
        finally:
            logs.call_id_var.reset(token)

    # -- the agent -------------------------------------------------------------------

    def agent_answered(self, call_id: str, agent_id: str) -> str:
        """The agent picked up: take the call in the ACD, then bring the caller in."""
        token = logs.call_id_var.set(call_id)
        try:
            call = self.acd.call(call_id)
            queued = self.legs.call(call_id)
            language = self._language(call_id, call.queue, queued)
            try:
                answered = self.acd.answer(call_id, agent_id)
            except (*IGNORED_ACD_ERRORS, AlreadyAnswered) as exc:
                log.info("agent %s picked up too late: %s", agent_id, exc.message)
                return twiml.agent_nothing_to_take(language)
            if not answered.duplicate:
                self.calls.cancel_legs(call_id, keep=agent_id)
                log.info("agent %s answered after a %d ms wait", agent_id, answered.wait_ms)
            if call.kind == "callback":
                kokan_number = self.calls.caller_id or (queued.called if queued else None)
                return twiml.agent_callback(call.callback_number or "", kokan_number, language)
            identity = cdr.CallIdentity(
                PROVIDER, call_id, queued.caller if queued else "", queued.called if queued else ""
            )
            now = utcnow()
            pipe = self.acd.redis.pipeline(transaction=False)
            cdr.append(pipe, "answered", identity, now)
            cdr.append(pipe, "outcome", identity, now, outcome=Outcome.ANSWERED.value)
            pipe.execute()
            if not answered.duplicate:
                self.recorder.answered(call_id, agent_id, call.queue)
            if not answered.duplicate and not self.calls.redirect_caller(call_id):
                log.info("caller not moved at once; the next hold-loop turn connects them")
            recording = self.recorder.bridge(call_id, call.queue, language)
            return twiml.agent_bridge(call_id, call.queue, language, recording.conference_callback)
        except IGNORED_ACD_ERRORS:
            return twiml.agent_nothing_to_take(self.default_language)
        finally:
            logs.call_id_var.reset(token)

    def agent_leg_status(self, call_id: str, agent_id: str, status: str) -> None:
        """The agent leg ended: unanswered puts the call back (redirect on no answer);
        completed after talking ends the call and starts the agent's wrap-up."""
        token = logs.call_id_var.set(call_id)
        try:
            if status in UNANSWERED:
                try:
                    requeued = self.acd.no_answer(call_id, agent_id)
                except IGNORED_ACD_ERRORS:
                    return
                log.info("agent %s did not answer (%s); call back in line", agent_id, status)
                for offer in requeued.offers:
                    self.calls.dial(offer)
            elif status == "completed":
                try:
                    call = self.acd.call(call_id)
                except IGNORED_ACD_ERRORS:
                    return
                if call.state == "connected" and call.agents == (agent_id,):
                    self.acd.hangup(call_id)
        except IGNORED_ACD_ERRORS:
            pass
        finally:
            logs.call_id_var.reset(token)
