"""Agent statuses and their timed changes, impossible orders of events, bad input:
clear errors, and a consistent state afterwards."""

from __future__ import annotations

import random

import pytest
import redis
from pydantic import ValidationError

from acd import errors
from acd.clock import ManualClock
from acd.events import EventLog
from acd.invariants import check_events, check_state
from acd.schemas import AgentConfig, QueueConfig
from acd.services import AcdService
from kokan.errors import KokanError


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def acd(redis_client: redis.Redis, clock: ManualClock) -> AcdService:
    service = AcdService(redis_client, clock=clock, rng=random.Random(3))
    service.put_queue("q", QueueConfig(wrapup_seconds=20, ring_timeout_seconds=15))
    service.put_agent("a", AgentConfig(queues=["q"], skills={"network": 3}))
    return service


def connect(acd: AcdService, call_id: str = "c1", agent_id: str = "a") -> None:
    (offer,) = acd.join(call_id, "q").offers
    assert offer.agents == (agent_id,)
    acd.answer(call_id, agent_id)


def test_an_agent_moves_through_offered_on_call_wrap_up_available_by_itself(
    acd: AcdService, clock: ManualClock
) -> None:
    assert acd.agent("a").status == "offline"
    acd.set_status("a", "available")
    acd.join("c1", "q")
    assert acd.agent("a").status == "offered"
    acd.answer("c1", "a")
    assert acd.agent("a").status == "on-call"
    clock.advance(90)
    acd.hangup("c1")
    view = acd.agent("a")
    assert (view.status, view.wrap_until_ms) == ("wrap-up", clock() + 20_000)
    assert acd.join("c2", "q").offers == ()  # not offered during wrap-up
    clock.advance(19.999)
    assert acd.tick().wrapped_up == ()
    clock.advance(0.001)
    report = acd.tick()
    assert report.wrapped_up == ("a",)
    assert [(o.call_id, o.agents) for o in report.offers] == [("c2", ("a",))]
    assert acd.agent("a").idle_since_ms == clock()  # idle from when the wrap-up ended


def test_available_ends_a_wrap_up_early(acd: AcdService, clock: ManualClock) -> None:
    acd.set_status("a", "available")
    connect(acd)
    acd.hangup("c1")
    acd.join("c2", "q")
    clock.advance(3)
    offers = acd.set_status("a", "available")
    assert [o.call_id for o in offers] == ["c2"]
    assert acd.redis.zcard(acd.keys.wrapups) == 0
    assert check_state(acd.redis) == []


def test_a_ring_out_pauses_the_agent_until_they_come_back(
    acd: AcdService, clock: ManualClock
) -> None:
    acd.set_status("a", "available")
    acd.join("c1", "q")
    acd.no_answer("c1", "a")
    view = acd.agent("a")
    assert (view.status, view.presence, view.reason) == ("not-ready", "not-ready", "no-answer")
    clock.advance(600)
    assert acd.tick().offers == ()  # not-ready stays until the agent acts
    offers = acd.set_status("a", "available")
    assert [(o.call_id, o.attempt) for o in offers] == [("c1", 2)]


def test_without_autopause_a_ring_out_leaves_the_agent_available(
    acd: AcdService, clock: ManualClock
) -> None:
    acd.put_queue("q", QueueConfig(autopause=False, wrapup_seconds=0))
    acd.set_status("a", "available")
    acd.join("c1", "q")
    requeued = acd.no_answer("c1", "a")
    assert acd.agent("a").status == "offered"  # and offered the same call again at once
    assert [o.attempt for o in requeued.offers] == [2]


def test_breaks_need_a_reason_and_take_effect_after_the_call(
    acd: AcdService, clock: ManualClock
) -> None:
    with pytest.raises(errors.AcdInvalidInput, match="reason") as caught:
        acd.set_status("a", "break")
    assert caught.value.error_id == "acd-invalid-input"
    assert caught.value.status == 400
    acd.set_status("a", "available")
    connect(acd)
    acd.set_status("a", "break", "lunch")
    assert (acd.agent("a").status, acd.agent("a").presence) == ("on-call", "break")
    acd.hangup("c1")
    clock.advance(20)
    acd.tick()
    view = acd.agent("a")
    assert (view.status, view.reason) == ("break", "lunch")
    assert acd.join("c2", "q").offers == ()


def test_logging_off_with_a_call_is_refused(acd: AcdService, clock: ManualClock) -> None:
    acd.set_status("a", "available")
    connect(acd)
    with pytest.raises(errors.AgentBusy) as caught:
        acd.set_status("a", "offline")
    assert (caught.value.error_id, caught.value.status) == ("acd-agent-busy", 409)
    with pytest.raises(errors.AgentBusy):
        acd.remove_agent("a")
    acd.hangup("c1")
    acd.set_status("a", "offline")
    assert acd.agent("a").status == "offline"
    acd.remove_agent("a")
    with pytest.raises(errors.UnknownAgent):
        acd.agent("a")
    assert check_state(acd.redis) == []


