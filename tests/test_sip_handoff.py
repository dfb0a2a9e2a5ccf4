"""The ACD's hand-off to SIP workers, on real Redis: an offer for a call a SIP worker
claimed goes to that worker's inbox and never to Twilio; a call whose worker stopped
beating is ended instead of rung; inboxes, claims and heartbeats expire."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from twilio.rest import Client

from acd.dialer import TwilioCalls
from acd.results import Offer
from acd.schemas import AgentConfig, QueueConfig
from acd.services import AcdService
from acd.sip_handoff import (
    ALIVE_KEY,
    ALIVE_TTL_S,
    CANCEL,
    INBOX_KEY,
    INBOX_TTL_S,
    MAX_WAIT,
    OFFER,
    OWNER_KEY,
    OWNER_TTL_S,
    InboxReader,
    Message,
    SipHandoff,
)
from acd.twilio_legs import TwilioLegs
from acd.twilio_twiml import QueueUrls

WORKER = "host-127.0.0.1-5060-42"
OFFER_FOR_SIP = Offer(
    call_id="1-99@127.0.0.1",
    queue="billing",
    agents=("aiko", "ben"),
    kind="call",
    channel="voice",
    deadline_ms=1_700_000_000_000,
    callback_number=None,
    attempt=2,
)


def test_an_offer_reaches_the_worker_that_claimed_the_call(redis_client: redis.Redis) -> None:
    acd = AcdService(redis_client)
    handoff = SipHandoff(redis_client, acd.keys.prefix)
    assert handoff.owner(OFFER_FOR_SIP.call_id) is None, "no worker claimed the call yet"
    assert not handoff.send_cancel(OFFER_FOR_SIP.call_id)
    assert not handoff.alive(WORKER)
    handoff.beat(WORKER)
    assert handoff.alive(WORKER)
    assert 0 < redis_client.ttl(acd.keys.prefix + ALIVE_KEY.format(worker=WORKER)) <= ALIVE_TTL_S

    handoff.claim(OFFER_FOR_SIP.call_id, WORKER)
    assert handoff.owner(OFFER_FOR_SIP.call_id) == WORKER
    handoff.send_offer(WORKER, OFFER_FOR_SIP)
    assert handoff.send_cancel(OFFER_FOR_SIP.call_id)
    assert handoff.send_max_wait(OFFER_FOR_SIP.call_id, "voicemail")

    owner_key = acd.keys.prefix + OWNER_KEY.format(call=OFFER_FOR_SIP.call_id)
    inbox_key = acd.keys.prefix + INBOX_KEY.format(worker=WORKER)
    assert 0 < redis_client.ttl(owner_key) <= OWNER_TTL_S
    assert 0 < redis_client.ttl(inbox_key) <= INBOX_TTL_S

    messages = handoff.take(WORKER)
    assert [m.kind for m in messages] == [OFFER, CANCEL, MAX_WAIT]
    assert messages[0].offer == OFFER_FOR_SIP
    assert messages[2].action == "voicemail"
    assert handoff.take(WORKER) == []
    assert handoff.take("another-worker") == []

    handoff.release(OFFER_FOR_SIP.call_id)
    assert handoff.owner(OFFER_FOR_SIP.call_id) is None


def _no_twilio() -> Client:
    raise AssertionError("a SIP caller's offer must not reach Twilio")


def test_the_router_hands_a_sip_callers_offer_to_its_worker_not_to_twilio(
    redis_client: redis.Redis,
) -> None:
    acd = AcdService(redis_client)
    calls = TwilioCalls(
        acd=acd,
        legs=TwilioLegs(redis_client),
        urls=QueueUrls("http://kokan.test"),
        rest=_no_twilio,
        queues={},
    )
    calls.sip.claim(OFFER_FOR_SIP.call_id, WORKER)
    calls.sip.beat(WORKER)

    calls.dial(OFFER_FOR_SIP)
    calls.cancel_legs(OFFER_FOR_SIP.call_id)
    assert calls.redirect_caller(OFFER_FOR_SIP.call_id)

    kinds = [m.kind for m in calls.sip.take(WORKER)]
    assert kinds == [OFFER, CANCEL, MAX_WAIT]


def test_an_offer_for_a_call_whose_worker_is_gone_ends_the_call_and_frees_the_agent(
    redis_client: redis.Redis,
) -> None:
    acd = AcdService(redis_client)
    acd.put_queue("billing", QueueConfig())
    acd.put_agent("aiko", AgentConfig(queues=["billing"], sip_uri="sip:aiko@127.0.0.1:5099"))
    acd.set_status("aiko", "available", route=False)
    calls = TwilioCalls(
        acd=acd,
        legs=TwilioLegs(redis_client),
        urls=QueueUrls("http://kokan.test"),
        rest=_no_twilio,
        queues={},
    )
    calls.sip.claim(OFFER_FOR_SIP.call_id, WORKER)
    calls.sip.beat(WORKER)
    acd.join(OFFER_FOR_SIP.call_id, "billing", route=False)
    (offer,) = acd.route(["billing"])
    calls.sip.stopped(WORKER)  # as if killed: no heartbeat any more

    calls.dial(offer)

    assert calls.sip.take(WORKER) == [], "nothing sent to a worker that is gone"
    assert acd.call(offer.call_id).state == "ended"
    assert acd.agent("aiko").status == "available"
    assert calls.sip.owner(offer.call_id) is None


READ_DEADLINE_S = 5.0
"""The reader's blocking pop returns within milliseconds of a push; far longer is a bug."""


