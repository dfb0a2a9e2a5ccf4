"""Call-detail records projected from the event stream: idempotent, order-free, nothing lost."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import redis
from sqlalchemy import select

from kokan.db import Database
from tests.conftest import run_kokan
from tickets import cdr
from tickets.models import Call

T0 = dt.datetime(2026, 11, 24, 1, 0, tzinfo=dt.UTC)
CALL = cdr.CallIdentity("twilio", "CA" + "1" * 32, "+819012345678", "+81312345678")


def rows(database: Database) -> list[Call]:
    with database.sessions() as session:
        found = list(session.scalars(select(Call).order_by(Call.id)))
        session.expunge_all()
        return found


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_a_call_is_recorded_with_its_queue_and_outcome(
    redis_client: redis.Redis, database: Database
) -> None:
    cdr.append(redis_client, "arrived", CALL, at(0))
    cdr.append(redis_client, "queued", CALL, at(20), queue="billing")
    cdr.append(redis_client, "answered", CALL, at(45))
    cdr.append(redis_client, "outcome", CALL, at(300), outcome="answered")
    cdr.append(redis_client, "ended", CALL, at(300))
    projector = cdr.CdrProjector(redis_client, database, consumer="a")
    assert projector.drain() == 5
    [row] = rows(database)
    assert (row.from_number, row.to_number, row.queue, row.outcome) == (
        CALL.from_number,
        CALL.to_number,
        "billing",
        "answered",
    )
    assert (row.arrived_at, row.queued_at, row.answered_at, row.ended_at) == (
        at(0),
        at(20),
        at(45),
        at(300),
    )
    assert len(row.call_id) == 32


def test_duplicates_and_any_order_give_the_same_row(
    redis_client: redis.Redis, database: Database
) -> None:
    # the outcome (from a path that did not know the parties) lands before the arrival
    anonymous = cdr.CallIdentity(CALL.provider, CALL.provider_call_id, "", "")
    cdr.append(redis_client, "outcome", anonymous, at(90), outcome="voicemail")
    projector = cdr.CdrProjector(redis_client, database, consumer="a")
    projector.drain()
    cdr.append(redis_client, "arrived", CALL, at(0))
    cdr.append(redis_client, "arrived", CALL, at(0))
    cdr.append(redis_client, "outcome", CALL, at(95), outcome="abandoned")
    projector.drain()
    [row] = rows(database)
    assert row.from_number == CALL.from_number
    assert row.arrived_at == at(0)
    assert row.outcome == "voicemail", "the first outcome stays; a later duplicate changes nothing"


def test_events_a_dead_projector_read_are_taken_over(
    redis_client: redis.Redis, database: Database
) -> None:
    cdr.append(redis_client, "arrived", CALL, at(0))
    dead = cdr.CdrProjector(redis_client, database, consumer="dead")
    dead._ensure_group()
    # the dead projector read the event and never acknowledged it
    read = cast(list[Any], redis_client.xreadgroup(cdr.GROUP, "dead", {cdr.STREAM: ">"}, count=10))
    assert read
    assert len(read[0][1]) == 1
    survivor = cdr.CdrProjector(redis_client, database, consumer="alive", reclaim_idle_ms=0)
    assert survivor.drain() == 1
    assert len(rows(database)) == 1
    assert redis_client.xpending(cdr.STREAM, cdr.GROUP)["pending"] == 0


def test_kokan_worker_projects_the_stream(
    redis_client: redis.Redis, redis_url: str, migrated_database_url: str, database: Database
) -> None:
    cdr.append(redis_client, "arrived", CALL, at(0))
    result = run_kokan(
        "worker", "--burst", env={"REDIS_URL": redis_url, "DATABASE_URL": migrated_database_url}
    )
    assert result.returncode == 0, result.stderr
    [row] = rows(database)
    assert row.provider_call_id == CALL.provider_call_id
