"""The ACD's JSON API against a real Redis and a real database: roles, validation, links
between users and agents, and what the floor sees."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr
from sqlalchemy import select

from acd import runtime as acd_runtime
from acd.keys import Keys
from acd.models import CallWrapup
from acd.queue_settings import StoredQueues
from acd.services import AcdService
from admin.services import create_user, issue_token
from kokan.app import create_app
from kokan.config import ConfigError, QueueSettings, Settings, load
from kokan.db import Database

SKILLS: dict[str, str | None] = {"billing": "invoices", "japanese": "日本語"}


@pytest.fixture
def acd_settings(tmp_path: Path, migrated_database_url: str, redis_url: str) -> Settings:
    """A configuration with a skill catalog, so skill names are checked as config.yaml's are."""
    return Settings(
        data_dir=tmp_path / "var",
        database_url=migrated_database_url,
        redis_url=redis_url,
        secret_key=SecretStr("test-secret-key-" + uuid.uuid4().hex),
        skills=SKILLS,
    )


@pytest.fixture
def acd_app(acd_settings: Settings, database: Database, redis_client: redis.Redis) -> Flask:
    return create_app({"TESTING": True, "KOKAN_SETTINGS": acd_settings})


@pytest.fixture
def api(acd_app: Flask) -> FlaskClient:
    return acd_app.test_client()


ROLES = {"root": "admin", "sue": "supervisor", "aiko": "agent", "ben": "agent", "carol": "agent"}
"""The people of these tests: an admin, a supervisor and three agent users."""


