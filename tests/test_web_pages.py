"""The web UI's sign-in, sessions, CSRF, lock-out, role checks and languages, through the
real app with a real database and Redis (the browser tests are in test_web_ui.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from admin.models import Role
from admin.services import create_user, issue_token
from admin.sign_in import LOCKOUT_FAILURES, failures_key
from kokan.app import create_app
from kokan.config import Settings
from kokan.db import Database
from tests.conftest import REPO_ROOT

NEW_PASSWORD = "a long enough passphrase 🌸"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def web_app(settings: Settings, database: Database, redis_client: redis.Redis) -> Flask:
    return create_app({"TESTING": True, "KOKAN_SETTINGS": settings})


def make_user(database: Database, name: str, role: Role, *, ready: bool = True) -> str:
    """A user as `kokan users create` makes them; `ready`: their own password already set."""
    with database.unit_of_work() as session:
        created = create_user(session, name, role.value)
        if not ready:
            return created.password
        from admin.services import password_hasher

        created.user.password_hash = password_hasher.hash(NEW_PASSWORD)
        created.user.must_change_password = False
        return NEW_PASSWORD


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    found = CSRF_FIELD.search(page)
    assert found, page
    return found.group(1)


def sign_in(client: FlaskClient, name: str, password: str, **extra: str) -> TestResponse:
    form = {"username": name, "password": password, "csrf_token": csrf_token(client), **extra}
    return client.post("/login", data=form)


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def test_signing_in_lands_each_role_on_its_page_and_signing_out_ends_it(
    web_app: Flask, database: Database
) -> None:
    homes = {Role.ADMIN: "/admin", Role.SUPERVISOR: "/supervisor", Role.AGENT: "/agent"}
    for role, home in homes.items():
        client = web_app.test_client()
        password = make_user(database, f"user-{role.value}", role)
        answer = sign_in(client, f"USER-{role.value}", password)  # names in any case
        assert answer.status_code == 302
        assert answer.headers["Location"] == home
        page = client.get(home)
        assert page.status_code == 200
        assert f"user-{role.value}" in text(page)
        token = CSRF_FIELD.search(text(page))
        assert token is not None
        assert client.post("/logout", data={"csrf_token": token.group(1)}).status_code == 302
        assert client.get(home).headers["Location"].startswith("/login")


def test_each_page_admits_only_its_roles(web_app: Flask, database: Database) -> None:
    allowed = {
        Role.ADMIN: {"/admin", "/supervisor"},
        Role.SUPERVISOR: {"/supervisor"},
        Role.AGENT: {"/agent"},
    }
    for role, pages in allowed.items():
        client = web_app.test_client()
        sign_in(client, f"u-{role.value}", make_user(database, f"u-{role.value}", role))
        for page in ("/admin", "/supervisor", "/agent"):
            answer = client.get(page)
            if page in pages:
                assert answer.status_code == 200, (role, page)
            else:
                assert answer.status_code == 403, (role, page)
                assert "This page is not for your role." in text(answer)


def test_someone_not_signed_in_is_sent_to_sign_in_and_brought_back(
    web_app: Flask, database: Database
) -> None:
    client = web_app.test_client()
    answer = client.get("/supervisor")
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/login?next=/supervisor"
    password = make_user(database, "sato", Role.SUPERVISOR)
    back = sign_in(client, "sato", password, next="/supervisor")
    assert back.headers["Location"] == "/supervisor"
    # only paths on this site: anything else lands on the role's own page
    for elsewhere in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        client = web_app.test_client()
        assert sign_in(client, "sato", password, next=elsewhere).headers["Location"] == (
            "/supervisor"
        )


def test_a_new_user_chooses_a_password_before_anything_else(
    web_app: Flask, database: Database
) -> None:
    one_time = make_user(database, "aiko", Role.AGENT, ready=False)
    client = web_app.test_client()
    assert sign_in(client, "aiko", one_time).headers["Location"] == "/password"
    assert client.get("/agent").headers["Location"] == "/password"
    api = client.get("/api/me")
    assert api.status_code == 403
    assert api.get_json()["error_id"] == "password-change-required"

    token = csrf_token(client, "/password")
    refusals = [
        ({"current_password": "wrong", "new_password": NEW_PASSWORD}, "is not right"),
        ({"current_password": one_time, "new_password": "short"}, "too short"),
        ({"current_password": one_time, "new_password": one_time}, "other than the current"),
    ]
    for form, reason in refusals:
        form = {**form, "repeat_password": form["new_password"], "csrf_token": token}
        answer = client.post("/password", data=form)
        assert answer.status_code == 400
        assert reason in text(answer)
    mismatch = {
        "current_password": one_time,
        "new_password": NEW_PASSWORD,
        "repeat_password": NEW_PASSWORD + "!",
        "csrf_token": token,
    }
    assert "differ" in text(client.post("/password", data=mismatch))
    done = client.post("/password", data={**mismatch, "repeat_password": NEW_PASSWORD})
    assert done.headers["Location"] == "/agent"
    assert client.get("/agent").status_code == 200
    # the old password no longer works, the new one does
    assert sign_in(web_app.test_client(), "aiko", one_time).status_code == 401
    assert sign_in(web_app.test_client(), "aiko", NEW_PASSWORD).status_code == 302


def test_a_password_change_ends_the_users_other_sessions(
    web_app: Flask, database: Database
) -> None:
    password = make_user(database, "ben", Role.AGENT)
    laptop, phone = web_app.test_client(), web_app.test_client()
    sign_in(laptop, "ben", password)
    sign_in(phone, "ben", password)
    form = {
        "current_password": password,
        "new_password": "another long passphrase",
        "repeat_password": "another long passphrase",
        "csrf_token": csrf_token(laptop, "/password"),
    }
    assert laptop.post("/password", data=form).status_code == 302
    assert laptop.get("/agent").status_code == 200
    assert phone.get("/agent").headers["Location"].startswith("/login")


def test_repeated_failures_lock_the_name_even_for_the_right_password(
    web_app: Flask, database: Database, redis_client: redis.Redis
) -> None:
    password = make_user(database, "kana", Role.SUPERVISOR)
    client = web_app.test_client()
    for _ in range(LOCKOUT_FAILURES):
        answer = sign_in(client, "kana", "guess")
        assert answer.status_code == 401
        assert "Wrong username or password." in text(answer)
    locked = sign_in(client, "kana", password)
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in text(locked)
    assert 0 < redis_client.ttl(failures_key("kana")) <= 15 * 60
    # another name is not affected; the lock lifts when the counter expires
    assert sign_in(client, "other", "guess").status_code == 401
    redis_client.delete(failures_key("kana"))
    assert sign_in(client, "kana", password).status_code == 302


def test_ugly_credentials_are_refused_plainly(web_app: Flask, database: Database) -> None:
    make_user(database, "mio", Role.AGENT)
    client = web_app.test_client()
    for name, password in [
        ("", ""),
        ("mio", "x" * 10_000),
        ("ミオ", "🌸" * 50),
        ("mio\x00", "a"),
        ("mio", "a\x00"),
        ("m" * 10_000, "a"),
        ("mio'; --", "a"),
    ]:
        answer = sign_in(client, name, password)
        assert answer.status_code == 401, (name, password[:10])


def test_forms_and_cookie_authenticated_api_calls_need_the_csrf_token(
    web_app: Flask, database: Database
) -> None:
    password = make_user(database, "root", Role.ADMIN)
    client = web_app.test_client()
    refused = client.post("/login", data={"username": "root", "password": password})
    assert refused.status_code == 400
    assert "CSRF" in text(refused)
    sign_in(client, "root", password)
    assert client.get("/api/me").get_json() == {"username": "root", "role": "admin"}
    body = {"url": "https://hooks.example.com/x", "event_types": ["ticket.created"]}
    missing = client.post("/api/webhooks/subscriptions", json=body)
    assert missing.status_code == 400
    assert missing.get_json()["error_id"] == "csrf-failed"
    token = csrf_token(client, "/admin")
    made = client.post("/api/webhooks/subscriptions", json=body, headers={"X-CSRFToken": token})
    assert made.status_code == 201, text(made)


def test_bearer_tokens_and_signed_webhooks_need_no_csrf_token(
    web_app: Flask, database: Database
) -> None:
    with database.unit_of_work() as session:
        token = issue_token(session, create_user(session, "script", Role.ADMIN.value).user)
    client = web_app.test_client()
    body = {"url": "https://hooks.example.com/y", "event_types": ["*"]}
    made = client.post(
        "/api/webhooks/subscriptions", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert made.status_code == 201, text(made)
    # a Twilio webhook is refused for its signature, not for a CSRF token
    webhook = client.post("/webhooks/twilio/messaging", data={"From": "+819012345678"})
    assert webhook.status_code == 403
    assert "csrf" not in text(webhook).lower()


def test_the_browsers_language_picks_japanese_and_the_switch_wins(
    web_app: Flask, database: Database
) -> None:
    client = web_app.test_client()
    japanese = text(client.get("/login", headers={"Accept-Language": "ja,en;q=0.5"}))
    assert '<html lang="ja">' in japanese
    assert "サインイン" in japanese
    assert "Sign in" in text(client.get("/login", headers={"Accept-Language": "en-US"}))
    token = csrf_token(client)
    client.post("/language", data={"language": "ja", "csrf_token": token, "next": "/login"})
    assert "ユーザー名" in text(client.get("/login", headers={"Accept-Language": "en"}))
    password = make_user(database, "yui", Role.AGENT)
    answer = sign_in(client, "yui", "wrong")
    assert "ユーザー名またはパスワードが違います。" in text(answer)
    sign_in(client, "yui", password)
    desk = text(client.get("/agent"))
    assert "マイデスク" in desk
    assert "エージェント" in desk


def test_every_message_of_the_ui_has_a_japanese_translation() -> None:
    extracted = {
        message
        for _file, _line, message, _comments, _context in extract_from_dir(
            str(REPO_ROOT / "admin"),
            method_map=[("**.py", "python"), ("templates/**.html", "jinja2")],
            keywords={"_": None, "gettext": None, "N_": None},
        )
    }
    po_path = Path(REPO_ROOT / "admin/translations/ja/LC_MESSAGES/messages.po")
    with po_path.open("rb") as handle:
        catalog = read_po(handle, locale="ja")
    translated = {m.id for m in catalog if m.id and m.string and not m.fuzzy}
    assert extracted, "no messages found: the extraction is broken"
    assert sorted(extracted - translated) == []
