"""Calls the ACD makes through Twilio's REST API: ring agents for an offer, move a
waiting caller on (to the agent, to voicemail), stop agent legs no longer needed.

An offer for a call that a SIP media worker holds is not dialed here: it goes to that
worker's inbox (`acd.sip_handoff`), which rings the agent's SIP URI and bridges the
audio itself; so do the cancel of an expired offer and the move on at a maximum wait.

Every failure here is caught and turned into an ACD event, never left hanging: an agent
Kokan cannot ring is handled as an agent who did not answer (the call goes back to the
head of its place and the agent is paused, so a broken address does not ring forever);
a caller who cannot be moved hears the next turn of the hold loop, which reads the
ACD's state and moves them itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from twilio.base.exceptions import TwilioException
from twilio.rest import Client

from acd.errors import CallEnded, NotOffered, UnknownAgent, UnknownCall
from acd.results import Offer
from acd.schemas import DEFAULT_RING_TIMEOUT_S, Channel
from acd.services import AcdService
from acd.sip_handoff import SipHandoff
from acd.twilio_legs import QueuedCall, TwilioLegs
from acd.twilio_twiml import QueueUrls
from kokan.config import QueueSettings
from kokan.logs import call_id_var
from kokan.twilio_rest import TwilioNotConfigured

AGENT_LEG_EVENTS = ["initiated", "ringing", "answered", "completed"]
"""Status callbacks asked for on agent legs: the final one says no-answer, busy or done."""
IGNORED_ACD_ERRORS = (UnknownCall, CallEnded, NotOffered)
"""The offer moved on by itself (answered elsewhere, caller gone, expired): nothing to undo."""

log = logging.getLogger(__name__)


def agent_address(contact: Mapping[str, str]) -> str | None:
    """Where an agent's phone rings: Twilio Client identity, SIP URI, or phone number."""
    if contact.get("twilio_identity"):
        return "client:" + contact["twilio_identity"]
    return contact.get("sip_uri") or contact.get("phone") or None


class TwilioCalls:
    def __init__(
        self,
        acd: AcdService,
        legs: TwilioLegs,
        urls: QueueUrls,
        rest: Callable[[], Client],
        queues: Mapping[str, QueueSettings],
        caller_id: str | None = None,
        sip: SipHandoff | None = None,
    ) -> None:
        """`rest` builds the client when first needed, so a Kokan without Twilio
        credentials still starts; `caller_id` overrides the number agents see; `sip`
        finds the SIP worker holding a call (default: on the ACD's own Redis and prefix)."""
        self.acd = acd
        self.legs = legs
        self.urls = urls
        self._rest = rest
        self._client: Client | None = None
        self.queues = queues
        self.caller_id = caller_id
        self.sip = sip if sip is not None else SipHandoff(acd.redis, acd.keys.prefix)

    @property
    def rest(self) -> Client:
        if self._client is None:
            self._client = self._rest()
        return self._client

    def dial(self, offer: Offer) -> None:
        """Ring every agent of the offer (several for ring-all)."""
        token = call_id_var.set(offer.call_id)
        try:
            if offer.channel != Channel.VOICE:
                log.info("offer on %s is for the agent desktop, not dialed", offer.channel)
                return
            worker = self.sip.owner(offer.call_id)
            if worker is not None:
                self._to_sip_worker(worker, offer)
                return
            queued = self.legs.call(offer.call_id)
            for agent_id in offer.agents:
                self._ring(offer, agent_id, queued)
        finally:
            call_id_var.reset(token)

    def _to_sip_worker(self, worker: str, offer: Offer) -> None:
        if self.sip.alive(worker):
            self.sip.send_offer(worker, offer)
            log.info("offer handed to SIP worker %s, which holds the call", worker)
            return
        log.warning("SIP worker %s holding the call is gone; ending the call", worker)
        try:
            ended = self.acd.hangup(offer.call_id)
        except IGNORED_ACD_ERRORS:
            self.sip.release(offer.call_id)
            return
        # forgotten only once ended: a call still in line must never be rung through Twilio
        self.sip.release(offer.call_id)
        for next_offer in ended.offers:  # only where routing is not deferred (the router)
            self.dial(next_offer)

    def _ring(self, offer: Offer, agent_id: str, queued: QueuedCall | None) -> None:
        try:
            address = agent_address(self.acd.agent(agent_id).contact)
        except UnknownAgent:
            address = None
        if address is None:
            log.warning("agent %s has no phone, SIP URI or Twilio identity to ring", agent_id)
            self._not_reached(offer, agent_id)
            return
        kokan_number = self.caller_id or (queued.called if queued else "") or None
        if offer.kind == "callback" or address.startswith("+"):
            shown = kokan_number  # a phone network shows only numbers Kokan owns
        else:
            shown = (queued.caller if queued else None) or kokan_number  # a screen pop
        settings = self.queues.get(offer.queue)
        ring_s = settings.ring_timeout_seconds if settings else DEFAULT_RING_TIMEOUT_S
        try:
            leg = self.rest.calls.create(
                to=address,
                from_=shown or offer.callback_number or "anonymous",
                url=self.urls.agent(offer.call_id, agent_id),
                method="POST",
                status_callback=self.urls.agent_status(offer.call_id, agent_id),
                status_callback_event=AGENT_LEG_EVENTS,
                status_callback_method="POST",
                timeout=ring_s,
            )
        except (TwilioException, TwilioNotConfigured, OSError) as exc:
            log.error("could not ring agent %s at %s: %s", agent_id, address, exc)
            self._not_reached(offer, agent_id)
            return
        self.legs.add_leg(offer.call_id, agent_id, str(leg.sid))
        log.info("ringing agent %s for %s (leg %s)", agent_id, offer.queue, leg.sid)

    def _not_reached(self, offer: Offer, agent_id: str) -> None:
        try:
            requeued = self.acd.no_answer(offer.call_id, agent_id)
        except IGNORED_ACD_ERRORS:
            return
        for next_offer in requeued.offers:  # only where routing is not deferred (the router)
            self.dial(next_offer)

    def redirect_caller(self, call_id: str) -> bool:
        """Send the caller to the hold loop's URL now, which reads the ACD and connects
        them, plays voicemail or says goodbye; False when Twilio refused (the caller has
        gone, or the next loop turn will do it)."""
        if self.sip.send_max_wait(call_id, ""):
            return True
        try:
            self.rest.calls(call_id).update(url=self.urls.wait(), method="POST")
        except (TwilioException, TwilioNotConfigured, OSError) as exc:
            log.warning("could not move caller %s on: %s", call_id, exc)
            return False
        return True

    def cancel_legs(self, call_id: str, keep: str | None = None) -> None:
        """Stop ringing (or end) every agent leg of the call but `keep`'s."""
        if keep is None and self.sip.send_cancel(call_id):
            return
        for agent_id, leg_sid in self.legs.legs(call_id).items():
            if agent_id == keep:
                continue
            try:
                self.rest.calls(leg_sid).update(status="canceled")
            except (TwilioException, TwilioNotConfigured, OSError) as exc:
                # an answered or finished leg cannot be canceled; nothing rings any more
                log.debug("agent leg %s not canceled: %s", leg_sid, exc)