class Tokens:
    """Authorization headers per user, each user made (with a real token) when first asked
    for: a password hash costs tens of milliseconds, most tests need one or two users."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.made: dict[str, dict[str, str]] = {}

    def __getitem__(self, name: str) -> dict[str, str]:
        if name not in self.made:
            with self.database.unit_of_work() as session:
                token = issue_token(session, create_user(session, name, ROLES[name]).user)
            self.made[name] = {"Authorization": f"Bearer {token}"}
        return self.made[name]


@pytest.fixture
def tokens(database: Database) -> Tokens:
    return Tokens(database)


def service_of(app: Flask) -> AcdService:
    with app.app_context():
        return acd_runtime.acd_service()


def seed(api: FlaskClient, admin: dict[str, str]) -> None:
    """Two queues and two agents, made through the API as an admin would."""
    queues: dict[str, dict[str, Any]] = {
        "billing": {"skills": {"billing": 3}, "priority": 10, "description": "請求"},
        "sales": {},
    }
    agents: dict[str, dict[str, Any]] = {
        "aiko": {"skills": {"billing": 4, "japanese": 5}, "queues": ["billing", "sales"]},
        "ben": {"skills": {"billing": 3}, "queues": ["billing"]},
    }
    for name, body in queues.items():
        answer = api.put(f"/api/acd/queues/{name}", json=body, headers=admin)
        assert answer.status_code == 200, answer.get_json()
    for agent_id, body in agents.items():
        answer = api.put(f"/api/acd/agents/{agent_id}", json=body, headers=admin)
        assert answer.status_code == 200, answer.get_json()


# ---- authentication and roles ----


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/acd/queues"),
        ("get", "/api/acd/queues/billing"),
        ("put", "/api/acd/queues/billing"),
        ("get", "/api/acd/agents"),
        ("get", "/api/acd/agents/aiko"),
        ("put", "/api/acd/agents/aiko"),
        ("delete", "/api/acd/agents/aiko"),
        ("post", "/api/acd/agents/aiko/status"),
        ("get", "/api/acd/me"),
        ("post", "/api/acd/me/status"),
        ("get", "/api/acd/calls/CA1"),
    ],
)
def test_every_route_needs_a_token(api: FlaskClient, method: str, path: str) -> None:
    answer = getattr(api, method)(path, json={"status": "available"})
    assert answer.status_code == 401
    assert answer.get_json()["error_id"] == "authentication-required"
    wrong = getattr(api, method)(path, json={}, headers={"Authorization": "Bearer kok_nope"})
    assert wrong.status_code == 401


def test_roles_matrix(api: FlaskClient, tokens: Tokens) -> None:
    seed(api, tokens["root"])
    cases: list[tuple[str, str, str, dict[str, Any] | None, int]] = [
        ("aiko", "put", "/api/acd/queues/billing", {}, 403),
        ("sue", "put", "/api/acd/queues/billing", {}, 403),
        ("aiko", "put", "/api/acd/agents/aiko", {}, 403),
        ("sue", "delete", "/api/acd/agents/ben", None, 403),
        ("aiko", "get", "/api/acd/agents", None, 403),
        ("aiko", "get", "/api/acd/agents/ben", None, 403),
        ("aiko", "get", "/api/acd/calls/CA1", None, 403),
        ("aiko", "post", "/api/acd/agents/ben/status", {"status": "available"}, 403),
        ("aiko", "get", "/api/acd/queues", None, 200),
        ("aiko", "get", "/api/acd/me", None, 200),
        ("aiko", "post", "/api/acd/agents/aiko/status", {"status": "available"}, 200),
        ("sue", "post", "/api/acd/agents/ben/status", {"status": "available"}, 200),
        ("sue", "get", "/api/acd/agents", None, 200),
        ("sue", "get", "/api/acd/calls/CA1", None, 404),
        ("root", "post", "/api/acd/agents/ben/status", {"status": "offline"}, 200),
    ]
    for user, method, path, body, expected in cases:
        answer = getattr(api, method)(path, json=body, headers=tokens[user])
        assert answer.status_code == expected, (user, method, path, answer.get_json())
        if expected == 403:
            assert answer.get_json()["error_id"] in {
                "role-forbidden",
                "acd-not-your-agent",
                "acd-not-your-call",
            }
    # refused changes changed nothing: ben is still there, aiko's config untouched
    agent = api.get("/api/acd/agents/ben", headers=tokens["sue"]).get_json()
    assert agent["status"] == "offline"
    assert api.get("/api/acd/agents/aiko", headers=tokens["sue"]).get_json()["queues"] == [
        "billing",
        "sales",
    ]


# ---- queues ----


def test_queues_show_waiting_longest_wait_and_agents_by_status(
    acd_app: Flask, api: FlaskClient, tokens: Tokens
) -> None:
    seed(api, tokens["root"])
    api.post("/api/acd/me/status", json={"status": "available"}, headers=tokens["aiko"])
    service = service_of(acd_app)
    service.join("CA-wait-1", "sales", route=False)
    listed = api.get("/api/acd/queues", headers=tokens["aiko"]).get_json()["queues"]
    assert [queue["name"] for queue in listed] == ["billing", "sales"]  # priority first
    sales = api.get("/api/acd/queues/sales", headers=tokens["sue"]).get_json()
    assert sales["waiting"] == 1
    assert sales["longest_wait_ms"] >= 0
    assert sales["agents_by_status"]["available"] == 1
    assert sales["stats"]["joined"] == 1
    billing = next(queue for queue in listed if queue["name"] == "billing")
    assert billing["agents_by_status"] == {**billing["agents_by_status"], "available": 1}
    assert billing["agents_by_status"]["offline"] == 1


def test_put_queue_returns_the_validated_config_and_routes_by_it(
    acd_app: Flask, api: FlaskClient, tokens: Tokens
) -> None:
    body = {
        "priority": 5,
        "skills": {"billing": 2},
        "relax": [{"after_seconds": 30, "any_agent": True}],
        "strategy": "round_robin",
        "description": "請求 / billing",
    }
    answer = api.put("/api/acd/queues/billing", json=body, headers=tokens["root"])
    assert answer.status_code == 200
    assert answer.get_json()["config"]["strategy"] == "round_robin"
    assert answer.get_json()["config"]["wrapup_seconds"] == 10  # the default, as in config.yaml
    assert service_of(acd_app).queue_names() == ["billing"]
    again = api.put("/api/acd/queues/billing", json={"priority": 7}, headers=tokens["root"])
    assert again.status_code == 200
    assert api.get("/api/acd/queues/billing", headers=tokens["sue"]).get_json()["name"] == "billing"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"priority": "high"}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": 1000}, "priority"),
        ({"colour": "red"}, "colour"),
        ({"skills": {"billing": 6}}, "skills.billing"),
        ({"skills": {"billing": "3"}}, "skills.billing"),
        ({"skills": {"cooking": 3}}, "skills"),
        ({"skills": {"請求": 3}}, "skills.請求.[key]"),
        ({"strategy": "fastest"}, "strategy"),
        ({"relax": [{"after_seconds": 30}]}, "relax.0"),
        ({"on_max_wait": {"action": "overflow", "queue": "nowhere"}}, "on_max_wait.queue"),
        ({"on_max_wait": {"action": "explode"}}, "on_max_wait"),
        ({"wrapup_seconds": None}, "wrapup_seconds"),
    ],
)
def test_bad_queue_bodies_name_the_field_and_store_nothing(
    acd_app: Flask,
    api: FlaskClient,
    tokens: Tokens,
    body: dict[str, Any],
    field: str,
) -> None:
    answer = api.put("/api/acd/queues/billing", json=body, headers=tokens["root"])
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["error_id"] == "acd-invalid-input"
    fields = [problem["field"] for problem in answer.get_json()["details"]["problems"]]
    assert any(found.startswith(field) for found in fields), fields
    assert answer.get_json()["message"].startswith(fields[0])
    assert service_of(acd_app).queue_names() == []


@pytest.mark.parametrize(
    ("data", "content_type", "status", "error_id"),
    [
        (b"", "application/json", 400, "acd-body-not-json"),
        (b"   ", "application/json", 400, "acd-body-not-json"),
        (b"{not json", "application/json", 400, "acd-body-not-json"),
        (b"priority=3", "application/x-www-form-urlencoded", 400, "acd-body-not-json"),
        (b"[1, 2]", "application/json", 400, "acd-body-not-json"),
        (b'"billing"', "application/json", 400, "acd-body-not-json"),
        (b"null", "application/json", 400, "acd-body-not-json"),
        (b"\xff\xfe{}", "application/json", 400, "acd-body-not-json"),
        (b"[" * 50_000, "application/json", 400, "acd-body-not-json"),
        (b'{"description": "' + b"x" * 70_000 + b'"}', "application/json", 413, None),
    ],
)
def test_ugly_bodies_are_refused_clearly(
    acd_app: Flask,
    api: FlaskClient,
    tokens: Tokens,
    data: bytes,
    content_type: str,
    status: int,
    error_id: str | None,
) -> None:
    answer = api.put(
        "/api/acd/queues/billing", data=data, content_type=content_type, headers=tokens["root"]
    )
    assert answer.status_code == status
    assert answer.get_json()["error_id"] == (error_id or "acd-body-too-large")
    assert service_of(acd_app).queue_names() == []


def test_a_huge_body_without_a_length_is_refused_too(
    acd_app: Flask, api: FlaskClient, tokens: Tokens
) -> None:
    """A chunked upload has no Content-Length to check up front; reading stops at the limit."""
    body = b'{"description": "' + b"x" * 100_000 + b'"}'
    answer = api.put(
        "/api/acd/queues/billing",
        data=body,
        headers={**tokens["root"], "Transfer-Encoding": "chunked"},
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert answer.status_code == 413
    assert answer.get_json()["error_id"] == "acd-body-too-large"
    assert service_of(acd_app).queue_names() == []


@pytest.mark.parametrize(
    "name", ["日本語", "bad name", "a:b", "-leading", "x" * 65, "queue%2Cother"]
)
def test_bad_queue_names_are_refused(
    acd_app: Flask, api: FlaskClient, tokens: Tokens, name: str
) -> None:
    answer = api.put(f"/api/acd/queues/{name}", json={}, headers=tokens["root"])
    assert answer.status_code == 400
    assert answer.get_json()["error_id"] == "acd-invalid-input"
    assert api.get(f"/api/acd/queues/{name}", headers=tokens["sue"]).status_code == 400
    assert service_of(acd_app).queue_names() == []


def test_unknown_queue_is_404(api: FlaskClient, tokens: Tokens) -> None:
    answer = api.get("/api/acd/queues/nowhere", headers=tokens["sue"])
    assert answer.status_code == 404
    assert answer.get_json()["error_id"] == "acd-unknown-queue"


# ---- agents ----


def test_agent_view_has_status_since_load_tasks_and_skills(
    acd_app: Flask, api: FlaskClient, tokens: Tokens
) -> None:
    seed(api, tokens["root"])
    agent = api.get("/api/acd/agents/aiko", headers=tokens["sue"]).get_json()
    assert agent["status"] == "offline"
    assert agent["since_ms"] > 0
    assert agent["load"] == {"voice": 0, "chat": 0, "sms": 0}
    assert agent["capacity"] == {"voice": 1, "chat": 3, "sms": 5}
    assert agent["tasks"] == []
    assert agent["skills"] == {"billing": 4, "japanese": 5}
    assert agent["user"] == "aiko"
    listed = api.get("/api/acd/agents", headers=tokens["root"]).get_json()["agents"]
    assert [a["agent_id"] for a in listed] == ["aiko", "ben"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"skills": {"billing": 0}}, "skills.billing"),
        ({"skills": {"cooking": 1}}, "skills"),
        ({"queues": ["nowhere"]}, "queues"),
        ({"queues": "billing"}, "queues"),
        ({"capacity": {"voice": 2}}, "capacity.voice"),
        ({"phone": "03-1234-5678"}, "phone"),
        ({"user": "has space"}, "user"),
        ({"user": 42}, "user"),
        ({"password": "x"}, "password"),
    ],
)
def test_bad_agent_bodies_name_the_field_and_store_nothing(
    acd_app: Flask,
    api: FlaskClient,
    tokens: Tokens,
    body: dict[str, Any],
    field: str,
) -> None:
    api.put("/api/acd/queues/billing", json={}, headers=tokens["root"])
    answer = api.put("/api/acd/agents/dora", json=body, headers=tokens["root"])
    assert answer.status_code == 400, answer.get_json()
    fields = [problem["field"] for problem in answer.get_json()["details"]["problems"]]
    assert any(found.startswith(field) for found in fields), fields
    assert service_of(acd_app).agent_ids() == []


def test_agent_sets_own_status_through_me_and_by_id(api: FlaskClient, tokens: Tokens) -> None:
    seed(api, tokens["root"])
    me = api.get("/api/acd/me", headers=tokens["aiko"]).get_json()
    assert me["agent_id"] == "aiko"
    answer = api.post(
        "/api/acd/me/status", json={"status": "break", "reason": "昼食"}, headers=tokens["aiko"]
    )
    assert answer.status_code == 200
    assert (answer.get_json()["status"], answer.get_json()["reason"]) == ("break", "昼食")
    by_id = api.post(
        "/api/acd/agents/aiko/status", json={"status": "available"}, headers=tokens["aiko"]
    )
    assert by_id.get_json()["status"] == "available"
    assert (
        api.get("/api/acd/agents/aiko", headers=tokens["sue"]).get_json()["status"] == "available"
    )


@pytest.mark.parametrize(
    "body",
    [
        {"status": "break"},
        {"status": "break", "reason": "   "},
        {"status": "on-call"},
        {"status": "AVAILABLE"},
        {"status": 1},
        {"status": "available", "reason": "x" * 65},
        {"status": "available", "colour": "red"},
        {},
    ],
)
def test_bad_status_changes_are_400_and_change_nothing(
    api: FlaskClient, tokens: Tokens, body: dict[str, Any]
) -> None:
    seed(api, tokens["root"])
    answer = api.post("/api/acd/agents/aiko/status", json=body, headers=tokens["sue"])
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["error_id"] == "acd-invalid-input"
    assert api.get("/api/acd/agents/aiko", headers=tokens["sue"]).get_json()["status"] == "offline"


def test_a_user_who_is_no_agent_gets_a_clear_404(api: FlaskClient, tokens: Tokens) -> None:
    seed(api, tokens["root"])
    answer = api.get("/api/acd/me", headers=tokens["carol"])
    assert answer.status_code == 404
    assert answer.get_json()["error_id"] == "acd-no-agent-for-user"
    forbidden = api.post(
        "/api/acd/agents/aiko/status", json={"status": "available"}, headers=tokens["carol"]
    )
    assert forbidden.status_code == 403


def test_an_agent_naming_a_user_is_that_users_and_no_longer_its_namesakes(
    api: FlaskClient, tokens: Tokens
) -> None:
    seed(api, tokens["root"])
    body = {"skills": {"billing": 3}, "queues": ["billing"], "user": "Carol"}
    assert api.put("/api/acd/agents/ben", json=body, headers=tokens["root"]).status_code == 200
    assert api.get("/api/acd/me", headers=tokens["carol"]).get_json()["agent_id"] == "ben"
    assert api.get("/api/acd/agents/ben", headers=tokens["sue"]).get_json()["user"] == "Carol"
    changed = api.post("/api/acd/me/status", json={"status": "available"}, headers=tokens["carol"])
    assert changed.get_json()["agent_id"] == "ben"
    # the user named like the agent no longer acts as it
    assert api.get("/api/acd/me", headers=tokens["ben"]).status_code == 404
    refused = api.post(
        "/api/acd/agents/ben/status", json={"status": "offline"}, headers=tokens["ben"]
    )
    assert refused.status_code == 403
    # one user, one agent
    taken = api.put(
        "/api/acd/agents/aiko",
        json={"queues": ["billing"], "user": "carol"},
        headers=tokens["root"],
    )
    assert taken.status_code == 409
    assert taken.get_json()["error_id"] == "acd-user-taken"
    assert api.get("/api/acd/agents/aiko", headers=tokens["sue"]).get_json()["queues"] == [
        "billing",
        "sales",
    ]
    # unlinking gives ben back to the user ben
    api.put("/api/acd/agents/ben", json={"queues": ["billing"]}, headers=tokens["root"])
    assert api.get("/api/acd/me", headers=tokens["ben"]).get_json()["agent_id"] == "ben"
    assert api.get("/api/acd/me", headers=tokens["carol"]).status_code == 404


def test_delete_agent_refused_while_busy_then_done(
    api: FlaskClient, tokens: Tokens, redis_client: redis.Redis
) -> None:
    seed(api, tokens["root"])
    api.post("/api/acd/agents/ben/status", json={"status": "available"}, headers=tokens["sue"])
    service = AcdService(redis_client)  # as the router, which offers calls
    joined = service.join("CA-busy-1", "billing")
    assert [offer.agents for offer in joined.offers] == [("ben",)]
    busy = api.delete("/api/acd/agents/ben", headers=tokens["root"])
    assert busy.status_code == 409
    assert busy.get_json()["error_id"] == "acd-agent-busy"
    call = api.get("/api/acd/calls/CA-busy-1", headers=tokens["sue"]).get_json()
    assert (call["state"], call["agents"], call["queue"]) == ("offered", ["ben"], "billing")
    service.hangup("CA-busy-1")
    gone = api.delete("/api/acd/agents/ben", headers=tokens["root"])
    assert gone.status_code == 204
    assert api.get("/api/acd/agents/ben", headers=tokens["sue"]).status_code == 404
    assert api.get("/api/acd/me", headers=tokens["ben"]).status_code == 404
    assert api.delete("/api/acd/agents/ben", headers=tokens["root"]).status_code == 404


def test_calls_bad_and_unknown_ids(api: FlaskClient, tokens: Tokens) -> None:
    assert api.get("/api/acd/calls/CA%20x", headers=tokens["sue"]).status_code == 400
    unknown = api.get("/api/acd/calls/CAunknown", headers=tokens["root"])
    assert unknown.status_code == 404
    assert unknown.get_json()["error_id"] == "acd-unknown-call"


# ---- routing from a status change ----


def test_a_status_change_wakes_the_router_which_makes_the_offer(
    acd_app: Flask, api: FlaskClient, tokens: Tokens, redis_client: redis.Redis
) -> None:
    """The web process cannot dial, so it makes no offer itself: the router does."""
    seed(api, tokens["root"])
    router = AcdService(redis_client)
    router.join("CA-wake-1", "sales", route=False)
    assert redis_client.llen(router.keys.wake) == 0  # nothing asked for routing yet
    api.post("/api/acd/me/status", json={"status": "available"}, headers=tokens["aiko"])
    assert service_of(acd_app).call("CA-wake-1").state == "waiting"
    assert router.wait_for_wake(5)
    report = router.tick()
    assert [(offer.call_id, offer.agents) for offer in report.offers] == [("CA-wake-1", ("aiko",))]
    assert api.get("/api/acd/me", headers=tokens["aiko"]).get_json()["status"] == "offered"


# ---- config.yaml over the API ----


def test_config_is_laid_over_api_changes(
    acd_app: Flask, api: FlaskClient, tokens: Tokens, acd_settings: Settings
) -> None:
    seed(api, tokens["root"])
    api.put("/api/acd/queues/extra", json={}, headers=tokens["root"])
    config = acd_settings.model_validate(
        {
            **acd_settings.model_dump(),
            "queues": {"billing": {"priority": 1}, "sales": {}},
            "agents": {"ben": {"queues": ["sales"], "user": "carol"}},
        }
    )
    service = service_of(acd_app)
    acd_runtime.apply_config(service, config)
    assert set(service.queue_names()) == {"billing", "extra", "sales"}
    assert service.queue("billing").name == "billing"
    assert service.agent("ben").queues == ["sales"]
    assert service.agent("aiko").queues == ["billing", "sales"]  # API-made, kept
    assert api.get("/api/acd/me", headers=tokens["carol"]).get_json()["agent_id"] == "ben"


@pytest.mark.parametrize(
    ("agents", "message"),
    [
        ("  a: {user: has space}\n", "agents.a.user: String should match pattern"),
        ("  a: {user: carol}\n  b: {user: Carol}\n", "agents: two agents name the same user"),
    ],
)
def test_config_user_links_are_checked(tmp_path: Path, agents: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"agents:\n{agents}", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load(path, environ={})
    assert str(raised.value).startswith(message)


def test_redis_down_is_a_clear_503(
    acd_settings: Settings, database: Database, tokens: Tokens, tmp_path: Path
) -> None:
    gone = acd_settings.model_copy(update={"redis_url": f"unix://{tmp_path / 'no-redis.sock'}"})
    api = create_app({"TESTING": True, "KOKAN_SETTINGS": gone}).test_client()
    answer = api.get("/api/acd/queues", headers=tokens["sue"])
    assert answer.status_code == 503
    assert answer.get_json()["error_id"] == "redis-unavailable"
    assert answer.headers["Retry-After"] == "2"
    refused = api.put("/api/acd/queues/billing", json={}, headers=tokens["root"])
    assert refused.status_code == 503


@pytest.mark.parametrize("agent_id", ["愛子", "a b", "a,b", "x" * 65])
def test_bad_agent_ids_are_refused(
    acd_app: Flask, api: FlaskClient, tokens: Tokens, agent_id: str
) -> None:
    assert (
        api.put(f"/api/acd/agents/{agent_id}", json={}, headers=tokens["root"]).status_code == 400
    )
    assert api.get(f"/api/acd/agents/{agent_id}", headers=tokens["sue"]).status_code == 400
    status = api.post(
        f"/api/acd/agents/{agent_id}/status", json={"status": "offline"}, headers=tokens["sue"]
    )
    assert status.status_code == 400
    assert service_of(acd_app).agent_ids() == []


# -- the admin's config page reads back what it wrote, and the skill catalog --


def test_queue_and_agent_config_read_back_what_was_put(api: FlaskClient, tokens: Tokens) -> None:
    admin = tokens["root"]
    seed(api, admin)
    overflow = {
        "skills": {"billing": 2},
        "max_wait_seconds": 90,
        "on_max_wait": {"action": "overflow", "queue": "sales"},
        "autopause": False,
    }
    assert api.put("/api/acd/queues/billing", json=overflow, headers=admin).status_code == 200
    shown = api.get("/api/acd/queues/billing/config", headers=admin).get_json()
    assert shown["config"]["on_max_wait"] == {"action": "overflow", "queue": "sales"}
    assert shown["config"]["max_wait_seconds"] == 90
    assert shown["config"]["autopause"] is False
    assert shown["in_config_file"] is False
    # what the page sends back unchanged is accepted unchanged
    again = api.put("/api/acd/queues/billing", json=shown["config"], headers=admin)
    assert again.status_code == 200, again.get_json()
    assert api.get("/api/acd/queues/billing/config", headers=admin).get_json() == shown

    agent = {
        "name": "相田 愛子",
        "skills": {"billing": 4},
        "queues": ["billing"],
        "capacity": {"voice": 1, "chat": 2, "sms": 3},
        "weight": 4,
        "order": 7,
        "sip_uri": "sip:aiko@127.0.0.1:5070",
        "phone": "+81312345678",
    }
    assert api.put("/api/acd/agents/aiko", json=agent, headers=admin).status_code == 200
    config = api.get("/api/acd/agents/aiko/config", headers=admin).get_json()["config"]
    assert {key: config[key] for key in agent} == agent
    assert config["user"] == "aiko"
    assert api.put("/api/acd/agents/aiko", json=config, headers=admin).status_code == 200


def test_config_reads_are_for_admins_and_name_what_is_missing(
    api: FlaskClient, tokens: Tokens
) -> None:
    seed(api, tokens["root"])
    for user in ("sue", "aiko"):
        assert api.get("/api/acd/queues/billing/config", headers=tokens[user]).status_code == 403
        assert api.get("/api/acd/agents/ben/config", headers=tokens[user]).status_code == 403
    missing = api.get("/api/acd/queues/nowhere/config", headers=tokens["root"])
    assert missing.status_code == 404
    assert missing.get_json()["error_id"] == "acd-unknown-queue"
    missing = api.get("/api/acd/agents/nobody/config", headers=tokens["root"])
    assert missing.status_code == 404
    assert missing.get_json()["error_id"] == "acd-unknown-agent"


def test_skills_added_through_the_api_join_the_file_catalog(
    api: FlaskClient, tokens: Tokens
) -> None:
    admin = tokens["root"]
    seed(api, admin)
    refused = api.put("/api/acd/agents/ben", json={"skills": {"korean": 3}}, headers=admin)
    assert refused.status_code == 400
    assert refused.get_json()["details"]["problems"][0]["field"] == "skills"

    added = api.put("/api/acd/skills/korean", json={"description": "한국어"}, headers=admin)
    assert added.status_code == 200, added.get_json()
    listed = {skill["name"]: skill for skill in added.get_json()["skills"]}
    assert listed["korean"] == {"name": "korean", "description": "한국어", "in_config_file": False}
    assert listed["japanese"]["in_config_file"] is True
    assert api.get("/api/acd/skills", headers=tokens["sue"]).get_json()["skills"] == list(
        listed.values()
    )
    assert (
        api.put("/api/acd/agents/ben", json={"skills": {"korean": 3}}, headers=admin).status_code
        == 200
    )

    in_use = api.delete("/api/acd/skills/korean", headers=admin)
    assert in_use.status_code == 409
    assert in_use.get_json()["error_id"] == "acd-skill-in-use"
    assert "agent:ben" in in_use.get_json()["message"]
    from_file = api.delete("/api/acd/skills/japanese", headers=admin)
    assert from_file.status_code == 409
    assert from_file.get_json()["error_id"] == "acd-skill-in-config-file"

    assert api.put("/api/acd/agents/ben", json={"skills": {}}, headers=admin).status_code == 200
    assert api.delete("/api/acd/skills/korean", headers=admin).status_code == 204
    names = [
        skill["name"] for skill in api.get("/api/acd/skills", headers=admin).get_json()["skills"]
    ]
    assert names == sorted(SKILLS)


@pytest.mark.parametrize(
    ("name", "body", "status"),
    [
        ("bad name!", {"description": "x"}, 400),
        ("ok", {"description": "x" * 201}, 400),
        ("ok", {"description": 5}, 400),
        ("ok", {"level": 3}, 400),
        ("ok", [], 400),
    ],
)
def test_bad_skills_are_refused(
    api: FlaskClient, tokens: Tokens, name: str, body: Any, status: int
) -> None:
    answer = api.put(f"/api/acd/skills/{name}", json=body, headers=tokens["root"])
    assert answer.status_code == status
    assert answer.get_json()["message"]
    assert api.put("/api/acd/skills/ok", json={}, headers=tokens["sue"]).status_code == 403


# -- wrap-up codes and the browser phone's token --

WRAPUP_CODES = {"resolved": "解決 / resolved", "follow_up": "折り返し / follow-up"}
API_KEY_SID = "SK" + "0123456789abcdef" * 2
API_KEY_SECRET = "a secret only this test knows, 32+ bytes"
ACCOUNT_SID = "AC" + "fedcba9876543210" * 2


@pytest.fixture
def desk_api(acd_settings: Settings, database: Database, redis_client: redis.Redis) -> FlaskClient:
    configured = acd_settings.model_copy(
        update={
            "wrapup_codes": WRAPUP_CODES,
            "twilio": acd_settings.twilio.model_copy(
                update={
                    "account_sid": ACCOUNT_SID,
                    "api_key_sid": API_KEY_SID,
                    "api_key_secret": SecretStr(API_KEY_SECRET),
                }
            ),
        }
    )
    return create_app({"TESTING": True, "KOKAN_SETTINGS": configured}).test_client()


def taken_call(api: FlaskClient, tokens: Tokens, agent: str) -> str:
    """A call the agent answered and hung up, through the ACD's own service."""
    seed(api, tokens["root"])
    service = service_of(api.application)
    call_id = f"CA{uuid.uuid4().hex}"
    service.set_status("ben", "offline")
    service.set_status("aiko", "offline")
    service.join(call_id, "billing", caller="+819012345678")
    (offer,) = AcdService(service.redis).set_status(agent, "available")  # routes at once
    assert offer.call_id == call_id
    service.answer(call_id, agent)
    service.hangup(call_id)
    return call_id


