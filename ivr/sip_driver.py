"""The SIP driver's rules: a call's turns through the engine, played as audio, fed by keys.

The driver holds no pjsua2 types: `ivr.sip_adapter` turns the library's callbacks into
calls on this class (a call arrived, its media is up, a key, a prompt ended, it hung up,
time passed) and this class answers through the `Media` port (answer, play, record, hang
up). Everything runs on the adapter's one event thread, so no locks are needed here.

A turn's audio plays in order; what waits for the caller starts when the last prompt ends
(a `Listen` starts its timeout, a `Record` its recorder after a beep), as Twilio does.
State and call-detail events go to Redis exactly as the Twilio driver's do, under the "sip"
namespace and provider, so the rest of Kokan cannot tell the transports apart.

A queued caller is claimed for this worker before it joins the ACD (`acd.sip_handoff`), so
the ACD's offers for it come to this worker's inbox, which the loop drains without
blocking. The worker then rings the agent's SIP URI, bridges the two legs' audio once the
agent answers, and reports answer, no-answer and the end to the ACD, as the Twilio
webhooks do for Twilio calls.

Around the agent the rules are Twilio's, one shared copy of each: the waiting caller's
position and expected wait (`acd.estimates.announcement`) interrupt the music every
`announce_every_seconds`; the recording policy (`recording.policy`) decides whether the
bridge is recorded (after the queue's consent), each leg into its own file, joined into
one two-channel WAV off the loop (`ivr.sip_recordings`), and the recordings API starts
(`on_demand`), pauses and resumes it through the inbox (`recording.sip_live`), a pause
leaving its span out of the file; when the agent hangs up first, a
flow that passed a `survey` node goes on into the survey on this worker, as Twilio's
after-agent turn does, its answers in the same `survey` call-detail events.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import redis

from acd import twilio_twiml as twiml_phrases
from acd.errors import (
    AcdInvalidInput,
    AlreadyAnswered,
    CallEnded,
    NotOffered,
    NotWaiting,
    UnknownAgent,
    UnknownCall,
)
from acd.estimates import announcement
from acd.monitor import Monitors
from acd.results import Offer
from acd.schemas import DEFAULT_RING_TIMEOUT_S
from acd.services import AcdService
from acd.sip_handoff import (
    CANCEL,
    HEARTBEAT_S,
    MAX_WAIT,
    MONITOR,
    OFFER,
    RECORD,
    SIP_CALL_ID,
    InboxReader,
    Message,
    SipHandoff,
)
from ivr.call_store import AlsoSend, CallStore
from ivr.engine import (
    Action,
    Audio,
    CallState,
    Engine,
    Enqueue,
    Event,
    Hangup,
    Input,
    Listen,
    NoInput,
    Play,
    Record,
    Recorded,
    RecordingControl,
    Say,
    Transfer,
    Turn,
)
from ivr.prompt_fallback import resolve
from ivr.sip_monitor import BridgedCall, SupervisorLegs
from ivr.sip_prompts import PromptCache
from ivr.sip_recordings import BridgedRecording, leg_files
from ivr.sip_speech import (
    RESULT_POLL_S,
    RESULT_WAIT_S,
    Answer,
    Capture,
    SpeechJobs,
    Status,
    event_for,
    phrases_of,
)
from ivr.sip_transfer import NO_TRUNK, NOT_REACHED, TransferRules, target_uri
from ivr.twilio_calls import AFTER_AGENT_STEP, turn_events
from ivr.twiml import APOLOGY
from kokan import logs
from kokan.config import SIP_MAX_CALLS, QueueSettings
from kokan.db import utcnow
from recording import policy
from recording.sip_live import PAUSE, RESUME, START, SipRecordingState
from tickets import cdr
from tickets.models import Outcome

PROVIDER = "sip"
"""The call-detail records' provider and the call store's namespace for SIP calls."""
SAFE_CALL_ID = SIP_CALL_ID
"""A SIP Call-ID used as Kokan's call id as it is when it fits the ACD's and the CDR's
rules (48 characters, so a voicemail name fits in 64); any other is replaced by its hash."""
HASHED_CALL_ID_CHARS = 40
DTMF_KEYS = frozenset("0123456789*#ABCD")
"""What a keypad (RFC 4733 events 0-15, or SIP INFO) can send; anything else is dropped."""
OUTCOMES = {
    "voicemail": Outcome.VOICEMAIL.value,
    "hung-up": Outcome.COMPLETED_IN_IVR.value,
}
"""Engine outcome kinds that end the call's IVR part, as call-detail outcomes (as Twilio's).
A transfer is not among them: over SIP its outcome waits until the target is reached (or
not), `Driver._transfer_settled`."""
ACD_ABANDONS = frozenset({"abandoned", "short-abandon"})
"""ACD hang-up results that make the call an abandon in its record."""
ACD_MOVED_ON = (UnknownCall, CallEnded, NotOffered, AlreadyAnswered)
"""The ACD already settled what we report (the offer expired, another agent answered, the
caller is gone): nothing to undo, only to stop the agent's leg."""
QUEUE_VOICEMAIL = "queue-voicemail"
"""Session mark: the recording under way is the queue's voicemail at the maximum wait."""
ANNOUNCE_RETRY_S = 15.0
"""After a failed announcement (Redis or the TTS unreachable), the next try: the shortest
period a queue announces at, so a passing failure does not silence the rest of the wait."""
INBOX_POLL_S = 0.05
"""How often the loop looks for offers: an agent rings within 50 ms of the decision, and a
4-call worker costs Redis 20 pops a second."""

log = logging.getLogger(__name__)


class Media(Protocol):
    """What the driver asks of the SIP stack; legs are the adapter's opaque names."""

    def answer(self, leg: str) -> None: ...

    def reject(self, leg: str, status: int) -> None: ...

    def play(self, leg: str, files: Sequence[Path], *, loop: bool = False) -> None:
        """Play the files in order (or the one file forever with `loop`), replacing what
        was playing; `Driver.played` follows the end of the last one."""
        ...

    def stop_audio(self, leg: str) -> None: ...

    def start_recording(self, leg: str, path: Path) -> None: ...

    def stop_recording(self, leg: str) -> None:
        """Stop and close the file (its WAV header is whole afterwards)."""
        ...

    def transfer(self, leg: str, target: str) -> None: ...

    def hang_up(self, leg: str) -> None: ...

    def dial(self, uri: str) -> str:
        """Call `uri` (an agent); returns the new leg, whose events come like a caller's."""
        ...

    def bridge(self, one: str, other: str) -> None:
        """Each leg hears the other."""
        ...

    def transmit(self, source: str, sink: str) -> None:
        """`sink` hears `source` (one way; a supervisor's listen-in, ivr.sip_monitor)."""
        ...

    def stop_transmit(self, source: str, sink: str) -> None: ...

    def rx_level(self, leg: str) -> int:
        """The caller's current level (pjsua's 0-255) while a recording runs: speech or not."""
        ...


KeepVoicemail = Callable[[str, Path, int], None]
"""(call id, WAV file, seconds): hands a finished voicemail to the recording pipeline."""
KeepCallRecording = Callable[[BridgedRecording], object]
"""Hands a bridged call's two finished leg recordings to the recording pipeline (what it
returns, a side thread's future say, is not waited for)."""


class Phase(enum.Enum):
    STARTING = "starting"
    PROMPTING = "prompting"
    LISTENING = "listening"
    RECORDING = "recording"
    HOLDING = "holding"
    CONNECTED = "connected"
    """Talking to an agent: the two legs' audio is bridged."""
    TRANSFERRING = "transferring"
    """A flow's transfer under way: the REFER's answer awaited, or the target rung."""
    ENDING = "ending"
    ENDED = "ended"


