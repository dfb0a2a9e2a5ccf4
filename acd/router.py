"""The routing loop: applies the ACD's deadlines, makes the offers, and has them dialed.

Web workers defer routing (they only wake this loop), so every offer is made in a
process that dials it. The loop blocks on the ACD's wake list, so a new caller or a
freed agent is routed at once, and otherwise runs every TICK_INTERVAL_S for the
deadlines (ring timeouts, wrap-ups ending, maximum waits, relaxation steps). Several
routers may run against one Redis: each decision is one atomic script, so an agent is
never offered twice, whichever router made the offer.

Offers for SIP callers are not dialed here: `TwilioCalls` hands them (and the cancels of
expired ones) to the SIP worker that holds the caller, through its Redis inbox
(`acd.sip_handoff`), since only that process owns the caller's media.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from acd.dialer import TwilioCalls
from acd.results import TickReport
from acd.services import AcdService

TICK_INTERVAL_S = 0.25
"""Deadlines are checked four times a second: a ring timeout or wrap-up ends within a
quarter second of its time, at the cost of one small script per tick."""
ERROR_PAUSE_S = 1.0
"""After a failed tick (Redis restarting, say): retry soon, without spinning."""
DIAL_THREADS = 8
"""REST calls to Twilio take 100-500 ms each; dialing in threads keeps routing going
while a burst of offers is placed."""

log = logging.getLogger(__name__)


class Router:
    def __init__(self, acd: AcdService, calls: TwilioCalls) -> None:
        if acd.defer_routing:
            raise ValueError("the router must route itself (defer_routing=False)")
        self.acd = acd
        self.calls = calls
        self.pool = ThreadPoolExecutor(max_workers=DIAL_THREADS, thread_name_prefix="dial")

    def run_once(self) -> TickReport:
        report = self.acd.tick()
        self.dispatch(report)
        return report

    def dispatch(self, report: TickReport) -> None:
        for expired in report.expired:
            self.pool.submit(self._guarded, self.calls.cancel_legs, expired.call_id)
        for waited in report.max_waits:
            if waited.action in ("voicemail", "callback"):
                self.pool.submit(self._guarded, self.calls.redirect_caller, waited.call_id)
        for offer in report.offers:
            self.pool.submit(self._guarded, self.calls.dial, offer)

    @staticmethod
    def _guarded(work: Callable[..., object], *args: object) -> None:
        try:
            work(*args)
        except Exception:
            log.exception("dialing work failed; the offer's deadline returns the call")

    def run(self, stop: threading.Event) -> None:
        log.info("routing every %.2f s and on every wake", TICK_INTERVAL_S)
        while not stop.is_set():
            try:
                self.acd.wait_for_wake(TICK_INTERVAL_S)
                self.run_once()
            except Exception:
                log.exception("routing pass failed; retrying")
                stop.wait(ERROR_PAUSE_S)
        self.pool.shutdown(wait=True)