def test_an_agent_codes_the_call_they_took_and_may_correct_it(
    desk_api: FlaskClient, tokens: Tokens, database: Database
) -> None:
    call_id = taken_call(desk_api, tokens, "aiko")
    codes = desk_api.get("/api/acd/wrapup-codes", headers=tokens["aiko"]).get_json()
    assert codes == {
        "codes": [{"code": code, "label": label} for code, label in WRAPUP_CODES.items()]
    }
    path = f"/api/acd/calls/{call_id}/wrapup"
    first = desk_api.post(
        path, json={"code": "follow_up", "note": "明日電話"}, headers=tokens["aiko"]
    )
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["label"] == WRAPUP_CODES["follow_up"]
    again = desk_api.post(path, json={"code": "resolved"}, headers=tokens["aiko"])
    assert again.get_json()["code"] == "resolved"
    assert again.get_json()["note"] == ""
    corrected = desk_api.post(path, json={"code": "follow_up"}, headers=tokens["sue"])
    assert corrected.get_json()["by"] == "sue"
    assert corrected.get_json()["agent_id"] == "aiko"
    with database.sessions() as session:
        rows = session.scalars(select(CallWrapup)).all()
    assert [(row.call_id, row.agent_id, row.code) for row in rows] == [
        (call_id, "aiko", "follow_up")
    ]


