"""The Twilio driver's rules: start a call, take its next step, replay duplicates, keep the CDR."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from twilio.twiml.voice_response import VoiceResponse

from ivr.call_store import START_STEP, AlsoSend, CallBusy, CallStore
from ivr.engine import Action, CallState, Engine, Event, RecordingControl, Turn
from ivr.prompt_fallback import PromptFiles, resolve
from ivr.twiml import Urls, render, render_fallback, render_goodbye
from kokan import logs
from kokan.db import utcnow
from recording.live import CallRecorder, NotRecording, remember_flow_policy
from recording.services import enqueue_voicemail
from tickets import cdr
from tickets.models import Outcome

PROVIDER = "twilio"
AFTER_AGENT_STEP = "after-agent"
"""The reply key of the turn that follows the agent leg (the survey's first prompt)."""
SURVEY_SCORES = ("csat", "nps", "ces")
"""Variables a survey flow stores its answers in (CSAT 1-5, NPS 0-10, CES 1-7)."""
BUSY_RETRY_PAUSE_S = 1
"""A duplicate delivery that finds the call locked asks Twilio to come back a second later."""
OUTCOMES = {
    "voicemail": Outcome.VOICEMAIL.value,
    "transferred": Outcome.TRANSFERRED.value,
    "hung-up": Outcome.COMPLETED_IN_IVR.value,
}
"""Engine outcome kinds that end the call's IVR part, as call-detail outcomes."""

log = logging.getLogger(__name__)


def survey_answers(state: CallState) -> dict[str, str]:
    """The survey scores given so far on a call in its voice survey, for the `survey`
    call-detail event (both transports send it every turn, so answers given before a
    hang-up are kept)."""
    return {
        name: str(state.variables[name])[:8]
        for name in SURVEY_SCORES
        if state.surveying and state.variables.get(name) not in (None, "")
    }


def turn_events(
    identity: cdr.CallIdentity,
    state: CallState | None,
    now: dt.datetime,
    *,
    arrived: bool,
    outcomes: Mapping[str, str],
) -> list[tuple[str, ...]]:
    """The call-detail events of a turn, for either transport: the survey answers so far,
    the arrival, and the call being queued or ending its IVR part with one of `outcomes`
    (engine outcome kind -> call-detail outcome; each transport has its own)."""
    outcome = (state.outcome if state is not None else None) or {}
    kind = outcome.get("kind")
    answers = survey_answers(state) if state is not None else {}
    events = []
    if answers:  # every turn: answers given before a hang-up are kept
        events.append(cdr.event_command("survey", identity, now, answers=json.dumps(answers)))
    if arrived:
        events.append(cdr.event_command("arrived", identity, now))
    if kind == "queued":
        # the survey named is the SMS survey's cue if the caller leaves first
        survey = state.survey if state is not None else None
        queue = str(outcome["queue"])
        events.append(cdr.event_command("queued", identity, now, queue=queue, survey=survey))
    elif kind is not None and kind in outcomes:
        events.append(cdr.event_command("outcome", identity, now, outcome=outcomes[kind]))
    return events


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
        urls: Urls,
        flow_for_number: Callable[[str], str],
        on_queued: Callable[[CallState], None] | None = None,
        recorder: CallRecorder | None = None,
        survey_by_sms: bool = False,
        flows_dir: Path | None = None,
    ) -> None:
        """`on_queued` hands a call whose flow ended in a queue node to the ACD;
        `recorder` pauses and resumes the call's recording for `recording` nodes;
        `survey_by_sms` skips the voice survey (tickets.sms_survey sends it as texts);
        `flows_dir`: where prompt files are, so one gone since publishing is said instead."""
        self.engine = engine
        self.store = store
        self.urls = urls
        self.flow_for_number = flow_for_number
        self.on_queued = on_queued
        self.recorder = recorder
        self.survey_by_sms = survey_by_sms
        self.prompt_files = PromptFiles(flows_dir) if flows_dir is not None else None

    def _render(self, turn: Turn) -> str:
        """The turn's TwiML; a prompt file gone since the flow was published becomes a
        <Say> of its text or of the flow's apology (ivr.prompt_fallback), never a <Play>
        of a file that answers 404."""
        actions = turn.actions
        if self.prompt_files is not None:
            actions = resolve(
                actions,
                missing=self.prompt_files.missing,
                apology=lambda: self.engine.apology(turn.state),
                call_id=turn.state.call_id,
            )
        return render(actions, turn.state.step, self.urls)

    def start(self, call: IncomingCall) -> str:
        token = logs.call_id_var.set(call.call_sid)
        try:
            turn = self.engine.start(
                self.flow_for_number(call.called), call.call_sid, call.caller, call.called
            )
            twiml = self._render(turn)
            earlier = self.store.save_first(
                turn.state, twiml, also=self._call_events(turn.state, arrived=True)
            )
            if earlier is not None:
                log.info("duplicate delivery of the call's first webhook: replayed")
                return earlier
            self._after_turn(turn.state)
            log.debug("call started in flow %s v%s", turn.state.flow, turn.state.version)
            return twiml
        except Exception:
            log.exception("could not start the call; answering with the fallback")
            self._record_arrival_anyway(call)
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
                twiml = self._render(turn)
            except Exception:
                self.store.release(call_sid, claim.token)
                raise
            self.store.save(
                turn.state, str(step), twiml, claim.token, also=self._call_events(turn.state)
            )
            self._after_turn(turn.state)
            self._control_recording(call_sid, turn.actions)
            return twiml
        except CallBusy:
            return self._come_back(self.urls.step(step))
        except Exception:
            log.exception("step %s failed; answering with the fallback", step)
            return render_fallback(self.urls)
        finally:
            logs.call_id_var.reset(token)

    def after_agent(self, call_sid: str) -> str:
        """The agent leg ended (the conference's Dial returned): the survey the flow asked
        for, on the same call, or goodbye. A repeated delivery gets the same answer."""
        token = logs.call_id_var.set(call_sid)
        try:
            claim = self.store.claim(call_sid, AFTER_AGENT_STEP)
            if claim.token is None:
                return claim.reply or render_goodbye()
            state = claim.state
            voice = state is not None and not self.survey_by_sms
            turn = self.engine.start_survey(state) if state is not None and voice else None
            if state is None or turn is None:
                self.store.release(call_sid, claim.token)
                return render_goodbye()
            twiml = self._render(turn)
            self.store.save(
                turn.state, AFTER_AGENT_STEP, twiml, claim.token, also=self._call_events(turn.state)
            )
            self._control_recording(call_sid, turn.actions)
            log.info("caller continues into the survey %s", turn.state.flow)
            return twiml
        except CallBusy:
            return self._come_back(self.urls.after_agent())
        except Exception:
            log.exception("could not start the survey; saying goodbye")
            return render_goodbye()
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
            if recording_url:
                try:
                    enqueue_voicemail(
                        self.store.redis,
                        provider_call_id=call_sid,
                        recording_url=recording_url,
                        duration_s=None,
                    )
                except Exception:
                    log.exception("could not hand the fallback voicemail to a job")
            try:
                identity = cdr.CallIdentity(PROVIDER, call_sid, "", "")
                cdr.append(
                    self.store.redis, "outcome", identity, utcnow(), outcome=Outcome.VOICEMAIL.value
                )
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

    def _call_events(self, state: CallState, *, arrived: bool = False) -> AlsoSend:
        """The call-detail events this turn produced, sent with the state in one round trip."""
        identity = cdr.CallIdentity(PROVIDER, state.call_id, state.caller, state.called)
        now = utcnow()
        events = turn_events(identity, state, now, arrived=arrived, outcomes=OUTCOMES)
        if (state.outcome or {}).get("kind") == "hung-up":
            events.append(cdr.event_command("ended", identity, now))
        return events or None

    def _record_arrival_anyway(self, call: IncomingCall) -> None:
        """The flow could not run, but the call still happened: keep its record."""
        identity = cdr.CallIdentity(PROVIDER, call.call_sid, call.caller, call.called)
        try:
            cdr.append(self.store.redis, "arrived", identity, utcnow())
        except Exception:
            log.exception("could not record the call's arrival")

    def _control_recording(self, call_sid: str, actions: tuple[Action, ...]) -> None:
        """A `recording` node: pause or resume before the TwiML that follows it is played
        (the caller says the card number only after the pause took effect). A call not
        being recorded, or Twilio refusing, is logged; the caller goes on regardless."""
        for action in actions:
            if not isinstance(action, RecordingControl) or self.recorder is None:
                continue
            try:
                if action.action == "pause":
                    self.recorder.pause(call_sid)
                else:
                    self.recorder.resume(call_sid)
            except NotRecording:
                log.debug("recording node %s: the call is not being recorded", action.action)
            except Exception:
                log.exception("recording node %s failed", action.action)

    def _after_turn(self, state: CallState) -> None:
        """Side effects of a turn beyond its TwiML and call-detail events."""
        outcome = state.outcome or {}
        if outcome.get("kind") == "queued" and outcome.get("recording"):
            try:  # the flow's recording policy, for the ACD driver once an agent answers
                remember_flow_policy(
                    self.store.redis,
                    state.call_id,
                    str(outcome["recording"]),
                    bool(outcome.get("consent_said")),
                )
            except Exception:
                log.exception("could not keep the flow's recording policy")
        if outcome.get("kind") == "queued" and self.on_queued is not None:
            try:  # the hold loop finds a call the ACD lacks and falls back to voicemail
                self.on_queued(state)
            except Exception:
                log.exception("could not queue the call in the ACD")
        if outcome.get("kind") == "voicemail" and outcome.get("recording"):
            seconds = outcome.get("seconds")
            try:  # a job keeps the recording (no SQL here); its failure must not reach the caller
                enqueue_voicemail(
                    self.store.redis,
                    provider_call_id=state.call_id,
                    recording_url=str(outcome["recording"]),
                    duration_s=seconds if isinstance(seconds, int) else None,
                )
            except Exception:
                log.exception("could not hand the voicemail's recording to a job")