def test_the_inbox_reader_hands_messages_to_the_loop_in_order_and_stops(
    redis_client: redis.Redis,
) -> None:
    acd = AcdService(redis_client)
    handoff = SipHandoff(redis_client, acd.keys.prefix)
    reader = InboxReader(handoff, WORKER)
    reader.start()
    try:
        assert reader.drain() == []
        handoff.claim(OFFER_FOR_SIP.call_id, WORKER)
        handoff.send_offer(WORKER, OFFER_FOR_SIP)
        assert handoff.send_cancel(OFFER_FOR_SIP.call_id)
        got: list[Message] = []
        deadline = time.monotonic() + READ_DEADLINE_S
        while len(got) < 2 and time.monotonic() < deadline:
            got += reader.drain()
            time.sleep(0.01)
        assert [m.kind for m in got] == [OFFER, CANCEL]
        assert got[0].offer == OFFER_FOR_SIP
        assert redis_client.llen(acd.keys.prefix + INBOX_KEY.format(worker=WORKER)) == 0
    finally:
        reader.stop()
    assert not reader._thread.is_alive()


HOLDING_WORKER = "test-worker-1"


@dataclass
class HeldCall:
    """A call in the ACD that a live SIP worker holds, as the API sees it."""

    service: AcdService
    call_id: str
    worker: str
    handoff: SipHandoff


def hold_sip_call(
    service: AcdService, redis_client: redis.Redis, id_prefix: str, *, answer_by: str | None
) -> HeldCall:
    """A caller queued in `billing` whose call HOLDING_WORKER holds (its claim and heartbeat
    as a worker writes them), answered by `answer_by` unless None."""
    call_id = f"{id_prefix}-{uuid.uuid4().hex[:12]}@127.0.0.1"
    handoff = SipHandoff(redis_client, service.keys.prefix)
    handoff.claim(call_id, HOLDING_WORKER)
    handoff.beat(HOLDING_WORKER)
    service.join(call_id, "billing", caller="+819012345678")
    if answer_by is not None:
        (offer,) = service.set_status(answer_by, "available")
        assert offer.call_id == call_id
        service.answer(call_id, answer_by)
    return HeldCall(service, call_id, HOLDING_WORKER, handoff)


def error_id_of(answer: Any, status: int) -> str:
    """The API answer's error_id, once its status is the one expected."""
    assert answer.status_code == status, answer.get_json()
    error_id: str = answer.get_json()["error_id"]
    return error_id