def test_wrap_up_codes_are_checked_and_other_agents_calls_refused(
    desk_api: FlaskClient, tokens: Tokens, database: Database
) -> None:
    call_id = taken_call(desk_api, tokens, "aiko")
    path = f"/api/acd/calls/{call_id}/wrapup"
    unknown = desk_api.post(path, json={"code": "sold"}, headers=tokens["aiko"])
    assert unknown.status_code == 400
    assert unknown.get_json()["details"]["problems"][0]["field"] == "code"
    for body in (
        {},
        {"code": 3},
        {"code": "resolved", "note": "x" * 2001},
        {"code": "resolved", "x": 1},
    ):
        assert desk_api.post(path, json=body, headers=tokens["aiko"]).status_code == 400, body
    assert (
        desk_api.post(
            path, data="[]", headers={**tokens["aiko"], "Content-Type": "application/json"}
        ).status_code
        == 400
    )
    not_theirs = desk_api.post(path, json={"code": "resolved"}, headers=tokens["ben"])
    assert not_theirs.status_code in (403, 404)
    nowhere = desk_api.post(
        "/api/acd/calls/CAnothing/wrapup", json={"code": "resolved"}, headers=tokens["sue"]
    )
    assert nowhere.status_code == 404
    with database.sessions() as session:
        assert session.scalars(select(CallWrapup)).all() == []


