"""A supervisor's leg into a live SIP call: listen, whisper to the agent, or barge in.

The API (`acd.monitor`) sends the worker holding the call a `monitor` message; this module
dials the supervisor's URI as one more pjsua call (it takes one of the worker's call slots:
refused, with the reason in the monitor's state, when none is free) and, once the
supervisor answers, wires one-way conference ports for the mode:

    listen   caller -> supervisor, agent -> supervisor
    whisper  listen + supervisor -> agent
    barge    listen + supervisor -> agent, supervisor -> caller

The caller <-> agent bridge is the driver's and is never touched here. A new mode on the
same call rewires the same leg (ports connected or disconnected, no new call), so a
supervisor goes listen -> whisper -> barge without ringing again. The supervisor hanging up
changes nothing else; the call ending (or the agent leaving it) hangs the supervisor up.
A media restart of any of the three legs (a re-INVITE) rewires, as the driver re-bridges.

Like the driver, this holds no pjsua2 types and runs on the adapter's one event thread.
Nothing here may hurt the call itself: every failure is logged, the supervisor's leg is
hung up and the state says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from acd.monitor import ACTIVE, BARGE, ENDED, FAILED, LISTEN, MODES, RINGING, STOP, WHISPER
from kokan import logs

RING_S = 30.0
"""How long the supervisor's phone rings: long enough to pick up a softphone, and the
call slot it holds comes back soon when nobody does."""

CALLER, AGENT, SUPERVISOR = "caller", "agent", "supervisor"
WIRING: dict[str, tuple[tuple[str, str], ...]] = {
    LISTEN: ((CALLER, SUPERVISOR), (AGENT, SUPERVISOR)),
    WHISPER: ((CALLER, SUPERVISOR), (AGENT, SUPERVISOR), (SUPERVISOR, AGENT)),
    BARGE: (
        (CALLER, SUPERVISOR),
        (AGENT, SUPERVISOR),
        (SUPERVISOR, AGENT),
        (SUPERVISOR, CALLER),
    ),
}
"""(who speaks, who hears) per mode: the one-way conference connections it needs."""

NOT_BRIDGED = "sip-monitor-not-bridged"
"""The call is not talking to an agent on this worker (it ended, or the agent left)."""
NO_SLOT = "sip-monitor-no-slot"
DIAL_FAILED = "sip-monitor-dial-failed"
NOT_ANSWERED = "sip-monitor-not-answered"
MEDIA_FAILED = "sip-monitor-media-failed"
BAD_MODE = "sip-monitor-bad-mode"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BridgedCall:
    """The legs of a call talking to an agent on this worker, and whether their media is up."""

    caller: str
    caller_media: bool
    agent: str | None
    agent_media: bool


class Calls(Protocol):
    """What the monitor asks of the driver."""

    def bridged_call(self, call_id: str) -> BridgedCall | None: ...

    def legs_in_use(self) -> int:
        """pjsua calls this worker holds (callers, agents, supervisors)."""
        ...


class MonitorMedia(Protocol):
    def dial(self, uri: str) -> str: ...

    def hang_up(self, leg: str) -> None: ...

    def transmit(self, source: str, sink: str) -> None: ...

    def stop_transmit(self, source: str, sink: str) -> None: ...


Report = Callable[..., None]
"""`acd.monitor.Monitors.report`: (call id, status, **fields) into the monitor's state."""


@dataclass
class SupervisorLeg:
    leg: str
    call_id: str
    uri: str
    mode: str
    deadline: float | None
    answered: bool = False
    media_up: bool = False
    applied: str | None = None
    """The mode the ports are wired for (reported once per change)."""
    wired: set[tuple[str, str]] = field(default_factory=set)
    """(source leg, sink leg) connections made for this supervisor."""
    ending: str = ""
    """Why we hang it up ourselves (the state's message); empty: the supervisor hung up."""
    failure: str = ""
    """The error_id when the hang-up is a failure (ring-out, media)."""


