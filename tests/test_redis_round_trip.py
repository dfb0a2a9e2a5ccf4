"""kokan.redis_round_trip against the real Redis: replies in order, refusals in place, a
broken connection reconnected, one connection per thread and per process."""

from __future__ import annotations

import os
import threading
import time

import pytest
import redis

from kokan.redis_round_trip import RoundTrip


def test_replies_come_back_in_order(redis_client: redis.Redis) -> None:
    replies = RoundTrip(redis_client).send(
        [("SET", "round:a", "1"), ("INCR", "round:a"), ("GET", "round:a"), ("GET", "round:none")]
    )
    assert replies == [b"OK", 2, b"2", None]  # raw replies: no response callbacks


def test_text_goes_as_utf_8_and_numbers_as_their_digits(redis_client: redis.Redis) -> None:
    replies = RoundTrip(redis_client).send(
        [("SET", "round:ja", "お電話ありがとうございます"), ("GET", "round:ja"), ("ECHO", 14400)]
    )
    assert replies == [b"OK", "お電話ありがとうございます".encode(), b"14400"]


def test_an_argument_that_cannot_be_sent_is_refused_before_anything_is_sent(
    redis_client: redis.Redis,
) -> None:
    trip = RoundTrip(redis_client)
    with pytest.raises(redis.DataError):
        trip.send([("SET", "round:sent", "1"), ("SET", "round:none", None)])  # type: ignore[list-item]
    assert redis_client.exists("round:sent") == 0
    assert trip.send([("PING",)]) == [b"PONG"]


def test_a_refused_command_takes_its_place_and_the_connection_stays_in_step(
    redis_client: redis.Redis,
) -> None:
    trip = RoundTrip(redis_client)
    replies = trip.send([("SET", "round:text", "x"), ("INCR", "round:text"), ("GET", "round:text")])
    assert replies[0] == b"OK"
    assert isinstance(replies[1], redis.ResponseError)
    assert replies[2] == b"x"
    # nothing left unread on the kept connection: the next answer is this command's
    assert trip.send([("ECHO", "next")]) == [b"next"]


def test_an_unknown_script_is_a_noscript_error(redis_client: redis.Redis) -> None:
    (reply,) = RoundTrip(redis_client).send([("EVALSHA", "0" * 40, 0)])
    assert isinstance(reply, redis.exceptions.NoScriptError)


def test_a_connection_the_server_closed_is_reconnected(redis_client: redis.Redis) -> None:
    trip = RoundTrip(redis_client)
    (first_id,) = trip.send([("CLIENT", "ID")])
    assert redis_client.client_kill_filter(_id=str(first_id)) == 1
    (second_id,) = trip.send([("CLIENT", "ID")])
    assert isinstance(second_id, int)
    assert second_id != first_id
    assert trip.send([("PING",)]) == [b"PONG"]


def test_redis_away_is_a_connection_error() -> None:
    # nothing listens on port 1 of the loopback
    away = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    with pytest.raises(redis.ConnectionError):
        RoundTrip(away).send([("PING",)])


def test_each_thread_keeps_its_own_connection(redis_client: redis.Redis) -> None:
    trip = RoundTrip(redis_client)
    seen: dict[str, object] = {}
    (seen["main"],) = trip.send([("CLIENT", "ID")])

    def other() -> None:
        (seen["other"],) = trip.send([("CLIENT", "ID")])

    worker = threading.Thread(target=other)
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert seen["other"] != seen["main"]
    assert trip.send([("CLIENT", "ID")]) == [seen["main"]]  # kept, not taken again


def test_a_forked_child_takes_its_own_connection(redis_client: redis.Redis) -> None:
    trip = RoundTrip(redis_client)
    (parent_id,) = trip.send([("CLIENT", "ID")])
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            (child_id,) = trip.send([("CLIENT", "ID")])
            os.write(writer, str(child_id).encode())
        finally:
            os._exit(0)
    os.close(writer)
    child_id = int(os.read(reader, 64))
    os.close(reader)
    os.waitpid(child, 0)
    assert child_id != parent_id
    assert trip.send([("CLIENT", "ID")]) == [parent_id]


def test_a_thread_that_ends_gives_its_connection_back(redis_client: redis.Redis) -> None:
    trip = RoundTrip(redis_client)
    pool = redis_client.connection_pool
    in_use_before = len(pool._in_use_connections)
    seen: dict[str, object] = {}

    def short_lived() -> None:
        seen["reply"] = trip.send([("PING",)])
        seen["in use"] = len(pool._in_use_connections)

    worker = threading.Thread(target=short_lived)
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert seen == {"reply": [b"PONG"], "in use": in_use_before + 1}
    deadline = time.monotonic() + 5
    while len(pool._in_use_connections) != in_use_before:
        assert time.monotonic() < deadline, "the ended thread's connection was not given back"
        time.sleep(0.01)