def test_without_wrap_up_codes_the_desk_asks_for_none(api: FlaskClient, tokens: Tokens) -> None:
    call_id = taken_call(api, tokens, "aiko")
    assert api.get("/api/acd/wrapup-codes", headers=tokens["aiko"]).get_json() == {"codes": []}
    answer = api.post(
        f"/api/acd/calls/{call_id}/wrapup", json={"code": "resolved"}, headers=tokens["aiko"]
    )
    assert answer.status_code == 409
    assert answer.get_json()["error_id"] == "acd-no-wrapup-codes"


def test_the_browser_phone_token_registers_as_the_agents_identity(
    desk_api: FlaskClient, tokens: Tokens
) -> None:
    seed(desk_api, tokens["root"])
    no_identity = desk_api.get("/api/acd/me/voice-token", headers=tokens["aiko"])
    assert no_identity.status_code == 409
    assert no_identity.get_json()["error_id"] == "browser-phone-no-identity"
    agent = {"skills": {"billing": 4}, "queues": ["billing"], "twilio_identity": "aiko.desk"}
    assert (
        desk_api.put("/api/acd/agents/aiko", json=agent, headers=tokens["root"]).status_code == 200
    )
    minted = desk_api.get("/api/acd/me/voice-token", headers=tokens["aiko"]).get_json()
    assert minted["identity"] == "aiko.desk"
    claims = jwt.decode(minted["token"], API_KEY_SECRET, algorithms=["HS256"])
    assert claims["iss"] == API_KEY_SID
    assert claims["sub"] == ACCOUNT_SID
    assert claims["grants"]["identity"] == "aiko.desk"
    assert claims["grants"]["voice"]["incoming"] == {"allow": True}
    assert claims["exp"] - claims["nbf"] == minted["ttl_seconds"] == 3600
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(minted["token"], "another secret", algorithms=["HS256"])
    for user in ("sue", "root"):
        assert desk_api.get("/api/acd/me/voice-token", headers=tokens[user]).status_code == 403


