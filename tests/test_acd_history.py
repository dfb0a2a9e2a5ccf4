"""The ACD's history projector: the real ACD on a real Redis, its stream copied into SQL,
checked row by row; replays and any order of delivery change nothing."""

from __future__ import annotations

import datetime as dt
import random
import threading
from typing import Any

import pytest
import redis
from sqlalchemy import select

from acd.clock import ManualClock
from acd.events import EventLog
from acd.history import GROUP, HistoryProjector, apply, event_key
from acd.models import AcdAgentState, AcdCall
from acd.schemas import AgentConfig, QueueConfig
from acd.services import AcdService
from kokan.db import Database

CALLER = "+81312345678"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def acd(redis_client: redis.Redis, clock: ManualClock) -> AcdService:
    return AcdService(redis_client, clock=clock, rng=random.Random(7))


def at(clock_start_ms: int, seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock_start_ms / 1000 + seconds, dt.UTC)


def run_a_small_day(acd: AcdService, clock: ManualClock) -> int:
    """One call answered and wrapped up, one abandon, one short abandon. Returns t0 (ms)."""
    t0 = clock.now_ms
    acd.put_queue("q", QueueConfig(wrapup_seconds=10, short_abandon_seconds=5))
    acd.put_agent("a1", AgentConfig(queues=["q"]))
    acd.set_status("a1", "available")
    clock.advance(1)  # t=1
    (offer,) = acd.join("CA1", "q", caller=CALLER).offers
    assert offer.agents == ("a1",)
    clock.advance(3)  # t=4
    acd.answer("CA1", "a1")
    clock.advance(60)  # t=64: 60 s of talk, then 10 s of wrap-up
    assert acd.hangup("CA1").result == "completed"
    acd.join("CA2", "q", caller="+81300000002")  # a1 is wrapping up: CA2 waits
    clock.advance(2)  # t=66
    acd.join("CA3", "q")
    clock.advance(2)  # t=68
    assert acd.hangup("CA3").result == "short-abandon"  # waited 2 s < 5 s
    clock.advance(4)  # t=72
    assert acd.hangup("CA2").result == "abandoned"  # waited 8 s
    clock.advance(2)  # t=74: the wrap-up runs out
    assert acd.tick().wrapped_up == ("a1",)
    return t0


def call_rows(database: Database) -> list[dict[str, Any]]:
    with database.unit_of_work() as session:
        calls = session.scalars(select(AcdCall).order_by(AcdCall.call_id)).all()
        return [
            {k: v for k, v in vars(call).items() if not k.startswith("_") and k != "id"}
            for call in calls
        ]


def state_rows(database: Database) -> list[tuple[str, str, str, dt.datetime, dt.datetime | None]]:
    with database.unit_of_work() as session:
        states = session.scalars(select(AcdAgentState).order_by(AcdAgentState.event_key)).all()
        return [(s.agent_id, s.status, s.reason, s.started_at, s.ended_at) for s in states]


def test_calls_and_agent_states_are_copied_out(
    acd: AcdService, clock: ManualClock, redis_client: redis.Redis, database: Database
) -> None:
    t0 = run_a_small_day(acd, clock)
    projector = HistoryProjector(redis_client, database)
    assert projector.drain() == EventLog(redis_client).length()

    calls = {row["call_id"]: row for row in call_rows(database)}
    assert set(calls) == {"CA1", "CA2", "CA3"}
    answered = calls["CA1"]
    assert answered["queue"] == answered["entry_queue"] == "q"
    assert answered["channel"] == "voice"
    assert answered["kind"] == "call"
    assert answered["customer"] == CALLER
    assert answered["joined_at"] == at(t0, 1)
    assert answered["first_offered_at"] == at(t0, 1)
    assert answered["answered_at"] == at(t0, 4)
    assert answered["agent_id"] == "a1"
    assert answered["ended_at"] == at(t0, 64)
    assert answered["abandoned_at"] is None
    assert answered["result"] == "completed"
    assert answered["wait_seconds"] == 3.0
    assert answered["talk_seconds"] == 60.0
    assert answered["hold_seconds"] == 0.0
    assert answered["wrapup_started_at"] == at(t0, 64)
    assert answered["wrapup_ended_at"] == at(t0, 74)
    assert answered["wrapup_seconds"] == 10.0

    abandoned = calls["CA2"]
    assert abandoned["result"] == "abandoned"
    assert abandoned["joined_at"] == at(t0, 64)
    assert abandoned["abandoned_at"] == abandoned["ended_at"] == at(t0, 72)
    assert abandoned["wait_seconds"] == 8.0
    assert abandoned["answered_at"] is None
    assert abandoned["agent_id"] is None
    assert abandoned["first_offered_at"] is None
    assert abandoned["customer"] == "+81300000002"

    short = calls["CA3"]
    assert short["result"] == "short-abandon"
    assert short["wait_seconds"] == 2.0
    assert short["customer"] is None  # joined without a caller number

    # every status a1 went through (a new agent starts offline, unannounced), each
    # ending where the next begins
    assert state_rows(database) == [
        ("a1", "available", "", at(t0, 0), at(t0, 1)),
        ("a1", "offered", "", at(t0, 1), at(t0, 4)),
        ("a1", "on-call", "", at(t0, 4), at(t0, 64)),
        ("a1", "wrap-up", "", at(t0, 64), at(t0, 74)),
        ("a1", "available", "", at(t0, 74), None),
    ]


