"""The floor's live updates: the ACD's event stream as Server-Sent Events, read through the
real app with a real Redis (the browser test of the floor is in test_web_ui.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from werkzeug.test import TestResponse

from acd.schemas import AgentConfig, QueueConfig
from acd.services import AcdService
from admin.models import Role
from admin.services import create_user, issue_token
from kokan.app import create_app
from kokan.config import Settings
from kokan.db import Database

PAGE_ORIGIN = "http://127.0.0.1:8080"
"""The settings fixture's host and port: where the pages come from."""
LIVE_BASE = "http://127.0.0.1:8081"
"""Where the test requests go, as a browser reaches `kokan live` on the live port."""


@pytest.fixture
def live_app(settings: Settings, database: Database, redis_client: redis.Redis) -> Flask:
    return create_app({"TESTING": True, "KOKAN_SETTINGS": settings})


def token(database: Database, name: str, role: Role) -> str:
    with database.unit_of_work() as session:
        return issue_token(session, create_user(session, name, role.value).user)


def frames(response: TestResponse, count: int) -> Iterator[str]:
    """The first `count` SSE frames of a stream that never ends by itself."""
    buffer = ""
    chunks = iter(response.response)
    try:
        while count:
            chunk = next(chunks)
            buffer += chunk.decode() if isinstance(chunk, bytes) else str(chunk)
            while "\n\n" in buffer and count:
                frame, buffer = buffer.split("\n\n", 1)
                count -= 1
                yield frame
    finally:
        response.close()


def acd_frames(response: TestResponse, count: int) -> list[dict[str, object]]:
    found = []
    for frame in frames(response, count + 1):
        lines = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if lines.get("event") == "acd":
            found.append({"id": lines["id"], **json.loads(lines["data"])})
    return found


def test_events_arrive_as_they_happen_and_a_reconnect_resumes_after_the_last_seen(
    live_app: Flask, database: Database, redis_client: redis.Redis
) -> None:
    acd = AcdService(redis_client)
    acd.put_queue("support", QueueConfig())
    acd.put_agent("aiko", AgentConfig(queues=["support"]))
    bearer = {"Authorization": f"Bearer {token(database, 'sato', Role.SUPERVISOR)}"}
    client = live_app.test_client()
    stream = client.get("/api/acd/events", headers=bearer, buffered=False)
    assert stream.status_code == 200
    assert stream.mimetype == "text/event-stream"
    assert stream.headers["Cache-Control"] == "no-cache"
    acd.join("CA1", "support", caller="+819012345678")  # after the stream opened
    (joined,) = acd_frames(stream, 1)
    assert (joined["type"], joined["call"], joined["queue"]) == ("join", "CA1", "support")

    acd.set_status("aiko", "break", "lunch")
    acd.join("CA2", "support")
    resumed = client.get(
        "/api/acd/events", headers={**bearer, "Last-Event-ID": str(joined["id"])}, buffered=False
    )
    later = acd_frames(resumed, 2)
    assert [event["type"] for event in later] == ["status", "join"]
    assert later[1]["call"] == "CA2"


def test_only_supervisors_and_admins_may_watch_and_ids_are_checked(
    live_app: Flask, database: Database
) -> None:
    client = live_app.test_client()
    agent = {"Authorization": f"Bearer {token(database, 'aiko', Role.AGENT)}"}
    assert client.get("/api/acd/events", headers=agent).status_code == 403
    assert client.get("/api/acd/events").status_code == 401
    admin = {"Authorization": f"Bearer {token(database, 'root', Role.ADMIN)}"}
    for bad in ("yesterday", "1-2-3", "9" * 30 + "-0", "<script>"):
        answer = client.get("/api/acd/events", headers={**admin, "Last-Event-ID": bad})
        assert answer.status_code == 400, bad
        assert answer.get_json()["error_id"] == "invalid-input"


def test_only_the_pages_own_origin_may_read_the_stream_cross_origin(
    live_app: Flask, database: Database
) -> None:
    admin = {"Authorization": f"Bearer {token(database, 'root', Role.ADMIN)}"}
    client = live_app.test_client()
    mine = client.get(
        "/api/acd/events",
        headers={**admin, "Origin": PAGE_ORIGIN},
        base_url=LIVE_BASE,
        buffered=False,
    )
    assert mine.headers["Access-Control-Allow-Origin"] == PAGE_ORIGIN
    assert mine.headers["Access-Control-Allow-Credentials"] == "true"
    mine.close()
    theirs = client.get(
        "/api/acd/events",
        headers={**admin, "Origin": "https://evil.example"},
        base_url=LIVE_BASE,
        buffered=False,
    )
    assert "Access-Control-Allow-Origin" not in theirs.headers
    theirs.close()


def test_an_agents_own_stream_carries_only_their_events_and_they_see_only_their_calls(
    live_app: Flask, database: Database, redis_client: redis.Redis
) -> None:
    acd = AcdService(redis_client)
    acd.put_queue("support", QueueConfig())
    for agent in ("aiko", "ben"):
        acd.put_agent(agent, AgentConfig(queues=["support"]))
        acd.set_status(agent, "offline")
    aiko = {"Authorization": f"Bearer {token(database, 'aiko', Role.AGENT)}"}
    client = live_app.test_client()
    stream = client.get("/api/acd/me/events", headers=aiko, buffered=False)
    acd.join("CA-ben", "support", caller="+819011112222")
    (offer,) = acd.set_status("ben", "available")  # ben's offer: not on aiko's stream
    acd.join("CA-aiko", "support", caller="+819033334444")
    (mine,) = acd.set_status("aiko", "available")
    events = acd_frames(stream, 3)
    assert ("offer", "CA-aiko") in [(e["type"], e.get("call")) for e in events]
    assert all("aiko" in str(e["agent"]).split(",") for e in events), events
    assert all(e.get("call") != "CA-ben" for e in events), events
    assert offer.call_id == "CA-ben"
    assert mine.call_id == "CA-aiko"
    own = client.get("/api/acd/calls/CA-aiko", headers=aiko)
    assert own.status_code == 200
    assert own.get_json()["caller"] == "+819033334444"
    other = client.get("/api/acd/calls/CA-ben", headers=aiko)
    assert other.status_code == 403
    assert other.get_json()["error_id"] == "acd-not-your-call"
    nobody = {"Authorization": f"Bearer {token(database, 'kana', Role.AGENT)}"}
    assert client.get("/api/acd/me/events", headers=nobody).status_code == 404