def test_no_browser_phone_without_an_api_key(api: FlaskClient, tokens: Tokens) -> None:
    seed(api, tokens["root"])
    answer = api.get("/api/acd/me/voice-token", headers=tokens["aiko"])
    assert answer.status_code == 409
    assert answer.get_json()["error_id"] == "browser-phone-not-configured"


def test_a_queues_music_and_announcements_put_through_the_api_reach_the_hold_loops(
    acd_app: Flask, api: FlaskClient, tokens: Tokens, redis_client: redis.Redis
) -> None:
    body = {
        "hold_music": "prompts/hold.wav",
        "announce_every_seconds": 45,
        "callback_key": "9",
        "record": "always",
        "language": "en",
    }
    answer = api.put("/api/acd/queues/api-made", json=body, headers=tokens["root"])
    assert answer.status_code == 200, answer.get_json()
    shown = api.get("/api/acd/queues/api-made/config", headers=tokens["root"]).get_json()
    assert {key: shown["config"][key] for key in body} == body

    service = service_of(acd_app)
    queues = StoredQueues(redis_client, service.keys, {})
    stored = queues.get("api-made")
    assert stored is not None
    assert (stored.hold_music, stored.announce_every_seconds, stored.callback_key) == (
        "prompts/hold.wav",
        45,
        "9",
    )
    assert "api-made" in queues
    assert queues.get("nowhere") is None

    missing = api.put(
        "/api/acd/queues/api-made", json={"hold_music": "prompts/none.wav"}, headers=tokens["root"]
    )
    assert missing.status_code == 400
    assert missing.get_json()["details"]["problems"][0]["field"] == "hold_music"
    outside = api.put(
        "/api/acd/queues/api-made", json={"hold_music": "../config.yaml"}, headers=tokens["root"]
    )
    assert outside.status_code == 400
    kept = api.get("/api/acd/queues/api-made/config", headers=tokens["root"]).get_json()
    assert kept["config"]["callback_key"] == "9"  # nothing of the refused changes was stored


