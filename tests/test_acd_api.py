"""The ACD's JSON API against a real Redis and a real database: roles, validation, links
between users and agents, and what the floor sees."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr

from acd import runtime as acd_runtime
from acd.services import AcdService
from admin.services import create_user, issue_token
from kokan.app import create_app
from kokan.config import ConfigError, Settings, load
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