class SupervisorLegs:
    def __init__(
        self,
        *,
        media: MonitorMedia,
        calls: Calls,
        report: Report | None,
        clock: Callable[[], float],
        max_calls: int,
        ring_s: float = RING_S,
    ) -> None:
        """`report`: where the monitor's state goes (none: a worker without the ACD);
        `max_calls`: the worker's call slots (sip.max_calls, pjsua's limit)."""
        self.media = media
        self.calls = calls
        self._report_to = report
        self.clock = clock
        self.max_calls = max_calls
        self.ring_s = ring_s
        self.legs: dict[str, SupervisorLeg] = {}

    def of_call(self, call_id: str) -> SupervisorLeg | None:
        return next((s for s in self.legs.values() if s.call_id == call_id), None)

    def call_id_of(self, leg: str) -> str | None:
        found = self.legs.get(leg)
        return found.call_id if found is not None else None

    # -- from the driver ----------------------------------------------------------------

    def request(self, call_id: str, mode: str, uri: str) -> None:
        """The API's message: a new supervisor leg, a new mode for the live one, or stop."""
        live = self.of_call(call_id)
        if mode == STOP:
            if live is not None:
                self._hang_up(live, "stopped through the API")
            else:  # asked before its leg was dialed (or the leg is gone): nothing to hang up
                self._report(call_id, ENDED, message="stopped through the API")
            return
        if mode not in MODES:
            self._report(call_id, FAILED, error_id=BAD_MODE, message=f"no mode {mode!r}")
            return
        if live is not None:
            if uri and uri != live.uri:
                log.warning("a monitor from %s asked while %s monitors; mode only", uri, live.uri)
            live.mode = mode
            log.info("supervisor %s now in %s mode", live.uri, mode)
            self._wire(live)
            return
        if self.calls.bridged_call(call_id) is None:
            self._report(
                call_id,
                FAILED,
                error_id=NOT_BRIDGED,
                message="the call is no longer talking to an agent on its SIP worker",
            )
            return
        if self.calls.legs_in_use() >= self.max_calls:
            log.warning("no call slot free for a supervisor's leg")
            self._report(
                call_id,
                FAILED,
                error_id=NO_SLOT,
                message=(
                    f"the SIP worker holding the call has all {self.max_calls} call slots "
                    "in use; try again when one of its calls ends"
                ),
            )
            return
        try:
            leg = self.media.dial(uri)
        except Exception as exc:
            log.exception("could not call the supervisor at %s", uri)
            self._report(
                call_id, FAILED, error_id=DIAL_FAILED, message=f"could not call {uri}: {exc}"
            )
            return
        self.legs[leg] = SupervisorLeg(leg, call_id, uri, mode, self.clock() + self.ring_s)
        log.info("ringing supervisor %s to %s for up to %s s", uri, mode, self.ring_s)
        self._report(call_id, RINGING, applied_mode="", error_id="", message="")

    def confirmed(self, leg: str) -> bool:
        """True when the leg is a supervisor's (who answered)."""
        found = self.legs.get(leg)
        if found is None:
            return False
        found.answered = True
        found.deadline = None
        log.info("supervisor %s answered", found.uri)
        self._wire(found)
        return True

    def media_ready(self, leg: str) -> bool:
        """True when the leg is a supervisor's; its (re)started stream is wired (again)."""
        found = self.legs.get(leg)
        if found is None:
            return False
        found.media_up = True
        found.wired.clear()  # a new stream may have a new conference port
        self._wire(found)
        return True

    def relink(self, call_id: str) -> None:
        """The caller's or the agent's media (re)started: wire the supervisor to it again."""
        found = self.of_call(call_id)
        if found is not None:
            found.wired.clear()
            self._wire(found)

    def disconnected(self, leg: str, status: int) -> bool:
        """True when the leg was a supervisor's: the call itself goes on untouched."""
        found = self.legs.pop(leg, None)
        if found is None:
            return False
        token = logs.call_id_var.set(found.call_id)
        try:
            if found.failure:
                self._report(found.call_id, FAILED, error_id=found.failure, message=found.ending)
            elif not found.answered and not found.ending:
                log.info("supervisor %s did not answer (SIP %s)", found.uri, status)
                self._report(
                    found.call_id,
                    FAILED,
                    error_id=NOT_ANSWERED,
                    message=f"{found.uri} did not answer (SIP {status})",
                )
            else:
                log.info("supervisor %s left: %s", found.uri, found.ending or "hung up")
                self._report(found.call_id, ENDED, message=found.ending or "the supervisor hung up")
        finally:
            logs.call_id_var.reset(token)
        return True

    def call_ended(self, call_id: str) -> None:
        """The call (or its bridge to the agent) is over: the supervisor has nothing to hear."""
        found = self.of_call(call_id)
        if found is not None:
            self._hang_up(found, "the call ended")

    def tick(self, now: float) -> None:
        for found in list(self.legs.values()):
            if found.deadline is not None and now >= found.deadline and not found.answered:
                found.deadline = None
                found.failure = NOT_ANSWERED
                self._hang_up(found, f"{found.uri} did not answer within {self.ring_s:g} s")

    def shutdown(self) -> None:
        for found in list(self.legs.values()):
            self._hang_up(found, "the SIP worker is stopping")

    # -- wiring -------------------------------------------------------------------------

    def _wire(self, found: SupervisorLeg) -> None:
        """Connect what the mode needs among the legs whose media is up, disconnect what it
        does not; report the mode once it is live. A failure hangs up the supervisor only."""
        token = logs.call_id_var.set(found.call_id)
        try:
            call = self.calls.bridged_call(found.call_id)
            if call is None:
                self._hang_up(found, "the call ended")
                return
            want: set[tuple[str, str]] = set()
            if found.answered and found.media_up:
                legs = {
                    CALLER: call.caller if call.caller_media else None,
                    AGENT: call.agent if call.agent_media else None,
                    SUPERVISOR: found.leg,
                }
                for source, sink in WIRING[found.mode]:
                    one, other = legs[source], legs[sink]
                    if one is not None and other is not None:
                        want.add((one, other))
            for pair in found.wired - want:
                self.media.stop_transmit(*pair)
            for pair in want - found.wired:
                self.media.transmit(*pair)
            found.wired = want
            if want and found.applied != found.mode:
                found.applied = found.mode
                log.info("supervisor %s wired for %s", found.uri, found.mode)
                self._report(found.call_id, ACTIVE, applied_mode=found.mode)
        except Exception:
            log.exception("could not connect the supervisor's audio; hanging up their leg")
            found.failure = MEDIA_FAILED
            self._hang_up(found, "the supervisor's audio could not be connected")
        finally:
            logs.call_id_var.reset(token)

    def _hang_up(self, found: SupervisorLeg, why: str) -> None:
        found.ending = found.ending or why
        found.deadline = None
        try:
            self.media.hang_up(found.leg)
        except Exception:
            log.exception("could not hang up the supervisor's leg")

    def _report(self, call_id: str, status: str, **fields: str) -> None:
        """Never raises: the state is for the supervisor's page, the call goes on."""
        if self._report_to is None:
            return
        try:
            self._report_to(call_id, status, **fields)
        except Exception:
            log.exception("could not record the monitor's state (%s)", status)
