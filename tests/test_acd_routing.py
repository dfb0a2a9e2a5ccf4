"""Who gets which call: priority, relaxation, preferred agent, novices, capacity,
abandons, redirect on no answer, max wait and callbacks — on a controlled clock."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
import redis

from acd.clock import ManualClock
from acd.events import EventLog
from acd.invariants import check_events, check_state
from acd.results import Offer
from acd.schemas import AgentConfig, Capacity, QueueConfig
from acd.services import AcdService


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def acd(redis_client: redis.Redis, clock: ManualClock) -> AcdService:
    return AcdService(redis_client, clock=clock, rng=random.Random(5))


def queue(acd: AcdService, name: str = "q", **settings: object) -> None:
    acd.put_queue(name, QueueConfig.model_validate({"wrapup_seconds": 0, **settings}))


def agent(acd: AcdService, agent_id: str, available: bool = True, **settings: object) -> None:
    acd.put_agent(agent_id, AgentConfig.model_validate({"queues": ["q"], **settings}))
    if available:
        acd.set_status(agent_id, "available")


def agents_of(offers: Iterable[Offer]) -> list[tuple[str, tuple[str, ...]]]:
    return [(offer.call_id, offer.agents) for offer in offers]


def test_higher_priority_first_then_oldest(acd: AcdService, clock: ManualClock) -> None:
    queue(acd)
    agent(acd, "a", available=False)
    for call_id, priority in [("c1", 0), ("c2", 5), ("c3", 5), ("c4", -1), ("c5", 0)]:
        acd.join(call_id, "q", priority=priority)
        clock.advance(1)
    assert [acd.call(c).position for c in ("c1", "c2", "c3", "c4", "c5")] == [3, 1, 2, 5, 4]
    order = []
    offers = acd.set_status("a", "available")
    while offers:
        (offer,) = offers
        order.append(offer.call_id)
        acd.answer(offer.call_id, "a")
        offers = acd.hangup(offer.call_id).offers
    assert order == ["c2", "c3", "c1", "c5", "c4"]


def test_agents_serve_the_higher_priority_queue_first(acd: AcdService, clock: ManualClock) -> None:
    queue(acd, "low", priority=0)
    queue(acd, "high", priority=10)
    acd.put_agent("a", AgentConfig(queues=["low", "high"]))
    acd.join("old-low", "low")
    clock.advance(60)
    acd.join("new-high", "high")
    offers = acd.set_status("a", "available")
    assert agents_of(offers) == [("new-high", ("a",))]


def test_requirements_relax_in_steps_over_the_wait(acd: AcdService, clock: ManualClock) -> None:
    queue(
        acd,
        skills={"network": 4},
        relax=[
            {"after_seconds": 30, "min_proficiency": 2},
            {"after_seconds": 60, "any_agent": True},
        ],
    )
    agent(acd, "level1", skills={"network": 1})
    agent(acd, "level2", skills={"network": 2})
    assert acd.join("c1", "q").offers == ()
    clock.advance(29.999)
    assert acd.tick().offers == ()
    clock.advance(0.001)
    assert agents_of(acd.tick().offers) == [("c1", ("level2",))]
    acd.answer("c1", "level2")
    # a second call: level2 is busy, level1 too weak until the last step
    acd.join("c2", "q")
    clock.advance(59.999)
    assert acd.tick().offers == ()
    clock.advance(0.001)
    assert agents_of(acd.tick().offers) == [("c2", ("level1",))]


def test_a_flow_adds_its_own_skill_levels(acd: AcdService, clock: ManualClock) -> None:
    queue(acd, skills={"network": 2})
    agent(acd, "idle-longest", skills={"network": 5})
    clock.advance(1)
    agent(acd, "bilingual", skills={"network": 2, "english": 4})
    clock.advance(1)
    agent(acd, "english-only", skills={"english": 5})
    joined = acd.join_outcome(
        "c1", {"kind": "queued", "queue": "q", "priority": 3, "skills": {"english": 3}}
    )
    assert agents_of(joined.offers) == [("c1", ("bilingual",))]
    # the flow can also raise the queue's own level
    joined = acd.join("c2", "q", skills={"network": 5})
    assert agents_of(joined.offers) == [("c2", ("idle-longest",))]


def test_calls_the_free_agents_cannot_serve_do_not_block_the_line(
    acd: AcdService, clock: ManualClock
) -> None:
    queue(acd)
    agent(acd, "generalist", available=False, skills={"network": 2})
    for i in range(30):  # a long head of calls needing an expert nobody free is
        acd.join(f"expert-{i}", "q", skills={"network": 5})
    acd.join("easy", "q", skills={"network": 1})
    offers = acd.set_status("generalist", "available")
    assert agents_of(offers) == [("easy", ("generalist",))]
    assert acd.call("expert-0").position == 1


def test_a_preferred_agent_gets_the_first_chance(acd: AcdService, clock: ManualClock) -> None:
    queue(acd, preferred_agent_wait_seconds=30)
    agent(acd, "other")
    agent(acd, "usual")
    acd.join("warmup", "q", preferred_agent="usual")
    acd.answer("warmup", "usual")
    # the customer calls again while their usual agent is busy: no one else is offered
    assert acd.join("c1", "q", preferred_agent="usual").offers == ()
    clock.advance(10)
    assert acd.tick().offers == ()
    offers = acd.hangup("warmup").offers
    assert agents_of(offers) == [("c1", ("usual",))]
    acd.answer("c1", "usual")
    # and when the usual agent stays busy past the window, anyone may take the call
    acd.join("c2", "q", preferred_agent="usual")
    clock.advance(29.999)
    assert acd.tick().offers == ()
    clock.advance(0.001)
    assert agents_of(acd.tick().offers) == [("c2", ("other",))]


def test_a_caller_who_spoke_to_an_agent_recently_waits_for_that_agent(
    acd: AcdService, clock: ManualClock
) -> None:
    queue(acd, preferred_agent_wait_seconds=30)
    agent(acd, "other")
    agent(acd, "usual")
    caller = "+819012345678"
    first = acd.join("first", "q", caller=caller)
    assert agents_of(first.offers) == [("first", ("other",))], "longest idle: other"
    assert agents_of(acd.no_answer("first", "other").offers) == [("first", ("usual",))]
    acd.answer("first", "usual")
    acd.hangup("first")
    acd.set_status("other", "available")
    clock.advance(20)  # usual's 10 s wrap-up is over: other has been idle longer
    acd.tick()
    # the same customer calls back: their agent from last time gets it, not the longest idle
    assert agents_of(acd.join("second", "q", caller=caller).offers) == [("second", ("usual",))]
    assert agents_of(acd.join("stranger", "q", caller="+819099999999").offers) == [
        ("stranger", ("other",))
    ]


def test_novices_get_the_simple_calls(acd: AcdService, clock: ManualClock) -> None:
    queue(acd, skills={"billing": 2}, prefer_novice=True)
    agent(acd, "expert", skills={"billing": 5})
    clock.advance(1)
    agent(acd, "senior", skills={"billing": 4})
    clock.advance(1)
    agent(acd, "novice", skills={"billing": 2})
    clock.advance(1)
    agent(acd, "too-new", skills={"billing": 1})
    simple = acd.join("simple", "q", simple=True)
    assert agents_of(simple.offers) == [("simple", ("novice",))]
    hard = acd.join("hard", "q")
    assert agents_of(hard.offers) == [("hard", ("expert",))]
    # with the novice busy, the next simple call goes to the least proficient left
    simple2 = acd.join("simple-2", "q", simple=True)
    assert agents_of(simple2.offers) == [("simple-2", ("senior",))]


def test_capacity_per_channel_and_voice_excludes_the_rest(
    acd: AcdService, clock: ManualClock
) -> None:
    queue(acd)
    agent(acd, "a", capacity={"voice": 1, "chat": 3, "sms": 0})
    chats = [acd.join(f"chat{i}", "q", channel="chat").offers for i in range(4)]
    assert [len(o) for o in chats] == [1, 1, 1, 0]
    assert acd.agent("a").load == {"voice": 0, "chat": 3, "sms": 0}
    assert acd.join("sms1", "q", channel="sms").offers == ()  # sms capacity 0
    assert acd.join("voice1", "q").offers == ()  # chats open: no voice
    for i in range(3):
        acd.answer(f"chat{i}", "a")
    offers = acd.hangup("chat0").offers
    assert agents_of(offers) == [("chat3", ("a",))]  # one chat slot freed
    for call_id in ("chat1", "chat2"):
        acd.hangup(call_id)
    acd.answer("chat3", "a")
    offers = acd.hangup("chat3").offers
    assert agents_of(offers) == [("voice1", ("a",))]  # all chats closed: the voice call
    acd.answer("voice1", "a")
    assert acd.join("chat9", "q", channel="chat").offers == ()  # on a voice call: no chats
    assert acd.agent("a").status == "on-call"
    acd.put_agent("nophone", AgentConfig(queues=["q"], capacity=Capacity(voice=0)))
    offers = acd.set_status("nophone", "available")
    assert agents_of(offers) == [("sms1", ("nophone",)), ("chat9", ("nophone",))]
    assert acd.join("voice2", "q").offers == ()  # no voice capacity at all
    assert check_state(acd.redis) == []


def test_abandons_leave_at_once_and_short_ones_count_apart(
    acd: AcdService, clock: ManualClock
) -> None:
    queue(acd, short_abandon_seconds=5)
    acd.join("quick", "q")
    acd.join("patient", "q")
    clock.advance(4.999)
    assert acd.hangup("quick").result == "short-abandon"
    clock.advance(55)
    assert acd.hangup("patient").result == "abandoned"
    view = acd.queue("q")
    assert view.waiting == 0
    assert view.stats["short_abandoned"] == 1
    assert view.stats["short_abandoned_wait_ms"] == 4999
    assert view.stats["abandoned"] == 1
    assert view.stats["abandoned_wait_ms"] == 59_999
    abandons = [e for e in EventLog(acd.redis).all() if e.type == "abandon"]
    assert [(e.get("call"), e.get("wait_ms"), e.get("short")) for e in abandons] == [
        ("quick", "4999", "1"),
        ("patient", "59999", "0"),
    ]
    # an abandon while ringing frees the agent without pausing them
    agent(acd, "a")
    acd.join("ringing", "q")
    clock.advance(10)
    assert acd.hangup("ringing").result == "abandoned"
    assert acd.agent("a").status == "available"


def test_a_ring_out_puts_the_call_back_at_the_head_of_its_place(
    acd: AcdService, clock: ManualClock
) -> None:
    queue(acd, ring_timeout_seconds=15)
    agent(acd, "sleepy")
    first = acd.join("first", "q")
    acd.join("second", "q")
    assert agents_of(first.offers) == [("first", ("sleepy",))]
    agent(acd, "b", available=False)
    requeued = acd.no_answer("first", "sleepy")
    assert requeued.requeued
    assert requeued.offers == ()
    view = acd.agent("sleepy")
    assert (view.status, view.reason) == ("not-ready", "no-answer")
    assert acd.call("first").position == 1  # ahead of "second", who came later
    offers = acd.set_status("b", "available")
    assert agents_of(offers) == [("first", ("b",))]
    assert acd.call("first").agents == ("b",)


def test_an_offer_nobody_reports_on_expires_by_its_deadline(
    acd: AcdService, clock: ManualClock
) -> None:
    queue(acd, ring_timeout_seconds=15)
    agent(acd, "a")
    (offer,) = acd.join("c1", "q").offers
    agent(acd, "b", available=True)
    clock.advance(15 + 4.999)  # the ring timeout plus most of the grace
    assert acd.tick().expired == ()
    clock.advance(0.001)
    report = acd.tick()
    assert [(e.call_id, e.agents) for e in report.expired] == [("c1", ("a",))]
    assert agents_of(report.offers) == [("c1", ("b",))]
    assert acd.agent("a").status == "not-ready"
    assert offer.deadline_ms == clock()


def test_max_wait_overflows_to_another_queue(acd: AcdService, clock: ManualClock) -> None:
    queue(acd, "spill")
    queue(acd, max_wait_seconds=60, on_max_wait={"action": "overflow", "queue": "spill"})
    acd.put_agent("spiller", AgentConfig(queues=["spill"]))
    acd.set_status("spiller", "available")
    acd.join("c1", "q", priority=2)
    clock.advance(59)
    assert acd.tick().max_waits == ()
    clock.advance(1)
    report = acd.tick()
    assert [(m.call_id, m.action, m.queue) for m in report.max_waits] == [
        ("c1", "overflow", "spill")
    ]
    assert agents_of(report.offers) == [("c1", ("spiller",))]
    assert acd.call("c1").priority == 2


def test_max_wait_voicemail_ends_the_call_for_the_transport(
    acd: AcdService, clock: ManualClock
) -> None:
    queue(acd, max_wait_seconds=30, on_max_wait={"action": "voicemail"})
    acd.join("c1", "q")
    clock.advance(30)
    report = acd.tick()
    assert [(m.call_id, m.action) for m in report.max_waits] == [("c1", "voicemail")]
    call = acd.call("c1")
    assert (call.state, call.result) == ("ended", "voicemail")
    assert acd.queue("q").waiting == 0


def test_callbacks_keep_their_place_and_reach_the_agent_as_a_task(
    acd: AcdService, clock: ManualClock
) -> None:
    queue(acd, max_wait_seconds=60, on_max_wait={"action": "callback"})
    agent(acd, "a", available=False)
    acd.join("asked", "q", caller="+81312345678")
    acd.join("later", "q")
    acd.join("timed-out", "q", caller="+81398765432")
    clock.advance(10)
    assert acd.request_callback("asked", "+81312345678") == 1
    assert acd.hangup("asked").result == "callback-kept"  # the caller's leg ends
    assert acd.call("asked").position == 1
    clock.advance(50)
    report = acd.tick()
    assert sorted((m.call_id, m.action) for m in report.max_waits) == [
        ("later", "callback"),
        ("timed-out", "callback"),
    ]
    offers = acd.set_status("a", "available")
    (offer,) = offers
    assert (offer.call_id, offer.kind, offer.callback_number) == (
        "asked",
        "callback",
        "+81312345678",
    )
    acd.answer("asked", "a")
    (offer,) = acd.hangup("asked").offers
    assert (offer.call_id, offer.kind, offer.callback_number) == ("later", "callback", None)
    assert acd.cancel("later").result == "cancelled"
    assert acd.call("timed-out").kind == "callback"


def test_every_change_is_an_event_with_its_time(acd: AcdService, clock: ManualClock) -> None:
    queue(acd, wrapup_seconds=5)
    agent(acd, "a")
    start = clock()
    acd.join("c1", "q")
    clock.advance(2)
    acd.answer("c1", "a")
    clock.advance(30)
    acd.hangup("c1")
    clock.advance(5)
    acd.tick()
    events = [(e.type, e.at_ms - start) for e in EventLog(acd.redis).all()]
    assert events == [
        ("status", 0),  # a: offline -> available
        ("join", 0),
        ("offer", 0),
        ("status", 0),  # a: offered
        ("answer", 2000),
        ("status", 2000),  # a: on-call
        ("end", 32000),
        ("wrap-up", 32000),
        ("status", 32000),  # a: wrap-up
        ("wrap-up-end", 37000),
        ("status", 37000),  # a: available
    ]
    replay = check_events(EventLog(acd.redis).all())
    assert replay.problems == []
    assert replay.answers == 1