@dataclass
class Session:
    """One live call on this worker; the engine's state itself is in Redis."""

    leg: str
    call_id: str
    caller: str
    called: str
    phase: Phase = Phase.STARTING
    state: CallState | None = None
    media_up: bool = False
    pending: tuple[Action, ...] = ()
    then: Action | None = None
    """What follows the prompts now playing: a Listen, Record, Enqueue, Transfer or Hangup."""
    digits: str = ""
    deadline: float | None = None
    recording: Path | None = None
    recording_started: float = 0.0
    ended_recorded: bool = False
    failed: bool = False
    gone: bool = False
    """The caller has hung up: turns still run (a voicemail is kept), nothing is played."""
    queued: bool = False
    next_announcement: float | None = None
    """When the waiting caller next hears their position (the queue's announce_every_seconds)."""
    acd_ended: bool = False
    """The ACD has been told the call ended (the agent hung up first)."""
    agent_legs: set[str] = field(default_factory=set)
    agent_leg: str | None = None
    """The agent leg that answered."""
    referring: str | None = None
    """The agent the caller was sent a REFER to (a `refer` queue) while its NOTIFY has not
    said how it went; no other offer is taken meanwhile."""
    call_recording: BridgedRecording | None = None
    """The bridge is being recorded (each leg into its own file)."""
    bridge_recorded: bool = False
    """The bridge's recording has started once: a re-INVITE's new bridge does not restart it."""
    capture: Capture | None = None
    """A spoken answer being recorded or recognised (ivr.sip_speech) while listening."""
    consent_playing: bool = False
    """The queue's recording consent plays to the caller; the bridge waits for its end."""
    transfer: str | None = None
    """The URI a flow's transfer is taking the caller to, until it is settled (reached or
    not): a hang-up meanwhile is an abandon, a failed REFER becomes a bridge."""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class AgentLeg:
    """One agent rung (then talking) for a caller on this worker."""

    leg: str
    caller_leg: str
    call_id: str
    agent_id: str
    deadline: float | None
    queue: str = ""
    """The queue the offer came from (its recording policy)."""
    answered: bool = False
    media_up: bool = False
    bridged: bool = False
    settled: bool = False
    """The ACD knows how this leg went (answer, no-answer, or it moved on): say nothing more."""
    transfer: bool = False
    """A flow's transfer target dialled by Kokan (`agent_id` is its URI): no ACD, no survey."""


def kokan_call_id(sip_call_id: str) -> str:
    if SAFE_CALL_ID.fullmatch(sip_call_id):
        return sip_call_id
    return "sip-" + hashlib.sha256(sip_call_id.encode()).hexdigest()[:HASHED_CALL_ID_CHARS]


def sip_user(uri: str) -> str:
    """The user part of a SIP URI (`"Aiko" <sip:+8190…@host>` -> +8190…): the number."""
    match = re.search(r"<?sips?:([^@>;]*)@", uri)
    if match:
        return match.group(1)[:64]
    match = re.search(r"<?sips?:([^>;]*)", uri)
    return (match.group(1) if match else uri)[:64]