def test_stored_queues_fall_back_to_the_file_when_redis_has_no_settings(
    redis_client: redis.Redis,
) -> None:
    file_queue = QueueSettings(hold_music="prompts/hold.wav", announce_every_seconds=60)
    queues = StoredQueues(redis_client, Keys(), {"billing": file_queue})
    assert queues.get("billing") == file_queue
    assert list(queues) == ["billing"]


def test_a_queue_refers_sip_callers_to_agents_only_when_it_does_not_record_them(
    acd_app: Flask, api: FlaskClient, tokens: Tokens, redis_client: redis.Redis
) -> None:
    answer = api.put(
        "/api/acd/queues/api-made", json={"sip_agent_leg": "refer"}, headers=tokens["root"]
    )
    assert answer.status_code == 200, answer.get_json()
    stored = StoredQueues(redis_client, service_of(acd_app).keys, {}).get("api-made")
    assert stored is not None
    assert stored.sip_agent_leg == "refer"
    assert QueueSettings().sip_agent_leg == "bridge"

    for body in (
        {"sip_agent_leg": "refer", "record": "always"},  # nothing to record after a REFER
        {"sip_agent_leg": "refer", "strategy": "ring_all"},  # a REFER goes to one phone
        {"sip_agent_leg": "transfer"},
    ):
        refused = api.put("/api/acd/queues/api-made", json=body, headers=tokens["root"])
        assert refused.status_code == 400, body
        [problem] = refused.get_json()["details"]["problems"]
        assert problem["field"] == "sip_agent_leg", problem
    recorded = api.put(
        "/api/acd/queues/api-made",
        json={"sip_agent_leg": "refer", "record": "always"},
        headers=tokens["root"],
    )
    assert "cannot be recorded" in recorded.get_json()["details"]["problems"][0]["message"]
