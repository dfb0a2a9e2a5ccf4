"""The `kokan` command as an operator runs it: migrations and users, on the backend under test."""

from __future__ import annotations

import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import argon2
import pytest
import redis
from sqlalchemy import inspect, select

from admin.models import ApiToken, User
from admin.services import InvalidUsername, create_user
from kokan.app import create_app
from kokan.config import Settings
from kokan.db import Database, import_models
from kokan.migrate import head_revision, upgrade
from tests.conftest import FreshDatabase, run_kokan

Result = subprocess.CompletedProcess[str]
Args = tuple[str, ...]

USERNAME_RULE = (
    "kokan: a username is 1-64 characters of letters, digits and . _ @ -, "
    "starting with a letter or digit"
)


def run_all(calls: list[Args], env: dict[str, str], cwd: Path) -> list[Result]:
    """Independent invocations side by side; each still runs the real command line."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run_kokan, *args, env=env, cwd=cwd) for args in calls]
        return [future.result() for future in futures]


def kokan_lines(result: Result) -> list[str]:
    """What the operator reads on stderr; a traceback is never the message."""
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.strip()]


def one_time_secret(result: Result) -> str:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    assert "(shown only now): " in lines[0]
    return lines[0].rsplit(" ", 1)[1]


@pytest.fixture
def migrated_url(fresh_database_url: FreshDatabase) -> str:
    """A database of its own for the test, migrated in-process (the CLI path is tested below)."""
    import_models()
    url = fresh_database_url()
    database = Database(url)
    upgrade(database)
    database.dispose()
    return url


def stored_user(url: str, username: str) -> User | None:
    database = Database(url)
    try:
        with database.unit_of_work() as session:
            user = session.scalar(select(User).where(User.username == username))
            if user is not None:
                session.expunge(user)
            return user
    finally:
        database.dispose()


def test_db_upgrade_current_and_downgrade(
    fresh_database_url: FreshDatabase, tmp_path: Path
) -> None:
    url = fresh_database_url()
    env = {"DATABASE_URL": url}
    database = Database(url)
    head = head_revision(database)
    assert head is not None

    up = run_kokan("db", "upgrade", env=env, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"database at revision {head}"
    assert {"users", "api_tokens", "calls"} <= set(inspect(database.engine).get_table_names())

    current = run_kokan("db", "current", env=env, cwd=tmp_path)
    assert current.stdout.strip() == f"current {head}, newest {head}"

    down = run_kokan("db", "downgrade", "base", env=env, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert down.stdout.strip() == "database at revision base"
    database.engine.dispose()
    remaining = set(inspect(database.engine).get_table_names())
    assert not {"users", "api_tokens", "calls"} & remaining

    after = run_kokan("db", "current", env=env, cwd=tmp_path)
    assert after.stdout.strip() == f"current base, newest {head}"
    # DATABASE_URL was given: nothing was created in the working directory
    assert list(tmp_path.iterdir()) == []
    database.dispose()


def test_users_create_prints_a_one_time_password_that_verifies(
    migrated_url: str, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": migrated_url}
    roles = ["admin", "supervisor", "agent"]
    results = run_all(
        [("users", "create", f"{role}-1", "--role", role) for role in roles], env, tmp_path
    )

    hasher = argon2.PasswordHasher()
    passwords = set()
    for role, result in zip(roles, results, strict=True):
        password = one_time_secret(result)
        assert result.stdout.startswith(f"user '{role}-1' ({role}) created; one-time password")
        assert password not in result.stderr
        assert len(password) >= 16
        passwords.add(password)
        user = stored_user(migrated_url, f"{role}-1")
        assert user is not None
        assert user.role == role
        assert user.must_change_password is True
        assert user.disabled is False
        assert user.password_hash.startswith("$argon2id$")
        assert password not in user.password_hash
        assert hasher.verify(user.password_hash, password)
        with pytest.raises(argon2.exceptions.VerifyMismatchError):
            hasher.verify(user.password_hash, password + "x")
    assert len(passwords) == 3  # each user gets a password of its own


def test_users_create_token_authenticates_on_the_api(
    migrated_url: str, tmp_path: Path, settings: Settings, redis_client: redis.Redis
) -> None:
    result = run_kokan(
        "users", "create", "desk-7", "--role", "agent", "--token",
        env={"DATABASE_URL": migrated_url},
        cwd=tmp_path,
    )  # fmt: skip
    token = one_time_secret(result)
    assert result.stdout.startswith("user 'desk-7' (agent) created; API token (shown only now): ")
    assert token.startswith("kok_")

    user = stored_user(migrated_url, "desk-7")
    assert user is not None
    assert user.password_hash.startswith("$argon2id$")
    database = Database(migrated_url)
    with database.unit_of_work() as session:
        rows = session.scalars(select(ApiToken)).all()
        assert len(rows) == 1
        assert rows[0].user_id == user.id
        assert rows[0].token_hash != token
        assert token not in rows[0].token_hash
        assert len(rows[0].prefix) < len(token)
    database.dispose()

    app = create_app(
        {
            "TESTING": True,
            "KOKAN_SETTINGS": settings.model_copy(update={"database_url": migrated_url}),
        }
    )
    client = app.test_client()
    answer = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json() == {"username": "desk-7", "role": "agent"}
    wrong = client.get("/api/me", headers={"Authorization": f"Bearer {token[:-1]}"})
    assert wrong.status_code == 401


def test_duplicate_username_is_refused(migrated_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": migrated_url}
    first = run_kokan("users", "create", "bob", "--role", "agent", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr

    same, other_case = run_all(
        [
            ("users", "create", "bob", "--role", "admin"),
            ("users", "create", "BOB", "--role", "admin"),
        ],
        env,
        tmp_path,
    )
    for result in (same, other_case):
        assert result.returncode == 1, result.stderr
        assert kokan_lines(result) == ["kokan: a user named 'bob' already exists"]
        assert result.stdout == ""
    user = stored_user(migrated_url, "bob")
    assert user is not None
    assert user.role == "agent"  # the first one, untouched
    assert stored_user(migrated_url, "BOB") is None


def test_invalid_usernames_are_refused(migrated_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": migrated_url}
    bad_names = ["", "two words", "ünïcode", "a" * 65]
    longest = "a" * 64
    results = run_all(
        [("users", "create", name, "--role", "agent") for name in [*bad_names, longest]],
        env,
        tmp_path,
    )
    for name, result in zip(bad_names, results, strict=False):
        assert result.returncode == 1, (name, result.stderr)
        assert kokan_lines(result) == [USERNAME_RULE], name
        assert stored_user(migrated_url, name) is None
    assert results[-1].returncode == 0, results[-1].stderr
    assert stored_user(migrated_url, longest) is not None


def test_bad_role_is_a_usage_error(migrated_url: str, tmp_path: Path) -> None:
    result = run_kokan(
        "users", "create", "carol", "--role", "boss",
        env={"DATABASE_URL": migrated_url},
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        "Error: Invalid value for '--role': 'boss' is not one of 'admin', 'supervisor', 'agent'."
        in result.stderr
    )
    assert stored_user(migrated_url, "carol") is None


def test_users_create_on_an_unmigrated_database(
    fresh_database_url: FreshDatabase, tmp_path: Path
) -> None:
    url = fresh_database_url()
    head = head_revision(Database(url))
    result = run_kokan(
        "users", "create", "dave", "--role", "admin", env={"DATABASE_URL": url}, cwd=tmp_path
    )
    assert result.returncode == 2
    lines = kokan_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kokan: the database at ")
    assert lines[0].endswith(f"is at revision none, not {head}: run `kokan db upgrade`")
    assert result.stdout == ""


def test_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    password = "db-PASSWORD-0c4e"
    url = f"postgresql://kokan:{password}@127.0.0.1:{port}/kokan"
    result = run_kokan(
        "users", "create", "erin", "--role", "agent", env={"DATABASE_URL": url}, cwd=tmp_path
    )
    assert result.returncode == 2
    lines = kokan_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"kokan: cannot reach the database at postgresql://kokan:********@127.0.0.1:{port}/kokan "
        "(database_url from environment DATABASE_URL): "
    )
    assert password not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "name", ["_underscore-first", ".dot-first", "tab\tname", "new\nline", "slash/name", "a" * 200]
)
def test_username_rule_in_the_service(database: Database, name: str) -> None:
    with pytest.raises(InvalidUsername), database.unit_of_work() as session:
        create_user(session, name, "agent")


def test_usernames_the_rule_admits(database: Database) -> None:
    with database.unit_of_work() as session:
        for name in ("a", "agent.smith", "ops@example.org", "x_1-y", "7" * 64):
            assert create_user(session, name, "agent").user.username == name