class Driver:
    def __init__(
        self,
        *,
        engine: Engine,
        store: CallStore,
        media: Media,
        prompts: PromptCache,
        flow_for_number: Callable[[str], str],
        hold_music: Callable[[str], str | None],
        recordings_dir: Path,
        keep_voicemail: KeepVoicemail,
        clock: Callable[[], float],
        acd: AcdService | None = None,
        handoff: SipHandoff | None = None,
        worker_id: str = "",
        ring_timeout: Callable[[str], float] = lambda _queue: DEFAULT_RING_TIMEOUT_S,
        queues: Mapping[str, QueueSettings] | None = None,
        survey_by_sms: bool = False,
        keep_call_recording: KeepCallRecording | None = None,
        max_calls: int = SIP_MAX_CALLS,
        speech: SpeechJobs | None = None,
        transfer: TransferRules | None = None,
    ) -> None:
        """`handoff` + `worker_id`: where this worker's offers arrive (none: queued callers
        only hear music); `ring_timeout(queue)`: how long an agent rings; `queues`: the
        configured queues (position announcements, recording policy); `survey_by_sms`: no
        voice survey after the agent (tickets.sms_survey sends it as texts), as on Twilio;
        `keep_call_recording`: where recorded bridges go (none: bridges are not recorded);
        `speech`: the `asr` queue for spoken answers (none: speech nodes take keys only);
        `transfer`: a flow's transfer over SIP (the trunk for numbers, REFER or bridge)."""
        self.engine = engine
        self.store = store
        self.media = media
        self.prompts = prompts
        self.flow_for_number = flow_for_number
        self.hold_music = hold_music
        self.recordings_dir = recordings_dir
        self.keep_voicemail = keep_voicemail
        self.clock = clock
        self.acd = acd
        self.handoff = handoff
        self.worker_id = worker_id
        self.ring_timeout = ring_timeout
        self.queues: Mapping[str, QueueSettings] = queues or {}
        self.survey_by_sms = survey_by_sms
        self.keep_call_recording = keep_call_recording
        self.speech = speech
        self.transfer = transfer or TransferRules()
        self.sessions: dict[str, Session] = {}
        self.agents: dict[str, AgentLeg] = {}
        # supervisors listening in (`max_calls`: this worker's pjsua call slots)
        self.monitor = SupervisorLegs(
            media=media,
            calls=self,
            report=Monitors(acd).report if acd is not None else None,
            clock=clock,
            max_calls=max_calls,
        )
        self._next_poll = 0.0
        self._next_beat = 0.0
        self._inbox: InboxReader | None = None
        self.accepting = True
        self.recordings_dir.mkdir(parents=True, exist_ok=True)

    @property
    def redis(self) -> redis.Redis:
        return self.store.redis

    # -- from the adapter -----------------------------------------------------------

    def incoming(self, leg: str, sip_call_id: str, remote_uri: str, local_uri: str) -> None:
        call_id = kokan_call_id(sip_call_id)
        session = Session(leg, call_id, sip_user(remote_uri), sip_user(local_uri))
        token = logs.call_id_var.set(call_id)
        try:
            if not self.accepting:
                log.info("refused a call: the worker is shutting down")
                self.media.reject(leg, 503)
                return
            self.sessions[leg] = session
            self.media.answer(leg)
            log.info("call from %s to %s answered", session.caller, session.called)
            turn = self.engine.start(
                self.flow_for_number(session.called), call_id, session.caller, session.called
            )
            session.state = turn.state
            self.store.save_first(
                turn.state,
                _summary(turn.actions),
                also=self._call_events(session, state=turn.state, arrived=True),
            )
            self._after_turn(session, turn)
            session.pending = turn.actions
            self._perform_when_ready(session)
        except Exception:
            log.exception("could not start the call; the caller hears the fallback")
            self._record_arrival_anyway(session)
            self.fail(leg)
        finally:
            logs.call_id_var.reset(token)

    def media_ready(self, leg: str) -> None:
        if self.monitor.media_ready(leg):
            return
        agent = self.agents.get(leg)
        if agent is not None:
            agent.media_up = True
            agent.bridged = False  # a re-INVITE restarts the stream: connect it again
            self._bridge_when_ready(agent)
            self.monitor.relink(agent.call_id)
            return
        session = self.sessions.get(leg)
        if session is None:
            return
        first = not session.media_up
        session.media_up = True
        if session.agent_leg in self.agents:
            bridged = self.agents[session.agent_leg]
            bridged.bridged = False  # the caller's stream (re)started: connect it (again)
            self._bridge_when_ready(bridged)
            self.monitor.relink(session.call_id)
        elif first:
            self._perform_when_ready(session)

    def call_id_of(self, leg: str) -> str | None:
        """The Kokan call a leg belongs to (a caller's, or the caller's an agent leg serves)."""
        session = self.sessions.get(leg)
        if session is not None:
            return session.call_id
        agent = self.agents.get(leg)
        return agent.call_id if agent is not None else self.monitor.call_id_of(leg)

    def digit(self, leg: str, key: str) -> None:
        session = self.sessions.get(leg)
        key = key.upper()
        if session is None or key not in DTMF_KEYS:
            return
        if session.phase == Phase.HOLDING:
            self._holding_key(session, key)
            return
        if session.phase == Phase.PROMPTING and isinstance(session.then, Listen):
            if session.then.digits:  # barge-in: a key stops the prompt, as in Twilio's Gather
                self.media.stop_audio(leg)
                self._listen(session, session.then, speech=False)  # the key is the answer
            else:
                return
        if (
            session.phase == Phase.LISTENING
            and isinstance(session.then, Listen)
            and session.then.digits
        ):
            self._listen_key(session, session.then, key)
        elif (
            session.phase == Phase.RECORDING
            and isinstance(session.then, Record)
            and session.then.finish_on_key
            and key in session.then.finish_on_key
        ):
            self._finish_recording(session)

    def played(self, leg: str) -> None:
        """The last prompt of the turn ended: what waits for the caller starts now."""
        session = self.sessions.get(leg)
        if session is not None and session.phase == Phase.HOLDING:
            self._hold_next(session)
            return
        if session is not None and session.consent_playing:
            session.consent_playing = False
            bridged = self.agents.get(session.agent_leg or "")
            if bridged is not None:
                self._bridge_when_ready(bridged)
            return
        if session is None or session.phase != Phase.PROMPTING:
            return
        following = session.then
        if isinstance(following, Listen):
            self._listen(session, following)
        elif isinstance(following, Record):
            self._start_recording(session, following)
        elif isinstance(following, Transfer):
            self._transfer(session, following.target)
        else:
            session.phase = Phase.ENDING
            self.media.hang_up(leg)

    def tick(self, now: float) -> None:
        for session in list(self.sessions.values()):
            if session.capture is not None and session.phase == Phase.LISTENING:
                self._hear(session, now)
        for session in list(self.sessions.values()):
            if session.deadline is None or now < session.deadline:
                continue
            session.deadline = None
            if session.phase == Phase.LISTENING:
                event: Event = Input(digits=session.digits) if session.digits else NoInput()
                self._advance(session, event)
            elif session.phase == Phase.RECORDING:
                self._finish_recording(session)
        for session in list(self.sessions.values()):
            due = session.next_announcement
            if due is not None and now >= due and session.phase == Phase.HOLDING:
                self._announce(session)
        for agent in list(self.agents.values()):
            if agent.deadline is not None and now >= agent.deadline and not agent.answered:
                agent.deadline = None
                token = logs.call_id_var.set(agent.call_id)
                try:
                    log.info("agent %s did not answer in time", agent.agent_id)
                    self._agent_not_reached(agent)
                    self.media.hang_up(agent.leg)
                finally:
                    logs.call_id_var.reset(token)
        self.monitor.tick(now)
        if self.handoff is not None and now >= self._next_beat:
            self._next_beat = now + HEARTBEAT_S
            try:
                self.handoff.beat(self.worker_id)
            except Exception:
                log.exception("could not renew this worker's heartbeat")
        if self.handoff is not None and now >= self._next_poll:
            self._next_poll = now + INBOX_POLL_S
            if self._inbox is None:
                self._inbox = InboxReader(self.handoff, self.worker_id)
                self._inbox.start()
            self._take_messages(self._inbox)

    def confirmed(self, leg: str) -> None:
        """A call is up; for an agent leg, the agent answered: take the call, bridge."""
        if self.monitor.confirmed(leg):
            return  # a supervisor answered: wired for their mode
        agent = self.agents.get(leg)
        if agent is None:
            return  # a caller's own leg: answered by us, nothing to do
        token = logs.call_id_var.set(agent.call_id)
        try:
            if agent.transfer:
                self._target_answered(agent)
            else:
                self._agent_answered(agent)
        finally:
            logs.call_id_var.reset(token)

    def disconnected(self, leg: str, status: int = 0) -> None:
        """The call is over (the caller hung up, or our own hang-up completed); `status` is
        the last SIP status (486 busy, 603 declined, 408/487 not answered...)."""
        if self.monitor.disconnected(leg, status):
            return  # a supervisor left: the call goes on
        agent = self.agents.pop(leg, None)
        if agent is not None:
            token = logs.call_id_var.set(agent.call_id)
            try:
                self._agent_gone(agent, status)
            finally:
                logs.call_id_var.reset(token)
            return
        session = self.sessions.get(leg)
        if session is None:
            return
        token = logs.call_id_var.set(session.call_id)
        try:
            session.gone = True
            self._drop_capture(session)
            if session.phase == Phase.RECORDING:
                self._finish_recording(session)  # a hang-up ends a voicemail, as on Twilio
            session.phase = Phase.ENDED
            session.deadline = None
            self._stop_call_recording(session, session.agent_leg)
            self._end_record(session)
            for agent_leg in list(session.agent_legs):
                self._drop_agent(agent_leg)  # a ringing agent's leg is cancelled
            self.monitor.call_ended(session.call_id)
            log.info("call ended")
        finally:
            self.sessions.pop(leg, None)
            logs.call_id_var.reset(token)

    def transferred(self, leg: str) -> None:
        """The REFER's final NOTIFY said the caller reached the target: our leg ends (the
        pjsua call slot is free); a caller referred to an agent was answered for the ACD."""
        session = self.sessions.get(leg)
        if session is not None and session.referring is not None:
            token = logs.call_id_var.set(session.call_id)
            try:
                self._referred(session, session.referring)
            finally:
                logs.call_id_var.reset(token)
        if session is not None and session.transfer is not None:
            self._transfer_settled(session, None)
        if session is not None:
            session.phase = Phase.ENDING
        self.media.hang_up(leg)

    def transfer_failed(self, leg: str) -> None:
        session = self.sessions.get(leg)
        if session is not None and session.referring is not None:
            agent_id, session.referring = session.referring, None
            token = logs.call_id_var.set(session.call_id)
            try:  # as an agent who does not answer: back in line, the music goes on
                log.warning("the REFER to agent %s failed; the caller waits on", agent_id)
                self._no_answer(session.call_id, agent_id)
            finally:
                logs.call_id_var.reset(token)
            return
        if session is not None and session.transfer is not None and not session.gone:
            token = logs.call_id_var.set(session.call_id)
            try:  # the caller's side refused the REFER, or its NOTIFY said it failed
                log.warning("the REFER to %s failed; Kokan bridges the call", session.transfer)
                self._bridge_transfer(session)
            finally:
                logs.call_id_var.reset(token)
            return
        if session is not None:
            log.warning("the transfer failed; hanging up")
            self.media.hang_up(leg)

    def fail(self, leg: str) -> None:
        """Something broke at the boundary: the flow's fallback, else an apology, never silence."""
        session = self.sessions.get(leg)
        if session is None:
            self.media.hang_up(leg)
            return
        if session.gone:
            return
        session.deadline = None
        if session.phase in (Phase.ENDING, Phase.ENDED):
            self.media.hang_up(leg)
            return
        if not session.failed and session.state is not None:
            session.failed = True
            try:
                turn = self.engine.fallback(CallState.from_json(session.state.to_json()))
                session.state = turn.state
                self._after_turn(session, turn)
                session.pending = turn.actions
                self._perform_when_ready(session)
                return
            except Exception:
                log.exception("the flow's fallback failed too; apologising")
        session.failed = True
        try:  # Kokan's own apology (no flow to take it from), then goodbye
            session.pending = (*APOLOGY, Hangup())
            self._perform_when_ready(session)
        except Exception:
            log.exception("could not even apologise; hanging up")
            session.phase = Phase.ENDING
            self.media.hang_up(leg)

    def shutdown(self) -> None:
        """Stop taking calls and hang up the ones in progress (the adapter pumps events)."""
        self.accepting = False
        self.monitor.shutdown()
        if self._inbox is not None:
            self._inbox.stop(wait=False)  # its daemon thread ends within a blocking pop
        for agent in list(self.agents.values()):
            # a ringing agent is not to blame: the caller's end (an abandon) frees them
            self._drop_agent(agent.leg)
        for session in list(self.sessions.values()):
            if session.phase == Phase.RECORDING:
                self._finish_recording(session)
            if session.phase != Phase.ENDED:
                session.phase = Phase.ENDING
                session.deadline = None
                self.media.hang_up(session.leg)

    # -- agents ---------------------------------------------------------------------

    def _take_messages(self, inbox: InboxReader) -> None:
        for message in inbox.drain():
            token = logs.call_id_var.set(message.call_id)
            try:
                self._on_message(message)
            except Exception:
                log.exception("could not act on the ACD's %s", message.kind)
            finally:
                logs.call_id_var.reset(token)

    def _on_message(self, message: Message) -> None:
        if message.kind == OFFER and message.offer is not None:
            self._offered(message.offer)
        elif message.kind == CANCEL:
            session = self._session_of(message.call_id)
            for leg in list(session.agent_legs if session else ()):
                agent = self.agents.get(leg)
                if agent is not None and not agent.answered:
                    log.info("the offer to %s expired; stop ringing", agent.agent_id)
                    self._drop_agent(leg)
        elif message.kind == MAX_WAIT:
            self._max_wait(message.call_id)
        elif message.kind == MONITOR:
            self.monitor.request(message.call_id, message.action, message.uri)
        elif message.kind == RECORD:
            self._recording_request(message.call_id, message.action)

    def _max_wait(self, call_id: str) -> None:
        """The longest wait passed and the ACD chose for the caller (as Twilio's hold loop
        does): a callback is confirmed and the caller let go, voicemail records a
        message; an overflow to another queue needs nothing here (the music goes on)."""
        session = self._session_of(call_id)
        if session is None or not _waiting(session):
            return
        call = self._acd().call(call_id)
        language = session.state.language if session.state else twiml_phrases.FALLBACK_LANGUAGE
        if call.kind == "callback":
            log.info("maximum wait reached; the caller will be called back")
            if self.handoff is not None:
                self.handoff.release(call_id)  # the callback is dialed by the ACD's dialer
            text, _locale = twiml_phrases.phrase(language, "callback_confirmed")
            self._say_then_hang_up(session, Say(text=text, language=language))
        elif call.state == "ended" and call.result == "voicemail":
            log.info("maximum wait reached; the caller leaves a voicemail")
            session.acd_ended = True
            self.media.stop_audio(session.leg)
            session.extra.pop("loop", None)
            session.extra[QUEUE_VOICEMAIL] = "1"
            session.then = Record(
                prompts=(), max_length=twiml_phrases.VOICEMAIL_MAX_S, finish_on_key="#"
            )
            session.phase = Phase.PROMPTING
            self.media.play(session.leg, [self.prompts.beep()])

    def _holding_key(self, session: Session, key: str) -> None:
        """A key while waiting: the queue's callback key keeps the caller's place and lets
        them go (as Twilio's hold loop does); any other key changes nothing."""
        if self.acd is None or not _waiting(session):
            return
        token = logs.call_id_var.set(session.call_id)
        try:
            call = self.acd.call(session.call_id)
            settings = self.queues.get(call.queue)
            if settings is None or not settings.callback_key or key != settings.callback_key:
                return
            try:
                position = self.acd.request_callback(session.call_id, session.caller)
            except (NotWaiting, AcdInvalidInput) as exc:
                log.info("callback not taken: %s", exc.message)
                return
            log.info("caller asked for a callback, keeping place %s", position)
            session.next_announcement = None
            try:  # the call's record, and the `callback.scheduled` proactive message
                identity = self._identity(session)
                cdr.append(
                    self.redis, "outcome", identity, utcnow(), outcome=Outcome.CALLBACK.value
                )
            except Exception:
                log.exception("could not record the callback outcome")
            if self.handoff is not None:
                self.handoff.release(session.call_id)  # the ACD's dialer calls them back
            language = session.state.language if session.state else settings.language
            text, _locale = twiml_phrases.phrase(language, "callback_confirmed")
            self._say_then_hang_up(session, Say(text=text, language=language))
        except ACD_MOVED_ON:
            return
        finally:
            logs.call_id_var.reset(token)

    def _say_then_hang_up(self, session: Session, say: Say) -> None:
        self.media.stop_audio(session.leg)
        session.extra.pop("loop", None)
        session.then = Hangup()
        session.phase = Phase.PROMPTING
        self.media.play(session.leg, [self.prompts.audio(say)])

    def _session_of(self, call_id: str) -> Session | None:
        return next((s for s in self.sessions.values() if s.call_id == call_id), None)

    def bridged_call(self, call_id: str) -> BridgedCall | None:
        """A call talking to its agent here, as a supervisor's leg is wired to it."""
        session = self._session_of(call_id)
        agent = self.agents.get(session.agent_leg or "") if session is not None else None
        if session is None or session.gone or agent is None:
            return None
        return BridgedCall(session.leg, session.media_up, agent.leg, agent.media_up)

    def legs_in_use(self) -> int:
        """pjsua calls held: each caller, each agent leg rung or talking, each supervisor."""
        return len(self.sessions) + len(self.agents) + len(self.monitor.legs)

    def _offered(self, offer: Offer) -> None:
        session = self._session_of(offer.call_id)
        if session is None or session.gone:
            # the caller is not here (hung up a moment ago, or this worker restarted):
            # end the call rather than blame the agents, who go back to work at once
            log.info("an offer for a call this worker no longer holds; ending it in the ACD")
            with contextlib.suppress(*ACD_MOVED_ON):
                self._acd().hangup(offer.call_id)
            if self.handoff is not None:
                self.handoff.release(offer.call_id)
            return
        if offer.kind != "call" or not _waiting(session):
            log.info("an offer for a call not waiting any more; handing it back")
            for agent_id in offer.agents:
                self._no_answer(offer.call_id, agent_id)
            return
        if self._refers(session, offer.queue):
            self._refer(session, offer.agents[0])
            return
        ring_s = self.ring_timeout(offer.queue)
        for agent_id in offer.agents:
            self._ring(session, agent_id, ring_s, offer.queue)

    def _refers(self, session: Session, queue: str) -> bool:
        """The queue hands SIP callers to the agent by REFER (`sip_agent_leg: refer`),
        unless the flow asks for the call to be recorded: only a bridge can record it."""
        settings = self.queues.get(queue)
        if settings is None or settings.sip_agent_leg != "refer":
            return False
        outcome = (session.state.outcome if session.state else None) or {}
        flow_mode = outcome.get("recording")
        if isinstance(flow_mode, str) and flow_mode == policy.ALWAYS:
            log.info("the flow records this call: bridging the agent instead of a REFER")
            return False
        return True

    def _refer(self, session: Session, agent_id: str) -> None:
        """Send the caller a REFER to the agent's phone; the music goes on until its NOTIFY
        says how it went (`transferred` / `transfer_failed`)."""
        uri = self._agent_uri(session, agent_id, "refer the caller to")
        if uri is None:
            return
        try:
            self.media.transfer(session.leg, uri)
        except Exception:
            log.exception("could not refer the caller to agent %s at %s", agent_id, uri)
            self._no_answer(session.call_id, agent_id)
            return
        session.referring = agent_id
        log.info("referred the caller to agent %s at %s", agent_id, uri)

    def _referred(self, session: Session, agent_id: str) -> None:
        """The caller reached the agent by REFER: answered in the ACD, transferred-to-agent
        in the call's record, and ended in the ACD at once (the agent's wrap-up starts):
        Kokan no longer sees the call, so it cannot tell when the conversation ends."""
        session.referring = None
        try:
            answered = self._acd().answer(session.call_id, agent_id)
            log.info(
                "agent %s took the call by REFER after a %d ms wait", agent_id, answered.wait_ms
            )
        except ACD_MOVED_ON as exc:
            log.warning("the caller reached agent %s after the offer moved on: %s", agent_id, exc)
        self._record_answer(session, Outcome.TRANSFERRED_TO_AGENT, "the transfer to the agent")
        self._acd_hangup(session)

    def _agent_uri(self, session: Session, agent_id: str, to: str) -> str | None:
        """The agent's SIP URI, or None after handing the offer back as a no-answer: an
        agent without one (or gone from the ACD) cannot be reached, by ringing or REFER."""
        try:
            uri = self._acd().agent(agent_id).contact.get("sip_uri")
        except UnknownAgent:
            uri = None
        if not uri:
            log.warning("agent %s has no SIP URI to %s", agent_id, to)
            self._no_answer(session.call_id, agent_id)
            return None
        return uri

    def _record_answer(self, session: Session, outcome: Outcome, what: str) -> None:
        """The call's record of an agent taking it, answered and its outcome in one round
        trip; a failure is logged, never the caller's problem (the call goes on)."""
        identity = self._identity(session)
        now = utcnow()
        try:
            pipe = self.redis.pipeline(transaction=False)
            cdr.append(pipe, "answered", identity, now)
            cdr.append(pipe, "outcome", identity, now, outcome=outcome.value)
            pipe.execute()
        except Exception:
            log.exception("could not record %s", what)

    def _ring(self, session: Session, agent_id: str, ring_s: float, queue: str) -> None:
        uri = self._agent_uri(session, agent_id, "ring")
        if uri is None:
            return
        try:
            leg = self.media.dial(uri)
        except Exception:
            log.exception("could not ring agent %s at %s", agent_id, uri)
            self._no_answer(session.call_id, agent_id)
            return
        self.agents[leg] = AgentLeg(
            leg, session.leg, session.call_id, agent_id, self.clock() + ring_s, queue
        )
        session.agent_legs.add(leg)
        log.info("ringing agent %s at %s for up to %s s", agent_id, uri, ring_s)

    def _connect(self, session: Session, leg: AgentLeg) -> None:
        """`leg` (an agent, or a transfer's target) answered: the caller now talks to it."""
        leg.answered = leg.settled = True
        leg.deadline = None
        session.agent_leg = leg.leg
        session.phase = Phase.CONNECTED

    def _agent_answered(self, agent: AgentLeg) -> None:
        session = self.sessions.get(agent.caller_leg)
        if agent.settled or session is None or not _waiting(session):
            log.info("agent %s picked up after the offer moved on", agent.agent_id)
            self._drop_agent(agent.leg)
            return
        try:
            answered = self._acd().answer(agent.call_id, agent.agent_id)
        except ACD_MOVED_ON as exc:
            log.info("agent %s picked up too late: %s", agent.agent_id, exc.message)
            self._drop_agent(agent.leg)
            return
        self._connect(session, agent)
        session.extra.pop("loop", None)
        session.pending = ()  # the hold prompt not played yet (the caller's media not up)
        for other in list(session.agent_legs - {agent.leg}):
            self._drop_agent(other)  # ring-all: the others stop ringing
        self.media.stop_audio(session.leg)
        log.info("agent %s answered after a %d ms wait", agent.agent_id, answered.wait_ms)
        self._record_answer(session, Outcome.ANSWERED, "the answer")
        self._say_consent(session, agent.queue)
        self._bridge_when_ready(agent)

    def _say_consent(self, session: Session, queue: str) -> None:
        """The queue's recording consent, said to the caller before the bridge when the
        call may be recorded and the flow did not say its own (recording.policy, as the
        Twilio bridge does); the agent hears the caller once it has been said."""
        outcome = (session.state.outcome if session.state else None) or {}
        flow_mode = outcome.get("recording")
        if flow_mode is not None or not session.media_up:
            return
        settings = self.queues.get(queue)
        if not policy.may_record(policy.effective_mode(None, settings)):
            return
        language = session.state.language if session.state else twiml_phrases.FALLBACK_LANGUAGE
        consent = policy.queue_consent(settings, language)
        if consent is None:
            return
        text, said_in = consent
        try:
            spoken = self.prompts.spoken(text, said_in)
        except Exception:
            log.exception("could not speak the recording consent; bridging without it")
            return
        session.consent_playing = True
        self.media.play(session.leg, [spoken])
        log.info("saying the queue's recording consent before the bridge")

    def _bridge_when_ready(self, agent: AgentLeg) -> None:
        """The agent answered and both legs' media are up: connect them."""
        session = self.sessions.get(agent.caller_leg)
        if (
            not agent.answered
            or not agent.media_up
            or agent.bridged
            or session is None
            or not session.media_up
            or session.gone
            or session.consent_playing
        ):
            return
        self.media.bridge(session.leg, agent.leg)
        agent.bridged = True
        log.info("caller and agent %s bridged", agent.agent_id)
        mode = self._recording_mode(session, agent.queue)
        if not session.bridge_recorded and self.keep_call_recording is not None:
            self._remember_for_recording_api(session, agent)
        if not session.bridge_recorded and mode == policy.ALWAYS:
            session.bridge_recorded = True
            self._start_call_recording(session, agent)

    def _recording_mode(self, session: Session, queue: str) -> str:
        """The flow's policy, else the queue's (recording.policy), as for Twilio calls:
        `always` records from the bridge, `on_demand` when the recordings API asks
        (`recording.sip_live`); a worker that keeps no recordings records nothing."""
        if self.keep_call_recording is None:
            return policy.NEVER
        return policy.effective_mode(self._flow_recording_mode(session), self.queues.get(queue))

    @staticmethod
    def _flow_recording_mode(session: Session) -> str | None:
        outcome = (session.state.outcome if session.state else None) or {}
        flow_mode = outcome.get("recording")
        return flow_mode if isinstance(flow_mode, str) else None

    def _remember_for_recording_api(self, session: Session, agent: AgentLeg) -> None:
        """Agent, queue and the flow's policy where the recordings API reads them, so it
        can judge a start as it does for a Twilio call; a failure only costs that."""
        try:
            SipRecordingState(self.redis).bridged(
                session.call_id, agent.agent_id, agent.queue, self._flow_recording_mode(session)
            )
        except Exception:
            log.exception("could not tell the recordings API about the bridge")

    def _start_call_recording(self, session: Session, agent: AgentLeg) -> bool:
        """Each leg into its own mono file from this same loop turn (pjsua records mono);
        a failure is logged and the conversation goes on unrecorded."""
        caller_file, agent_file = leg_files(self.recordings_dir, session.call_id)
        if not self._start_recorders(session, agent, caller_file, agent_file):
            log.error("could not start recording the call")
            return False
        session.call_recording = recorded = BridgedRecording(
            session.call_id, caller_file, agent_file, agent.agent_id, agent.queue
        )
        log.info("recording the call (caller and agent %s)", agent.agent_id)
        self._recording_state(lambda state: state.started(session.call_id, recorded.stereo.stem))
        return True

    def _stop_call_recording(self, session: Session, agent_leg: str | None) -> None:
        """The bridge ended: close both files and hand them over (once)."""
        recorded, session.call_recording = session.call_recording, None
        if recorded is None or self.keep_call_recording is None:
            return
        self.media.stop_recording(session.leg)
        if agent_leg is not None:
            self.media.stop_recording(agent_leg)
        try:
            self.keep_call_recording(recorded)
        except Exception:
            log.exception("could not hand the call's recording to the recording pipeline")
        self._recording_state(lambda state: state.ended(session.call_id))

    def _recording_state(self, tell: Callable[[SipRecordingState], None]) -> None:
        """What happened to the recording, for the recordings API (`SipRecordingState`);
        a failure is logged, the call and its files go on."""
        try:
            tell(SipRecordingState(self.redis))
        except Exception:
            log.exception("could not tell the recordings API what the recording did")

    def _refuse_recording(self, call_id: str, why: str) -> None:
        log.warning("recording request refused: %s", why)
        self._recording_state(lambda state: state.refused(call_id, why))

    def _recording_request(self, call_id: str, action: str) -> None:
        """The recordings API asks to start, pause or resume the bridge's recording
        (`recording.sip_live`, which checked who asks and the policy); what cannot be done
        here is said back to it, and the call goes on either way."""
        session = self._session_of(call_id)
        agent = self.agents.get(session.agent_leg or "") if session is not None else None
        if session is None or agent is None or session.gone or not agent.bridged:
            self._refuse_recording(call_id, "the call is not bridged to its agent")
            return
        if action == START and session.call_recording is None:
            if not policy.may_record(self._recording_mode(session, agent.queue)):
                self._refuse_recording(call_id, "the call's policy never records")
                return
            session.bridge_recorded = True
            if not self._start_call_recording(session, agent):
                self._refuse_recording(call_id, "the recorders did not start")
        elif action in (PAUSE, RESUME) and session.call_recording is None:
            self._refuse_recording(call_id, "the call is not being recorded")
        elif action == PAUSE:
            self._pause_call_recording(session)
        elif action == RESUME:
            self._resume_call_recording(session, agent)

    def _pause_call_recording(self, session: Session) -> None:
        """Both recorders stop (their files close): the paused span is not recorded."""
        recorded = session.call_recording
        if recorded is None or recorded.paused:
            return
        agent = self.agents.get(session.agent_leg or "")
        self.media.stop_recording(session.leg)
        if agent is not None:
            self.media.stop_recording(agent.leg)
        session.call_recording = replace(recorded, paused=True)
        log.info("the call's recording paused")
        self._recording_state(lambda state: state.paused(session.call_id))

    def _start_recorders(
        self, session: Session, agent: AgentLeg, caller_file: Path, agent_file: Path
    ) -> bool:
        """Both legs' recorders from this same loop turn, or neither (a failure is logged)."""
        try:
            self.media.start_recording(session.leg, caller_file)
            self.media.start_recording(agent.leg, agent_file)
        except Exception:
            log.exception("a recorder did not start")
            self.media.stop_recording(session.leg)
            self.media.stop_recording(agent.leg)
            return False
        return True

    def _resume_call_recording(self, session: Session, agent: AgentLeg) -> None:
        """Both legs into new files from this same loop turn, joined after the earlier
        ones at the end (ivr.sip_recordings); a failure leaves the recording paused."""
        recorded = session.call_recording
        if recorded is None or not recorded.paused:
            return
        caller_file, agent_file = leg_files(
            self.recordings_dir, session.call_id, len(recorded.segments)
        )
        if not self._start_recorders(session, agent, caller_file, agent_file):
            log.error("could not resume recording the call; it stays paused")
            self._refuse_recording(session.call_id, "the recorders did not start")
            return
        session.call_recording = replace(
            recorded,
            earlier=recorded.segments,
            caller=caller_file,
            agent=agent_file,
            paused=False,
        )
        log.info("the call's recording resumed")
        self._recording_state(lambda state: state.resumed(session.call_id))

    def _agent_gone(self, agent: AgentLeg, status: int) -> None:
        session = self.sessions.get(agent.caller_leg)
        if session is not None:
            session.agent_legs.discard(agent.leg)
        if not agent.answered:
            if not agent.settled:
                log.info("agent %s did not answer (SIP %s)", agent.agent_id, status)
                self._agent_not_reached(agent)
            return
        self.monitor.call_ended(agent.call_id)  # the supervisor heard the conversation: over
        if session is None or session.gone:
            return
        self._stop_call_recording(session, agent.leg)
        session.agent_leg = None
        session.consent_playing = False
        self._acd_hangup(session)
        if not agent.transfer and self._survey_after_agent(session):
            log.info("agent %s hung up; the caller continues into the survey", agent.agent_id)
            return
        log.info("agent %s hung up; ending the call", agent.agent_id)
        session.phase = Phase.ENDING
        self.media.hang_up(session.leg)

    def _survey_after_agent(self, session: Session) -> bool:
        """The agent left first: the survey a `survey` node chose goes on, on the same call
        and worker, stored as Twilio's after-agent turn is (its own step key, so it runs
        once). False: no survey (none chosen, surveys go by SMS, or it cannot start)."""
        state = session.state
        if (
            not self.accepting  # shutting down: every call is being hung up
            or session.failed  # the fallback's state is not the flow's
            or state is None
            or not state.survey
            or self.survey_by_sms
        ):
            return False
        try:
            claim = self.store.claim(session.call_id, AFTER_AGENT_STEP)
            if claim.token is None or claim.state is None:
                return False
            try:
                turn = self.engine.start_survey(claim.state)
            except Exception:
                self.store.release(session.call_id, claim.token)
                raise
            if turn is None:
                self.store.release(session.call_id, claim.token)
                return False
            self.store.save(
                turn.state,
                AFTER_AGENT_STEP,
                _summary(turn.actions),
                claim.token,
                also=self._call_events(session, state=turn.state),
            )
        except Exception:
            log.exception("could not start the survey; saying goodbye")
            return False
        session.state = turn.state
        session.phase = Phase.PROMPTING
        session.extra.pop("loop", None)
        self._after_turn(session, turn)
        session.pending = turn.actions
        self._perform_when_ready(session)
        return True

    def _agent_not_reached(self, agent: AgentLeg) -> None:
        """Busy, declined, rang out, unreachable: the call goes back in line (the router
        offers it to the next agent) and the caller's music goes on. A transfer's target
        not reached: the caller hears the flow's fallback."""
        agent.settled = True
        if agent.transfer:
            self._target_not_reached(agent)
            return
        self._no_answer(agent.call_id, agent.agent_id)

    def _drop_agent(self, leg: str) -> None:
        agent = self.agents.get(leg)
        if agent is not None:
            agent.settled = True
            agent.deadline = None
        self.media.hang_up(leg)

    def _no_answer(self, call_id: str, agent_id: str) -> None:
        try:
            self._acd().no_answer(call_id, agent_id)
        except ACD_MOVED_ON:
            pass
        except Exception:
            log.exception("could not tell the ACD agent %s did not answer", agent_id)

    def _acd(self) -> AcdService:
        if self.acd is None:
            raise RuntimeError("an agent leg on a worker without the ACD")
        return self.acd

    def _acd_hangup(self, session: Session) -> str | None:
        """End the call in the ACD once: an abandon while waiting, wrap-up once answered."""
        if session.acd_ended or not session.queued or self.acd is None:
            return None
        session.acd_ended = True
        try:
            return self.acd.hangup(session.call_id).result
        except ACD_MOVED_ON:
            return None
        except Exception:
            log.exception("the ACD could not end the call")
            return None
        finally:
            if self.handoff is not None:
                try:
                    self.handoff.release(session.call_id)
                except Exception:
                    log.exception("could not forget the call's SIP worker")

    # -- a flow's transfer ------------------------------------------------------------

    def _transfer(self, session: Session, target: str) -> None:
        """The flow's transfer node, once its prompt has played: a REFER to the target
        (`sip.transfer: refer`), else Kokan dials it and bridges it; a number with no trunk
        to reach it through is the flow's fallback, never silence (ivr.sip_transfer)."""
        token = logs.call_id_var.set(session.call_id)
        try:
            uri = target_uri(target, self.transfer.trunk)
            if uri is None:
                log.error(
                    "cannot transfer to %s: numbers are reached through sip.trunk, which is "
                    "not set (%s); the caller hears the flow's fallback",
                    target,
                    NO_TRUNK,
                )
                self._transfer_not_made(session, NO_TRUNK)
                return
            session.transfer = uri
            session.phase = Phase.TRANSFERRING
            if self.transfer.mode == "bridge":
                self._bridge_transfer(session)
                return
            try:
                self.media.transfer(session.leg, uri)
            except Exception:
                log.exception("could not send the REFER to %s; Kokan bridges the call", uri)
                self._bridge_transfer(session)
                return
            log.info("referred the caller to %s", uri)
        finally:
            logs.call_id_var.reset(token)

    def _bridge_transfer(self, session: Session) -> None:
        """Kokan dials the transfer's target itself and bridges it to the caller as it does
        an agent's leg (the same AgentLeg, bridge and hang-up rules, no ACD); the caller
        hears ringback meanwhile, and the target rings for `TransferRules.ring_s`."""
        uri = session.transfer
        if uri is None or session.gone:
            return
        session.phase = Phase.TRANSFERRING
        try:
            leg = self.media.dial(uri)
        except Exception:
            log.exception("could not dial the transfer's target %s (%s)", uri, NOT_REACHED)
            self._transfer_not_made(session, NOT_REACHED)
            return
        ring_s = self.transfer.ring_s
        self.agents[leg] = AgentLeg(
            leg, session.leg, session.call_id, uri, self.clock() + ring_s, transfer=True
        )
        session.agent_legs.add(leg)
        log.info("dialling the transfer's target %s for up to %s s", uri, ring_s)
        try:
            self.media.play(session.leg, [self.prompts.ringback()], loop=True)
        except Exception:
            log.exception("could not play ringback while the target rings")

    def _target_answered(self, target: AgentLeg) -> None:
        """The transfer's target picked up: the caller's record says transferred, and the
        two legs are bridged once both media streams are up."""
        session = self.sessions.get(target.caller_leg)
        if target.settled or session is None or session.gone or session.transfer is None:
            log.info("the transfer's target %s picked up after the caller left", target.agent_id)
            self._drop_agent(target.leg)
            return
        self._connect(session, target)
        self.media.stop_audio(session.leg)
        log.info("the transfer's target %s answered", target.agent_id)
        self._transfer_settled(session, None)
        self._bridge_when_ready(target)

    def _target_not_reached(self, target: AgentLeg) -> None:
        session = self.sessions.get(target.caller_leg)
        if session is None or session.gone or session.transfer is None:
            return
        log.error(
            "the transfer's target %s was not reached (%s); the caller hears the flow's fallback",
            target.agent_id,
            NOT_REACHED,
        )
        self._transfer_not_made(session, NOT_REACHED)

    def _transfer_not_made(self, session: Session, reason: str) -> None:
        self._transfer_settled(session, reason)
        self.media.stop_audio(session.leg)
        self.fail(session.leg)

    def _left_mid_transfer(self, session: Session) -> Outcome:
        """The caller hung up with the transfer under way: while Kokan rang the target, an
        abandon; while a REFER was pending, a transfer (the caller's side took it and left
        before its final NOTIFY reached us)."""
        ringing = any(a.transfer and a.caller_leg == session.leg for a in self.agents.values())
        return Outcome.ABANDONED if ringing else Outcome.TRANSFERRED

    def _transfer_settled(self, session: Session, failure: str | None) -> None:
        """The call's record of the transfer, once: `transferred` when the target answered
        (by REFER or bridge), else `failed` with the reason (an error id) beside it."""
        session.transfer = None
        outcome = Outcome.TRANSFERRED if failure is None else Outcome.FAILED
        try:
            cdr.append(
                self.redis,
                "outcome",
                self._identity(session),
                utcnow(),
                outcome=outcome.value,
                reason=failure,
            )
        except Exception:
            log.exception("could not record the transfer's outcome")

    # -- turns ----------------------------------------------------------------------

    def _advance(self, session: Session, event: Event) -> None:
        """The caller answered (keys, silence, a recording): the engine's next turn."""
        token = logs.call_id_var.set(session.call_id)
        try:
            state = session.state
            if state is None:
                raise RuntimeError("a turn for a call with no state")
            if session.failed:  # the fallback's own turn is not in Redis
                turn = self.engine.resume(state, event)
            else:
                turn = self._stored_turn(session, state, event)
            session.state = turn.state
            self._after_turn(session, turn)
            session.pending = turn.actions
            self._perform_when_ready(session)
        except Exception:
            log.exception("the call's next turn failed; the caller hears the fallback")
            self.fail(session.leg)
        finally:
            logs.call_id_var.reset(token)

    def _stored_turn(self, session: Session, state: CallState, event: Event) -> Turn:
        step = str(state.step)
        claim = self.store.claim(session.call_id, step)
        if claim.token is None or claim.state is None:
            raise RuntimeError(f"step {step} of the call was already taken or its state is gone")
        try:
            turn = self.engine.resume(claim.state, event)
        except Exception:
            self.store.release(session.call_id, claim.token)
            raise
        self.store.save(
            turn.state,
            step,
            _summary(turn.actions),
            claim.token,
            also=self._call_events(session, state=turn.state),
        )
        return turn

    def _perform_when_ready(self, session: Session) -> None:
        if not session.media_up or not session.pending or session.gone:
            return
        actions, session.pending = session.pending, ()
        self._perform(session, actions)

    def _perform(self, session: Session, actions: tuple[Action, ...]) -> None:
        """Audio in order, then the turn's waiting action once the audio has played."""
        actions = self._resolved(session, actions)
        audio: list[Audio] = []
        following: Action = Hangup()
        for action in actions:
            if isinstance(action, Say | Play):
                audio.append(action)
            elif isinstance(action, Listen | Record):
                audio.extend(action.prompts)
                following = action
                break
            elif isinstance(action, Enqueue | Transfer | Hangup):
                following = action
                break
            elif isinstance(action, RecordingControl):
                self._recording_node(session, action)
        self._drop_capture(session)  # a new turn (or the fallback): the old answer is moot
        files = [self.prompts.audio(item) for item in audio]
        if isinstance(following, Record):
            files.append(self.prompts.beep())
        session.digits = ""
        session.deadline = None
        if isinstance(following, Enqueue):
            self._hold(session, following, files)
            return
        session.then = following
        session.phase = Phase.PROMPTING
        if files:
            self.media.play(session.leg, files)
        else:
            self.played(session.leg)

    def _recording_node(self, session: Session, control: RecordingControl) -> None:
        """A flow's `recording` node pauses or resumes the call's recording, as on Twilio.
        Over SIP only the bridge is recorded and its recording ends with it, so a node
        before the queue or in the survey after the agent finds nothing to control and is
        passed by; one that does find a recording running applies to it."""
        agent = self.agents.get(session.agent_leg or "")
        if session.call_recording is None or agent is None:
            log.debug("recording node %s: the call is not being recorded", control.action)
        elif control.action == "pause":
            self._pause_call_recording(session)
        else:
            self._resume_call_recording(session, agent)

    def _resolved(self, session: Session, actions: tuple[Action, ...]) -> tuple[Action, ...]:
        """A prompt file gone since the flow was published is said as its text, or as the
        flow's apology (ivr.prompt_fallback): the call walks on, never in silence."""
        state = session.state
        return resolve(
            actions,
            missing=self.prompts.missing,
            apology=(lambda: self.engine.apology(state)) if state is not None else lambda: APOLOGY,
            call_id=session.call_id,
        )

    def _listen(self, session: Session, listen: Listen, *, speech: bool = True) -> None:
        session.phase = Phase.LISTENING
        session.deadline = self.clock() + listen.timeout
        if speech and listen.speech:
            self._start_capture(session, listen)

    def _start_capture(self, session: Session, listen: Listen) -> None:
        """Record what the caller says for a node that accepts speech; the timeout stands
        until they start speaking, and keys still work (the first one wins)."""
        phrases = phrases_of(listen.phrases, listen.hints)
        if self.speech is None or not phrases:
            log.warning(
                "the node accepts speech, but %s; it takes keys only over SIP",
                "this worker has no speech queue" if phrases else "it lists no phrases or hints",
            )
            return
        step = session.state.step if session.state else 0
        capture = Capture(self.speech.path_for(session.call_id, step), phrases, listen.language)
        try:
            self.media.start_recording(session.leg, capture.path)
        except Exception:
            log.exception("could not record the caller's answer; keys only")
            return
        session.capture = capture

    def _hear(self, session: Session, now: float) -> None:
        """The loop's look at a spoken answer: the caller's level until the utterance ends,
        then the recognition job's result until its deadline."""
        capture, speech = session.capture, self.speech
        if capture is None or speech is None:
            return
        token = logs.call_id_var.set(session.call_id)
        try:
            if capture.job is None:
                try:
                    level = self.media.rx_level(session.leg)
                except Exception:
                    level = 0  # the media is going away; the hang-up follows
                if not capture.hear(now, level):
                    if capture.speaking:
                        session.deadline = None  # a caller who is talking is not timed out
                    return
                self.media.stop_recording(session.leg)
                session.deadline = None
                try:
                    capture.job = speech.submit(capture.path, capture.phrases, capture.language)
                except Exception:
                    log.exception("could not ask for the answer's recognition; no input")
                    self._speech_answered(session, NoInput())
                    return
                capture.result_deadline = now + RESULT_WAIT_S
                capture.next_poll = now + RESULT_POLL_S
                log.info("caller spoke for %.1f s; recognising", now - (capture.speech_at or now))
                return
            if now < capture.next_poll:
                return
            capture.next_poll = now + RESULT_POLL_S
            try:
                answer = speech.result(capture.job)
            except Exception:
                log.exception("could not read the recognition's result")
                answer = Answer(Status.FAILED)
            if answer.status is Status.PENDING and now < capture.result_deadline:
                return
            if answer.status is Status.PENDING:
                log.warning("no recognition within %s s; taken as no input", RESULT_WAIT_S)
            elif answer.status is Status.FAILED:
                log.warning("the recognition job failed; taken as no input")
            else:
                log.info("caller said %r: %r", answer.heard, answer.phrase)
            self._speech_answered(session, event_for(answer))
        except Exception:
            log.exception("the spoken answer failed; the caller hears the fallback")
            with contextlib.suppress(Exception):
                self._drop_capture(session)
            self.fail(session.leg)
        finally:
            logs.call_id_var.reset(token)

    def _speech_answered(self, session: Session, event: Event) -> None:
        self._drop_capture(session)
        self._advance(session, event)

    def _drop_capture(self, session: Session) -> None:
        capture, session.capture = session.capture, None
        if capture is None:
            return
        if capture.job is None:  # still recording
            self.media.stop_recording(session.leg)
        if self.speech is not None:
            self.speech.forget(capture)

    def _listen_key(self, session: Session, listen: Listen, key: str) -> None:
        if session.capture is not None:  # a key stops the spoken answer and wins
            token = logs.call_id_var.set(session.call_id)
            try:
                said = "mid-speech" if session.capture.speaking else "unsaid"
                log.info("a key ended the spoken answer (%s)", said)
            finally:
                logs.call_id_var.reset(token)
            self._drop_capture(session)
        if listen.finish_on_key and key in listen.finish_on_key:
            event: Event = Input(digits=session.digits) if session.digits else NoInput()
            self._advance(session, event)
            return
        session.digits += key
        if not listen.finish_on_key and len(session.digits) >= listen.max_digits:
            self._advance(session, Input(digits=session.digits))
            return
        session.deadline = self.clock() + listen.timeout  # Twilio's timeout runs between keys too

    def _start_recording(self, session: Session, record: Record) -> None:
        path = (
            self.recordings_dir
            / f"{session.call_id}-{session.state.step if session.state else 0}.wav"
        )
        session.recording = path
        session.recording_started = self.clock()
        session.phase = Phase.RECORDING
        session.deadline = session.recording_started + record.max_length
        self.media.start_recording(session.leg, path)

    def _finish_recording(self, session: Session) -> None:
        if session.phase != Phase.RECORDING or session.recording is None:
            return
        self.media.stop_recording(session.leg)
        seconds = max(0, round(self.clock() - session.recording_started))
        session.deadline = None
        if session.extra.pop(QUEUE_VOICEMAIL, None):
            self._keep_queue_voicemail(session, session.recording, seconds)
            return
        session.phase = Phase.PROMPTING  # until the next turn says otherwise
        self._advance(session, Recorded(url=session.recording.as_uri(), duration=seconds))

    def _keep_queue_voicemail(self, session: Session, path: Path, seconds: int) -> None:
        """The queue's voicemail is not a flow turn: keep it, record the outcome, hang up."""
        session.recording = None
        try:
            self.keep_voicemail(session.call_id, path, seconds)
        except Exception:
            log.exception("could not hand the voicemail %s to the recording pipeline", path)
        try:
            identity = self._identity(session)
            cdr.append(self.redis, "outcome", identity, utcnow(), outcome=Outcome.VOICEMAIL.value)
        except Exception:
            log.exception("could not record the voicemail outcome")
        session.phase = Phase.ENDING
        if not session.gone:
            self.media.hang_up(session.leg)

    def _hold(self, session: Session, enqueue: Enqueue, prompts: list[Path]) -> None:
        """The call waits in its queue: the ACD knows it (joined after the turn was saved);
        the caller hears the queue's music until an agent's leg is bridged in."""
        session.phase = Phase.HOLDING
        session.then = enqueue
        music = self.hold_music(enqueue.queue)
        files = list(prompts) + self._announcement(session)
        if music:
            try:
                files.append(self.prompts.file(music))
            except Exception:
                log.exception("hold music %s cannot be played", music)
        if not files:
            return
        if len(files) == 1 and music:
            self.media.play(session.leg, files, loop=True)
        else:
            self.media.play(session.leg, files)
            session.extra["loop"] = str(files[-1]) if music else ""

    def _announcement(self, session: Session) -> list[Path]:
        """The caller's position and expected wait as audio, as Twilio's hold loop says
        them (acd.estimates.announcement), and when the next one is due; nothing when the
        queue does not announce or the call is not waiting. Never raises: a caller who
        cannot be told their position still hears the music."""
        session.next_announcement = None
        if self.acd is None or session.gone or session.agent_leg is not None:
            return []
        token = logs.call_id_var.set(session.call_id)
        try:
            call = self.acd.call(session.call_id)
            settings = self.queues.get(call.queue) or QueueSettings()
            said = announcement(self.acd, call, settings, lambda: True)
            if said is None:
                return []
            every_s = settings.announce_every_seconds or 0
            session.next_announcement = self.clock() + every_s
            position, wait_s = said
            language = session.state.language if session.state else settings.language
            phrases = twiml_phrases.announcement_phrases(
                language, position, wait_s, settings.callback_key
            )
            files = [self.prompts.spoken(text, locale) for text, locale in phrases]
            log.info("announcing: %s", " ".join(text for text, _locale in phrases))
            return files
        except ACD_MOVED_ON:
            return []
        except Exception:
            log.exception("could not announce the caller's position; the music goes on")
            session.next_announcement = self.clock() + ANNOUNCE_RETRY_S
            return []
        finally:
            logs.call_id_var.reset(token)

    def _announce(self, session: Session) -> None:
        """Time for the next announcement: it interrupts the music, which then goes on."""
        files = self._announcement(session)
        if not files:
            return
        then = session.then
        music = self.hold_music(then.queue) if isinstance(then, Enqueue) else None
        session.extra["loop"] = ""
        if music:
            try:
                session.extra["loop"] = str(self.prompts.file(music))
            except Exception:
                log.exception("hold music %s cannot be played", music)
        self.media.play(session.leg, files)

    def _hold_next(self, session: Session) -> None:
        """A queued caller's prompts ended: the music goes on in a loop."""
        music = session.extra.pop("loop", "")
        if music:
            self.media.play(session.leg, [Path(music)], loop=True)

    # -- side effects ---------------------------------------------------------------

    def _after_turn(self, session: Session, turn: Turn) -> None:
        outcome = turn.state.outcome or {}
        if outcome.get("kind") == "queued" and not session.queued:
            session.queued = True
            if self.acd is not None:
                try:  # a call the ACD lacks still hears music; the failure is logged
                    if self.handoff is not None:  # before the join: its offer comes here
                        self.handoff.claim(turn.state.call_id, self.worker_id)
                    self.acd.join_outcome(turn.state.call_id, outcome, caller=turn.state.caller)
                except Exception:
                    log.exception("could not queue the call in the ACD")
        if outcome.get("kind") == "voicemail" and session.recording is not None:
            path, session.recording = session.recording, None
            seconds = outcome.get("seconds")
            try:  # a job keeps the recording; its failure must not reach the caller
                self.keep_voicemail(
                    session.call_id, path, seconds if isinstance(seconds, int) else 0
                )
            except Exception:
                log.exception("could not hand the voicemail %s to the recording pipeline", path)

    def _identity(self, session: Session) -> cdr.CallIdentity:
        return cdr.CallIdentity(PROVIDER, session.call_id, session.caller, session.called)

    def _call_events(
        self, session: Session, *, state: CallState | None = None, arrived: bool = False
    ) -> AlsoSend:
        return turn_events(
            self._identity(session), state, utcnow(), arrived=arrived, outcomes=OUTCOMES
        )

    def _end_record(self, session: Session) -> None:
        """The call's last events: it ended (and, waiting in a queue, was abandoned)."""
        if session.ended_recorded:
            return
        session.ended_recorded = True
        identity = self._identity(session)
        now = utcnow()
        try:
            pipe = self.redis.pipeline(transaction=False)
            cdr.append(pipe, "ended", identity, now)
            if session.transfer is not None:  # the caller left before the transfer settled
                left = self._left_mid_transfer(session)
                cdr.append(pipe, "outcome", identity, now, outcome=left.value)
            if self._acd_hangup(session) in ACD_ABANDONS:
                cdr.append(pipe, "outcome", identity, now, outcome=Outcome.ABANDONED.value)
            pipe.execute()
        except Exception:
            log.exception("could not record the end of the call")

    def _record_arrival_anyway(self, session: Session) -> None:
        try:
            cdr.append(self.redis, "arrived", self._identity(session), utcnow())
        except Exception:
            log.exception("could not record the call's arrival")


def _waiting(session: Session) -> bool:
    """Queued here and not yet talking: its offers may be rung (even before the caller's
    media is up, when the hold music has not started yet)."""
    return (
        session.queued
        and not session.gone
        and session.agent_leg is None
        and session.referring is None
        and session.phase not in (Phase.ENDING, Phase.ENDED)
    )


def _summary(actions: tuple[Action, ...]) -> str:
    """What the turn did, kept as the step's reply (Twilio keeps its TwiML there)."""
    return json.dumps([type(action).__name__ for action in actions])