def test_impossible_orders_are_refused_and_change_nothing(
    acd: AcdService, clock: ManualClock
) -> None:
    acd.put_agent("b", AgentConfig(queues=["q"]))
    acd.set_status("a", "available")
    acd.join("c1", "q")
    with pytest.raises(errors.NotOffered):
        acd.answer("c1", "b")  # offered to a, not b
    acd.answer("c1", "a")
    assert acd.answer("c1", "a").duplicate  # a repeated webhook: nothing changes
    with pytest.raises(errors.AlreadyAnswered):
        acd.answer("c1", "b")
    with pytest.raises(errors.NotOffered):
        acd.no_answer("c1", "a")  # answered already
    with pytest.raises(errors.NotWaiting):
        acd.request_callback("c1", "+81312345678")
    acd.hangup("c1")
    with pytest.raises(errors.CallEnded) as ended:
        acd.hangup("c1")  # hangup twice
    assert (ended.value.error_id, ended.value.status) == ("acd-call-ended", 409)
    with pytest.raises(errors.CallEnded):
        acd.answer("c1", "a")  # answer after hangup
    with pytest.raises(errors.CallEnded):
        acd.join("c1", "q")  # the same call id once more
    acd.join("c2", "q", route=False)
    with pytest.raises(errors.CallExists):
        acd.join("c2", "q")
    with pytest.raises(errors.NotOffered):
        acd.answer("c2", "a")  # still waiting, offered to nobody
    assert acd.call("c2").state == "waiting"
    assert check_state(acd.redis) == []
    assert check_events(EventLog(acd.redis).all(), require_all_ended=False).problems == []


@pytest.mark.parametrize(
    ("call", "error", "error_id"),
    [
        (lambda s: s.join("c1", "nowhere"), errors.UnknownQueue, "acd-unknown-queue"),
        (lambda s: s.set_status("ghost", "available"), errors.UnknownAgent, "acd-unknown-agent"),
        (lambda s: s.answer("never", "a"), errors.UnknownCall, "acd-unknown-call"),
        (lambda s: s.hangup("never"), errors.UnknownCall, "acd-unknown-call"),
        (lambda s: s.route(["nowhere"]), errors.UnknownQueue, "acd-unknown-queue"),
        (lambda s: s.queue("nowhere"), errors.UnknownQueue, "acd-unknown-queue"),
        (
            lambda s: s.put_agent("b", AgentConfig(queues=["nowhere"])),
            errors.UnknownQueue,
            "acd-unknown-queue",
        ),
        (lambda s: s.join("c1", "q", skills={"network": 6}), errors.AcdInvalidInput, None),
        (lambda s: s.join("c1", "q", skills={"network": 0}), errors.AcdInvalidInput, None),
        (lambda s: s.join("c1", "q", priority=10_001), errors.AcdInvalidInput, None),
        (lambda s: s.join("c1", "q", channel="fax"), errors.AcdInvalidInput, None),
        (lambda s: s.join("bad id", "q"), errors.AcdInvalidInput, None),
        (lambda s: s.join("c1", "q:x"), errors.AcdInvalidInput, None),
        (lambda s: s.answer("c1", "a,b"), errors.AcdInvalidInput, None),
        (lambda s: s.set_status("a", "on-call"), errors.AcdInvalidInput, None),
        (lambda s: s.join_outcome("c1", {"kind": "hangup"}), errors.AcdInvalidInput, None),
    ],
)
def test_bad_input_gets_a_clear_error(
    acd: AcdService, call: object, error: type[Exception], error_id: str | None
) -> None:
    before = sorted(acd.redis.keys("*"))
    with pytest.raises(error) as caught:
        call(acd)  # type: ignore[operator]
    exc = caught.value
    assert isinstance(exc, KokanError)
    assert exc.to_json()["error_id"] == (error_id or "acd-invalid-input")
    assert exc.status in (400, 404)
    assert exc.message
    assert sorted(acd.redis.keys("*")) == before


@pytest.mark.parametrize("level", [0, 6, -1, 2.5, "3", True])
def test_proficiency_outside_1_to_5_is_refused(level: object) -> None:
    with pytest.raises(ValidationError, match="skills"):
        AgentConfig.model_validate({"skills": {"network": level}})
    with pytest.raises(ValidationError, match="skills"):
        QueueConfig.model_validate({"skills": {"network": level}})


def test_queue_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValidationError, match="ascending"):
        QueueConfig.model_validate(
            {
                "relax": [
                    {"after_seconds": 60, "any_agent": True},
                    {"after_seconds": 30, "min_proficiency": 2},
                ]
            }
        )
    with pytest.raises(ValidationError, match="either"):
        QueueConfig.model_validate({"relax": [{"after_seconds": 30}]})
    with pytest.raises(ValidationError, match="queue"):
        QueueConfig.model_validate({"on_max_wait": {"action": "overflow"}})
    with pytest.raises(ValidationError, match="strategy"):
        QueueConfig.model_validate({"strategy": "shortest_hair"})
    with pytest.raises(ValidationError, match="voice"):
        AgentConfig.model_validate({"capacity": {"voice": 2}})


def test_today_starts_at_the_local_midnight(redis_client: redis.Redis) -> None:
    clock = ManualClock(1_767_193_200_000 - 60_000)  # 2025-12-31T23:59 in Tokyo (14:59Z)
    tokyo = AcdService(redis_client, clock=clock, rng=random.Random(1), day_offset_minutes=540)
    tokyo.put_queue("q", QueueConfig(wrapup_seconds=0))
    tokyo.put_agent("a", AgentConfig(queues=["q"]))
    tokyo.set_status("a", "available")
    tokyo.join("c1", "q")
    tokyo.answer("c1", "a")
    tokyo.hangup("c1")
    assert tokyo.agent("a").calls_today == 1
    clock.advance(60)  # midnight in Tokyo, 15:00 in UTC
    assert tokyo.agent("a").calls_today == 0


def test_a_redis_restart_loses_no_scripts(acd: AcdService, clock: ManualClock) -> None:
    """A restarted (or failed-over) Redis has no scripts loaded; the service loads them
    again by itself on NOSCRIPT."""
    acd.set_status("a", "available")
    acd.redis.script_flush()
    (offer,) = acd.join("c1", "q").offers
    assert offer.agents == ("a",)
