"""The ACD across a Redis restart: refused clearly while Redis is away, whole afterwards.

A real embedded redis-server with its append-only file is stopped and started again in
the middle of calls (gracefully, then with SIGKILL); the state must come back
consistent (the invariant audit), and work must carry on where it stopped.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator

import pytest
import redis
from pydantic import SecretStr

from acd.invariants import check_state
from acd.schemas import AgentConfig, QueueConfig
from acd.services import AcdService
from kokan.app import create_app
from kokan.config import Settings, TwilioSettings
from kokan.embedded_redis import EmbeddedRedis
from kokan.redis_conn import connect
from tests.conftest import short_tmp_dir
from tests.twilio_signing import SIGNATURE_HEADER, new_sid, twilio_signature

AUTH_TOKEN = "c0ffee" + "0" * 26
ACCOUNT_SID = "AC" + "1" * 32
PUBLIC_URL = "https://kokan.example.com"
GONE_DEADLINE_S = 10.0


@pytest.fixture
def server() -> Iterator[EmbeddedRedis]:
    directory = short_tmp_dir("kokan-acd-")
    embedded = EmbeddedRedis(directory)
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()
        shutil.rmtree(directory, ignore_errors=True)


def floor(acd: AcdService) -> dict[str, object]:
    """Everything a supervisor would see, to compare before and after a restart."""
    return {
        "agents": {a: (v.status, tuple(v.tasks)) for a in acd.agent_ids() for v in [acd.agent(a)]},
        "calls": {c: acd.call(c).to_json() for c in ("CA1", "CA2", "CA3")},
        "queue": acd.queue("billing").waiting,
    }


def busy_floor(client: redis.Redis) -> AcdService:
    acd = AcdService(client)
    acd.configure(
        {"billing": QueueConfig(wrapup_seconds=0)},
        {"aiko": AgentConfig(queues=["billing"]), "ben": AgentConfig(queues=["billing"])},
    )
    for call in ("CA1", "CA2", "CA3"):
        acd.join(call, "billing")
    [first] = acd.set_status("aiko", "available")
    acd.answer(first.call_id, "aiko")
    [second] = acd.set_status("ben", "available")
    assert (first.call_id, second.call_id) == ("CA1", "CA2")
    return acd


def test_a_graceful_restart_keeps_every_call_and_agent(server: EmbeddedRedis) -> None:
    client = connect(server.url)
    acd = busy_floor(client)
    before = floor(acd)

    server.stop()
    with pytest.raises(redis.ConnectionError):
        acd.hangup("CA1")
    server.start()

    assert floor(acd) == before, "the failed hang-up changed nothing; the AOF kept the rest"
    assert check_state(client) == []
    ended = acd.hangup("CA1")
    assert ended.result == "completed"
    assert [(offer.call_id, offer.agents) for offer in ended.offers] == [("CA3", ("aiko",))]
    assert acd.answer("CA2", "ben").wait_ms >= 0
    assert check_state(client) == []
    client.close()


def test_a_hard_kill_leaves_a_consistent_floor_that_carries_on(server: EmbeddedRedis) -> None:
    client = connect(server.url)
    acd = busy_floor(client)
    client.config_set("appendfsync", "always")  # the kill loses nothing
    acd.join("CA4", "billing")
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(GONE_DEADLINE_S)
    server.stop()
    server.start()

    assert check_state(client) == []
    assert acd.call("CA4").state == "waiting"
    assert acd.call("CA2").state == "offered"
    acd.no_answer("CA2", "ben")
    assert acd.call("CA2").position == 1, "back to the head of its place"
    client.close()


def test_webhooks_answer_503_while_redis_is_away_and_work_after(
    server: EmbeddedRedis, settings: Settings
) -> None:
    app = create_app(
        {
            "TESTING": True,
            "KOKAN_SETTINGS": settings.model_copy(
                update={
                    "redis_url": server.url,
                    "public_url": PUBLIC_URL,
                    "twilio": TwilioSettings(
                        account_sid=ACCOUNT_SID, auth_token=SecretStr(AUTH_TOKEN)
                    ),
                }
            ),
        }
    )
    client = connect(server.url)
    acd = busy_floor(client)
    params = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": new_sid("CA"),
        "CallStatus": "completed",
        "From": "+819012345678",
        "To": "+81345678901",
    }
    acd.join(params["CallSid"], "billing")
    path = "/webhooks/twilio/status"
    headers = {SIGNATURE_HEADER: twilio_signature(AUTH_TOKEN, PUBLIC_URL + path, params)}

    server.stop()
    away = app.test_client().post(path, data=params, headers=headers)
    assert away.status_code == 503
    assert away.get_json()["error_id"] == "redis-unavailable"
    assert away.headers["Retry-After"] == "2"
    server.start()

    assert acd.call(params["CallSid"]).state == "waiting", "nothing was half-done"
    back = app.test_client().post(path, data=params, headers=headers)
    assert back.status_code == 204
    assert acd.call(params["CallSid"]).result in ("abandoned", "short-abandon")
    client.close()
    app.extensions["kokan"].redis.close()
    app.extensions["kokan"].database.dispose()
