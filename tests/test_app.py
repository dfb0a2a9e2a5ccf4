"""The web app: health, readiness, metrics, JSON errors, request ids and log hygiene."""

from __future__ import annotations

import io
import logging
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from admin.auth import require_role
from admin.models import ApiToken, Role, User
from admin.services import create_user, find_user, hash_token, issue_token
from bench.local_sip import free_listen_port
from kokan import logs
from kokan.app import MAX_CONTENT_LENGTH, create_app
from kokan.config import ConfigError, Settings
from kokan.db import Database
from kokan.embedded_redis import EmbeddedRedis
from tests.conftest import short_tmp_dir
from tests.http_metrics import requests_counted

READY_DEADLINE_S = 15.0
HEX_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


def make_token(database: Database, username: str, role: Role) -> str:
    with database.unit_of_work() as session:
        user = create_user(session, username, role.value).user
        return issue_token(session, user)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_json_error(response: TestResponse, status: int, error_id: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body, dict)
    assert body["error_id"] == error_id
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


@contextmanager
def captured_logs(secrets: Iterable[str] = ()) -> Iterator[io.StringIO]:
    """Kokan's own logging set-up, written to a buffer; the root logger is restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        logs.configure("INFO", secrets)
        for handler in root.handlers:
            assert isinstance(handler, logging.StreamHandler)
            handler.setStream(stream)
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)


# --- health, readiness, metrics -------------------------------------------------------


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_when_everything_answers(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["checks"] == {"database": "ok", "redis": "ok"}
    assert body["status"] == "ready"


def test_readyz_follows_redis_going_away_and_coming_back(settings: Settings) -> None:
    folder = short_tmp_dir("kokan-readyz-")
    server = EmbeddedRedis(folder)
    server.start()
    try:
        app = create_app(
            {
                "TESTING": True,
                "KOKAN_SETTINGS": settings.model_copy(update={"redis_url": server.url}),
            }
        )
        client = app.test_client()
        assert client.get("/readyz").status_code == 200

        server.stop()
        down = client.get("/readyz")
        assert down.status_code == 503
        body = down.get_json()
        assert body["status"] == "not-ready"
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["redis"].startswith("failed: ")

        server.start()  # same folder, same socket
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            back = client.get("/readyz")
            if back.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert back.status_code == 200, back.get_json()
        assert back.get_json()["checks"] == {"database": "ok", "redis": "ok"}
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_readyz_names_an_unreachable_database(settings: Settings) -> None:
    unreachable = f"postgresql://kokan:db-PASSWORD-1@127.0.0.1:{free_listen_port()}/kokan"
    app = create_app(
        {
            "TESTING": True,
            "KOKAN_SETTINGS": settings.model_copy(update={"database_url": unreachable}),
        }
    )
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["database"].startswith("failed: ")
    assert body["checks"]["redis"] == "ok"
    assert "db-PASSWORD-1" not in response.get_data(as_text=True)


def test_metrics_count_requests(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    before = requests_counted(client, "GET", "/healthz", "200")
    assert client.get("/healthz").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert requests_counted(client, "GET", "/healthz", "200") == before + 2
    text = client.get("/metrics").get_data(as_text=True)
    assert "# TYPE kokan_http_requests_total counter" in text
    assert 'kokan_http_request_duration_seconds_bucket{le="0.005",route="/healthz"}' in text


def test_an_unmatched_path_is_counted_and_logged_under_one_label(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scanner's thousand paths must not become a thousand metric series."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    before = requests_counted(client, "GET", "unmatched", "404")
    with captured_logs() as output:
        assert client.get("/wp-admin/ünï").status_code == 404
    assert requests_counted(client, "GET", "unmatched", "404") == before + 1
    assert "GET /wp-admin/ünï 404" in output.getvalue()


# --- JSON errors ----------------------------------------------------------------------


def test_unknown_api_path_is_json_404(client: FlaskClient) -> None:
    assert_json_error(client.get("/api/nothing-here"), 404, "not-found")


def test_page_404_is_html_for_a_browser_and_json_when_asked(client: FlaskClient) -> None:
    page = client.get("/nothing-here", headers={"Accept": "text/html"})
    assert page.status_code == 404
    assert page.mimetype == "text/html"
    asked = client.get("/nothing-here", headers={"Accept": "application/json"})
    assert_json_error(asked, 404, "not-found")


def test_wrong_method_is_json_405_with_allow(client: FlaskClient) -> None:
    response = client.post("/healthz")
    assert_json_error(response, 405, "method-not-allowed")
    assert "GET" in response.headers["Allow"]
    assert_json_error(client.delete("/api/me"), 405, "method-not-allowed")


def test_routing_redirect_keeps_its_location(app: Flask, client: FlaskClient) -> None:
    @app.get("/api/test-slash/")
    def slashed() -> dict[str, str]:
        return {"ok": "yes"}

    response = client.get("/api/test-slash")
    assert response.status_code == 308
    assert response.headers["Location"].endswith("/api/test-slash/")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer kok_not-a-real-token"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
    ],
)
def test_api_needs_a_valid_token(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.get("/api/me", headers=headers)
    assert_json_error(response, 401, "authentication-required")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_token_of_a_disabled_user_or_revoked_token_is_refused(
    client: FlaskClient, database: Database
) -> None:
    disabled, revoked = (
        make_token(database, "gone", Role.AGENT),
        make_token(database, "old", Role.AGENT),
    )
    assert client.get("/api/me", headers=bearer(disabled)).status_code == 200
    assert client.get("/api/me", headers=bearer(revoked)).status_code == 200
    with database.unit_of_work() as session:
        user = find_user(session, "gone")
        assert isinstance(user, User)
        user.disabled = True
        token_row = session.scalars(
            select(ApiToken).where(ApiToken.token_hash == hash_token(revoked))
        ).one()
        token_row.revoked = True
    assert_json_error(
        client.get("/api/me", headers=bearer(disabled)), 401, "authentication-required"
    )
    assert_json_error(
        client.get("/api/me", headers=bearer(revoked)), 401, "authentication-required"
    )


def test_each_role_sees_itself_and_a_missing_role_is_403(
    app: Flask, client: FlaskClient, database: Database
) -> None:
    @app.get("/api/test-admin-only")
    @require_role(Role.ADMIN)
    def admin_only() -> dict[str, str]:
        return {"secret": "admin things"}

    tokens = {role: make_token(database, f"user-{role.value}", role) for role in Role}
    for role, token in tokens.items():
        me = client.get("/api/me", headers=bearer(token))
        assert me.status_code == 200
        assert me.get_json() == {"username": f"user-{role.value}", "role": role.value}

    for role in (Role.AGENT, Role.SUPERVISOR):
        refused = client.get("/api/test-admin-only", headers=bearer(tokens[role]))
        body = assert_json_error(refused, 403, "role-forbidden")
        assert "admin" in body["message"]
        assert "admin things" not in refused.get_data(as_text=True)
    allowed = client.get("/api/test-admin-only", headers=bearer(tokens[Role.ADMIN]))
    assert allowed.status_code == 200
    assert allowed.get_json() == {"secret": "admin things"}
    # a role check runs authentication first
    assert_json_error(client.get("/api/test-admin-only"), 401, "authentication-required")


def test_unexpected_error_is_json_500_and_logged_with_the_request_id(
    app: Flask, client: FlaskClient, settings: Settings
) -> None:
    assert settings.secret_key is not None
    secret = settings.secret_key.get_secret_value()

    @app.get("/api/test-boom")
    def boom() -> dict[str, str]:
        raise RuntimeError(f"the wiring broke near {secret}")

    with captured_logs([secret]) as output:
        response = client.get("/api/test-boom", headers={"X-Request-Id": "req-boom-42"})
    body = assert_json_error(response, 500, "internal-error")
    assert body["request_id"] == "req-boom-42"
    assert response.headers["X-Request-Id"] == "req-boom-42"
    assert "wiring broke" not in response.get_data(as_text=True)  # no internals to the client

    logged = output.getvalue()
    error_lines = [line for line in logged.splitlines() if " ERROR kokan.http " in line]
    assert len(error_lines) == 1, logged
    assert "request=req-boom-42" in error_lines[0]
    assert error_lines[0].endswith("unhandled error")
    assert "RuntimeError: the wiring broke near [redacted]" in logged  # the traceback, scrubbed
    assert secret not in logged
    access = [line for line in logged.splitlines() if "GET /api/test-boom 500" in line]
    assert len(access) == 1
    assert "request=req-boom-42" in access[0]


def test_body_over_the_limit_is_json_413(app: Flask, client: FlaskClient) -> None:
    @app.post("/api/test-upload")
    def upload() -> dict[str, int]:
        return {"received": len(request.get_data())}

    fits = client.post("/api/test-upload", data=b"x" * 1024)
    assert fits.get_json() == {"received": 1024}
    too_big = client.post("/api/test-upload", data=b"x" * (MAX_CONTENT_LENGTH + 1))
    assert_json_error(too_big, 413, "request-entity-too-large")


# --- request ids ----------------------------------------------------------------------


@pytest.mark.parametrize("offered", ["abc-123", "Trace.ID_9", "a" * 64])
def test_safe_request_id_is_echoed(client: FlaskClient, offered: str) -> None:
    response = client.get("/healthz", headers={"X-Request-Id": offered})
    assert response.headers["X-Request-Id"] == offered


@pytest.mark.parametrize(
    "offered", ["has spaces in it", "a" * 65, "x" * 200, "semi;colon", 'quote"d', "ünï"]
)
def test_unsafe_request_id_is_replaced(client: FlaskClient, offered: str) -> None:
    response = client.get("/healthz", headers={"X-Request-Id": offered})
    replaced = response.headers["X-Request-Id"]
    assert replaced != offered
    assert HEX_REQUEST_ID.fullmatch(replaced)


def test_each_request_gets_its_own_id(client: FlaskClient) -> None:
    first = client.get("/healthz").headers["X-Request-Id"]
    second = client.get("/healthz").headers["X-Request-Id"]
    assert HEX_REQUEST_ID.fullmatch(first)
    assert first != second


def test_request_id_is_in_the_access_log_line(client: FlaskClient) -> None:
    with captured_logs() as output:
        client.get("/healthz", headers={"X-Request-Id": "req-access-1"})
        client.get("/healthz")
    lines = [line for line in output.getvalue().splitlines() if "GET /healthz 200" in line]
    assert len(lines) == 2
    assert "request=req-access-1 call=-" in lines[0]
    assert "request=req-access-1" not in lines[1]
    assert logs.request_id_var.get() == "-"  # nothing leaks past the request


# --- logging --------------------------------------------------------------------------


def test_secret_filter_redacts_configured_secrets() -> None:
    secret = "tw-auth-TOKEN-9d1f"
    log = logging.getLogger("kokan.test.secrets")
    with captured_logs([secret, "abc"]) as output:  # too short to scrub safely: ignored
        log.info("calling Twilio with token %s", secret)
        log.warning("inline %s and again %s", secret, secret)
        try:
            raise ValueError(f"rejected {secret}")
        except ValueError:
            log.exception("request failed")
        log.info("abc stays")
    logged = output.getvalue()
    assert secret not in logged
    assert "calling Twilio with token [redacted]" in logged
    assert "inline [redacted] and again [redacted]" in logged
    assert "ValueError: rejected [redacted]" in logged
    assert "abc stays" in logged
    assert len([line for line in logged.splitlines() if "kokan.test.secrets" in line]) == 4


def test_log_lines_carry_the_call_id() -> None:
    log = logging.getLogger("kokan.test.calls")
    with captured_logs() as output:
        token = logs.call_id_var.set("call-77")
        try:
            log.info("ringing")
        finally:
            logs.call_id_var.reset(token)
        log.info("idle")
    lines = output.getvalue().splitlines()
    assert "INFO kokan.test.calls request=- call=call-77 ringing" in lines[0]
    assert "call=- idle" in lines[1]


# --- construction ---------------------------------------------------------------------


def test_create_app_without_redis_url_is_a_config_error(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="redis_url"):
        create_app(
            {"TESTING": True, "KOKAN_SETTINGS": settings.model_copy(update={"redis_url": None})}
        )