def test_replays_and_any_order_change_nothing(
    acd: AcdService, clock: ManualClock, redis_client: redis.Redis, database: Database
) -> None:
    run_a_small_day(acd, clock)
    HistoryProjector(redis_client, database).drain()
    calls, states = call_rows(database), state_rows(database)
    events = list(EventLog(redis_client).all())
    assert len(events) > 10

    # the whole stream again, in one batch and then one event per batch
    with database.engine.begin() as connection:
        apply(connection, events)
    for event in events:
        with database.engine.begin() as connection:
            apply(connection, [event])
    assert call_rows(database) == calls
    assert state_rows(database) == states

    # a fresh history built backwards, one event at a time, comes out the same
    with database.unit_of_work() as session:
        session.query(AcdCall).delete()
        session.query(AcdAgentState).delete()
    assert call_rows(database) == []
    for event in reversed(events):
        with database.engine.begin() as connection:
            apply(connection, [event])
    assert call_rows(database) == calls
    assert state_rows(database) == states

    # a new consumer group reads the stream from its start: still nothing changes
    redis_client.xgroup_destroy(EventLog(redis_client).key, GROUP)
    assert HistoryProjector(redis_client, database).drain() == len(events)
    assert call_rows(database) == calls
    assert state_rows(database) == states


def test_a_callback_and_an_overflow_land_in_the_queue_that_served_them(
    acd: AcdService, clock: ManualClock, redis_client: redis.Redis, database: Database
) -> None:
    t0 = clock.now_ms
    acd.put_queue("spill", QueueConfig(wrapup_seconds=0))
    acd.put_queue(
        "front",
        QueueConfig.model_validate(
            {
                "wrapup_seconds": 0,
                "max_wait_seconds": 30,
                "on_max_wait": {"action": "overflow", "queue": "spill"},
            }
        ),
    )
    acd.put_agent("b", AgentConfig(queues=["spill"]))
    acd.join("CB1", "front", caller=CALLER, channel="chat")
    acd.join("CB2", "front")
    acd.request_callback("CB2", "+81399999999")  # a callback no longer has a max wait
    clock.advance(30)  # CB1 reaches front's max wait: overflow to spill
    waits = acd.tick().max_waits
    assert [(w.call_id, w.action, w.queue) for w in waits] == [("CB1", "overflow", "spill")]
    (offer, *_rest) = acd.set_status("b", "available")
    assert offer.call_id == "CB1"
    clock.advance(5)
    acd.answer("CB1", "b")
    clock.advance(20)
    acd.hangup("CB1")

    HistoryProjector(redis_client, database).drain()
    calls = {row["call_id"]: row for row in call_rows(database)}
    served = calls["CB1"]
    assert (served["entry_queue"], served["queue"]) == ("front", "spill")
    assert served["channel"] == "chat"
    assert served["overflowed_at"] == at(t0, 30)
    assert served["wait_seconds"] == 35.0
    assert served["talk_seconds"] == 20.0
    assert served["wrapup_seconds"] == 0.0
    waiting = calls["CB2"]
    assert (waiting["entry_queue"], waiting["queue"]) == ("front", "front")
    assert waiting["overflowed_at"] is None
    assert waiting["kind"] == "callback"
    assert waiting["customer"] == "+81399999999"  # no caller given: the callback number
    assert waiting["result"] is None  # still waiting for an agent


def test_event_keys_sort_as_the_stream_does() -> None:
    ids = ["999-10", "1000-2", "1000-10", "1733359000000-0"]
    assert sorted(ids, key=event_key) == ids
    assert sorted(event_key(i) for i in ids) == [event_key(i) for i in ids]


def test_events_a_dead_projector_held_are_taken_over(
    acd: AcdService, clock: ManualClock, redis_client: redis.Redis, database: Database
) -> None:
    run_a_small_day(acd, clock)
    stream = EventLog(redis_client).key
    dead = HistoryProjector(redis_client, database, consumer="dead")
    dead._ensure_group()
    # the dead one read everything and never acknowledged it
    redis_client.xreadgroup(GROUP, "dead", {stream: ">"})
    assert redis_client.xpending(stream, GROUP)["pending"] == EventLog(redis_client).length()
    assert call_rows(database) == []

    heir = HistoryProjector(redis_client, database, consumer="heir", reclaim_idle_ms=0)
    assert heir.drain() == EventLog(redis_client).length()
    assert redis_client.xpending(stream, GROUP)["pending"] == 0
    assert {row["call_id"] for row in call_rows(database)} == {"CA1", "CA2", "CA3"}
    assert len(state_rows(database)) == 5


def test_projectors_applying_batches_at_once_agree_with_one_in_order(
    acd: AcdService, clock: ManualClock, redis_client: redis.Redis, database: Database
) -> None:
    run_a_small_day(acd, clock)
    events = list(EventLog(redis_client).all())
    HistoryProjector(redis_client, database).drain()
    calls, states = call_rows(database), state_rows(database)
    with database.unit_of_work() as session:
        session.query(AcdCall).delete()
        session.query(AcdAgentState).delete()

    # four workers take one-event batches newest first, all at once
    pending = list(events)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                if not pending:
                    return
                event = pending.pop()
            try:
                with database.engine.begin() as connection:
                    apply(connection, [event])
            except BaseException as exc:  # reported below, with the others
                failures.append(exc)
                return

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert call_rows(database) == calls
    assert state_rows(database) == states
