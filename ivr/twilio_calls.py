"""The Twilio driver's rules: start a call, take its next step, replay duplicates, keep the CDR."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from twilio.twiml.voice_response import VoiceResponse

from ivr.call_store import START_STEP, CallBusy, CallStore
from ivr.engine import CallState, Engine, Event
from ivr.twiml import Urls, render, render_fallback, render_goodbye
from kokan import logs
from kokan.db import Database, utcnow
from tickets.models import Call, Direction, Outcome

PROVIDER = "twilio"
BUSY_RETRY_PAUSE_S = 1
"""A duplicate delivery that finds the call locked asks Twilio to come back a second later."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IncomingCall:
    call_sid: str
    caller: str
    called: str


class VoiceService:
    def __init__(
        self,
        engine: Engine,
        store: CallStore,
        database: Database,
        urls: Urls,
        flow_for_number: Callable[[str], str],
    ) -> None:
        self.engine = engine
        self.store = store
        self.database = database
        self.urls = urls
        self.flow_for_number = flow_for_number

    def start(self, call: IncomingCall) -> str:
        token = logs.call_id_var.set(call.call_sid)
        try:
            claim = self.store.claim(call.call_sid, START_STEP)
            if claim.token is None:
                log.info("duplicate delivery of the call's first webhook: replayed")
                return claim.reply or render_goodbye()
            try:
                self._record_arrival(call)
                turn = self.engine.start(
                    self.flow_for_number(call.called), call.call_sid, call.caller, call.called
                )
                twiml = render(turn.actions, turn.state.step, self.urls)
            except Exception:
                self.store.release(call.call_sid, claim.token)
                raise
            self.store.save(turn.state, START_STEP, twiml, claim.token)
            self._record_outcome(turn.state)
            log.info("call started in flow %s v%s", turn.state.flow, turn.state.version)
            return twiml
        except CallBusy:
            return self._come_back(self.urls.base + "/webhooks/twilio/voice")
        except Exception:
            log.exception("could not start the call; answering with the fallback")
            return render_fallback(self.urls)
        finally:
            logs.call_id_var.reset(token)

    def step(self, call_sid: str, step: int, event: Event) -> str:
        token = logs.call_id_var.set(call_sid)
        try:
            claim = self.store.claim(call_sid, str(step))
            if claim.token is None:
                log.info("duplicate delivery of step %s: replayed", step)
                return claim.reply or render_goodbye()
            state = claim.state
            if state is None or step != state.step:
                self.store.release(call_sid, claim.token)
                return self._out_of_step(call_sid, step, state)
            try:
                turn = self.engine.resume(state, event)
                twiml = render(turn.actions, turn.state.step, self.urls)
            except Exception:
                self.store.release(call_sid, claim.token)
                raise
            self.store.save(turn.state, str(step), twiml, claim.token)
            self._record_outcome(turn.state)
            return twiml
        except CallBusy:
            return self._come_back(self.urls.step(step))
        except Exception:
            log.exception("step %s failed; answering with the fallback", step)
            return render_fallback(self.urls)
        finally:
            logs.call_id_var.reset(token)

    def _out_of_step(self, call_sid: str, step: int, state: CallState | None) -> str:
        """A step Kokan has no answer for: unknown call, or a stale or future step number."""
        if state is None:
            log.warning("step %s for a call Kokan has no state for", step)
            return render_goodbye()
        log.warning("step %s arrived while the call is at step %s", step, state.step)
        current = START_STEP if state.step == 0 else str(state.step - 1)
        return self.store.reply(call_sid, current) or render_goodbye()

    def fallback_voicemail_saved(self, call_sid: str, recording_url: str | None) -> str:
        """The static fallback took a voicemail; keep what we can and say goodbye."""
        token = logs.call_id_var.set(call_sid)
        try:
            log.warning("fallback voicemail recorded at %s", recording_url or "(no recording)")
            try:
                with self.database.unit_of_work() as session:
                    row = session.scalar(
                        select(Call).where(
                            Call.provider == PROVIDER, Call.provider_call_id == call_sid
                        )
                    )
                    if row is not None and row.outcome is None:
                        row.outcome = Outcome.VOICEMAIL
            except Exception:
                log.exception("could not record the fallback voicemail on the call")
            return render_goodbye()
        finally:
            logs.call_id_var.reset(token)

    def _come_back(self, url: str) -> str:
        response = VoiceResponse()
        response.pause(length=BUSY_RETRY_PAUSE_S)
        response.redirect(url, method="POST")
        return str(response)

    def _record_arrival(self, call: IncomingCall) -> None:
        try:
            with self.database.unit_of_work() as session:
                session.add(
                    Call(
                        provider=PROVIDER,
                        provider_call_id=call.call_sid,
                        from_number=call.caller,
                        to_number=call.called,
                        channel="voice",
                        direction=Direction.INBOUND,
                    )
                )
        except IntegrityError:
            log.info("call-detail record already exists")

    def _record_outcome(self, state: CallState) -> None:
        outcome = state.outcome
        if outcome is None:
            return
        with self.database.unit_of_work() as session:
            row = session.scalar(
                select(Call).where(
                    Call.provider == PROVIDER, Call.provider_call_id == state.call_id
                )
            )
            if row is None:
                return
            kind = outcome.get("kind")
            if kind == "queued" and row.queued_at is None:
                row.queue, row.queued_at = str(outcome["queue"]), utcnow()
            elif kind == "voicemail" and row.outcome is None:
                row.outcome = Outcome.VOICEMAIL
            elif kind == "transferred" and row.outcome is None:
                row.outcome = Outcome.TRANSFERRED
            elif kind == "hung-up" and row.outcome is None:
                row.outcome, row.ended_at = Outcome.COMPLETED_IN_IVR, utcnow()
