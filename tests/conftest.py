"""Real parts only: a real redis-server and a real database, chosen by the environment.

- TEST_REDIS_URL unset: an embedded redis-server started with Kokan's own EmbeddedRedis.
- TEST_DATABASE_URL unset: SQLite files under pytest's tmp folders; set to a PostgreSQL
  URL, each test session (and each test that asks for a fresh database) gets its own
  database created there and dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import yaml
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr
from sqlalchemy import delete
from sqlalchemy.engine import make_url

from kokan.app import create_app
from kokan.config import Settings, load
from kokan.db import Base, Database, import_models, normalize_url
from kokan.embedded_redis import EmbeddedRedis
from kokan.migrate import upgrade
from kokan.redis_conn import connect

REPO_ROOT = Path(__file__).resolve().parent.parent
CLI_TIMEOUT_S = 60
SCRUBBED_ENV_PREFIXES = ("KOKAN_", "DATABASE_URL", "REDIS_URL", "TWILIO_", "PROMETHEUS_")

FreshDatabase = Callable[[], str]


def short_tmp_dir(prefix: str) -> Path:
    """Unix socket paths must stay under 108 bytes; pytest's tmp_path can be longer."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def per_worker_redis_url(configured: str) -> str:
    """TEST_REDIS_URL's database for this pytest-xdist worker: gw0 keeps it, gwN takes the
    Nth after it, so parallel workers never flush each other's keys."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    offset = int(worker.removeprefix("gw") or 0)
    if offset == 0:
        return configured
    parts = urlsplit(configured)
    first = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{first + offset}"))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    configured = os.environ.get("TEST_REDIS_URL")
    if configured:
        yield per_worker_redis_url(configured)
        return
    directory = short_tmp_dir("kokan-test-redis-")
    server = EmbeddedRedis(directory)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = connect(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


class DatabaseFactory:
    """Empty databases on the backend under test, removed when the session ends."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server_url = os.environ.get("TEST_DATABASE_URL")
        self.created: list[str] = []

    @property
    def is_postgresql(self) -> bool:
        return bool(self.server_url) and make_url(self.server_url or "").get_backend_name() == (
            "postgresql"
        )

    def new(self) -> str:
        name = f"kokan_test_{uuid.uuid4().hex[:12]}"
        if not self.server_url:
            return f"sqlite:///{self.root / (name + '.db')}"
        import psycopg

        admin_url = normalize_url(self.server_url).set(drivername="postgresql")
        with psycopg.connect(
            admin_url.render_as_string(hide_password=False), autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return admin_url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if not self.server_url or not self.created:
            return
        import psycopg

        admin_url = normalize_url(self.server_url).set(drivername="postgresql")
        with psycopg.connect(
            admin_url.render_as_string(hide_password=False), autocommit=True
        ) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("databases"))
    try:
        yield factory
    finally:
        factory.drop_all()


@pytest.fixture
def fresh_database_url(database_factory: DatabaseFactory) -> FreshDatabase:
    """A callable returning the URL of a new, empty database (not migrated)."""
    return database_factory.new


@pytest.fixture(scope="session")
def migrated_database_url(database_factory: DatabaseFactory) -> str:
    url = database_factory.new()
    database = Database(url)
    upgrade(database)
    database.dispose()
    return url


@pytest.fixture
def database(migrated_database_url: str) -> Iterator[Database]:
    """The session's migrated database, emptied after each test."""
    import_models()
    db = Database(migrated_database_url)
    try:
        yield db
    finally:
        with db.unit_of_work() as session:
            for table in reversed(Base.metadata.sorted_tables):
                session.execute(delete(table))
        db.dispose()


@pytest.fixture
def settings(tmp_path: Path, migrated_database_url: str, redis_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=migrated_database_url,
        redis_url=redis_url,
        secret_key=SecretStr("test-secret-key-" + uuid.uuid4().hex),
    )


@pytest.fixture
def app(settings: Settings, database: Database, redis_client: redis.Redis) -> Flask:
    return create_app({"TESTING": True, "KOKAN_SETTINGS": settings})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def clean_environ() -> dict[str, str]:
    """The environment without any setting that could leak into a Kokan under test."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(SCRUBBED_ENV_PREFIXES)
    }


def run_kokan(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `kokan` command line as a user would."""
    full_env = clean_environ()
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "kokan", *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def configure_jobs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    sections: dict[str, Any],
    env: dict[str, str] | None = None,
) -> Settings:
    """Write config.yaml as rq jobs read it under `kokan worker` (they load it themselves),
    on the test's database and Redis, with the environment scrubbed so nothing leaks in;
    `env` holds the secrets that only come from the environment."""
    for name in list(os.environ):
        if name.startswith(SCRUBBED_ENV_PREFIXES):
            monkeypatch.delenv(name)
    document = {
        "data_dir": str(settings.data_dir),
        "database_url": settings.database_url,
        "redis_url": settings.redis_url,
        **sections,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("KOKAN_CONFIG", str(path))
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    return load().settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files that start real SIP peers or servers first: under ./run's two processes
    (whole files each) the long files are spread first and the short ones fill in, instead
    of one process finishing a long file alone at the end."""
    items.sort(
        key=lambda item: (
            0 if item.get_closest_marker("media") or item.get_closest_marker("slow") else 1
        )
    )
