"""Migrations up and down, models that match them, and the database settings Kokan relies on.

Runs on SQLite by default and on PostgreSQL when TEST_DATABASE_URL names one.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import delete, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, StatementError

from admin.models import ApiToken, User
from kokan.db import Base, Database, import_models
from kokan.migrate import current_revision, downgrade, head_revision, upgrade
from tests.conftest import FreshDatabase
from tickets.models import Call

KOKAN_TABLES = {"users", "api_tokens", "calls"}
TOKYO = dt.timezone(dt.timedelta(hours=9))


def expected_backend() -> str:
    configured = os.environ.get("TEST_DATABASE_URL")
    return make_url(configured).get_backend_name() if configured else "sqlite"


def table_names(database: Database) -> set[str]:
    database.engine.dispose()  # no cached connection hides a change
    return set(inspect(database.engine).get_table_names())


def test_upgrade_downgrade_and_upgrade_again(fresh_database_url: FreshDatabase) -> None:
    database = Database(fresh_database_url())
    assert database.engine.dialect.name == expected_backend()
    head = head_revision(database)
    assert head is not None
    assert current_revision(database) is None
    assert not KOKAN_TABLES & table_names(database)

    upgrade(database)
    assert table_names(database) >= {*KOKAN_TABLES, "alembic_version"}
    assert current_revision(database) == head

    downgrade(database, "base")
    assert not KOKAN_TABLES & table_names(database)
    assert current_revision(database) is None

    upgrade(database)
    assert table_names(database) >= KOKAN_TABLES
    assert current_revision(database) == head
    # the re-created tables work
    with database.unit_of_work() as session:
        session.add(User(username="after-round-trip", role="agent", password_hash="x"))
    with database.unit_of_work() as session:
        assert session.scalar(select(User.username)) == "after-round-trip"
    database.dispose()


def test_models_match_the_migrations(migrated_database_url: str) -> None:
    import_models()
    database = Database(migrated_database_url)
    assert database.engine.dialect.name == expected_backend()
    assert {*KOKAN_TABLES} <= set(Base.metadata.tables)
    with database.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        differences = compare_metadata(context, Base.metadata)
    database.dispose()
    assert differences == []


def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'pragmas.db'}")
    # every pooled connection, not only the first one
    with database.engine.connect() as first, database.engine.connect() as second:
        for connection in (first, second):
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
    database.dispose()


def test_foreign_keys_are_enforced_and_cascade(database: Database) -> None:
    with (
        pytest.raises(IntegrityError),
        database.unit_of_work() as session,
    ):
        session.add(ApiToken(user_id=987_654, token_hash="0" * 64, prefix="kok_missing"))

    with database.unit_of_work() as session:
        user = User(username="cascade", role="agent", password_hash="x")
        session.add(user)
        session.flush()
        session.add(ApiToken(user_id=user.id, token_hash="1" * 64, prefix="kok_cascade"))
    with database.unit_of_work() as session:
        # a bulk delete bypasses the ORM's own cascade: only the database's ON DELETE acts
        session.execute(delete(User).where(User.username == "cascade"))
    with database.unit_of_work() as session:
        assert session.scalars(select(ApiToken)).all() == []


def test_utc_datetime_round_trips_aware_utc(database: Database) -> None:
    arrived = dt.datetime(2026, 11, 23, 9, 30, 15, 123456, tzinfo=TOKYO)
    with database.unit_of_work() as session:
        session.add(
            Call(
                provider="twilio",
                provider_call_id="CA-round-trip",
                from_number="+821012345678",
                to_number="+82212345678",
                arrived_at=arrived,
            )
        )
    with database.unit_of_work() as session:
        call = session.scalars(select(Call)).one()
        stored = call.arrived_at
        assert stored.tzinfo is not None
        assert stored.utcoffset() == dt.timedelta(0)
        assert stored == arrived
        assert stored.hour == 0  # 09:30 in Tokyo is 00:30 UTC
        # comparisons in SQL see the same instant, whatever zone the bound value is in
        later = dt.datetime(2026, 11, 23, 0, 30, 16, tzinfo=dt.UTC)
        found = session.scalars(select(Call).where(Call.arrived_at < later)).all()
        assert [c.provider_call_id for c in found] == ["CA-round-trip"]
        assert len(call.call_id) == 32
        assert call.channel == "voice"
        assert call.direction == "inbound"


def test_utc_datetime_refuses_naive_datetimes(database: Database) -> None:
    naive = dt.datetime(2026, 11, 23, 9, 30)
    call = Call(
        provider="twilio",
        provider_call_id="CA-naive",
        from_number="+1",
        to_number="+2",
        arrived_at=naive,
    )
    with (
        pytest.raises(StatementError, match="naive datetime given"),
        database.unit_of_work() as session,
    ):
        session.add(call)
    with database.unit_of_work() as session:
        assert session.scalars(select(Call)).all() == []


def test_calls_unique_provider_and_provider_call_id(database: Database) -> None:
    def call(provider: str, provider_call_id: str) -> Call:
        return Call(
            provider=provider, provider_call_id=provider_call_id, from_number="+1", to_number="+2"
        )

    with database.unit_of_work() as session:
        session.add(call("twilio", "CA1"))
        session.add(call("sip", "CA1"))  # the same id from another provider is another call
    with pytest.raises(IntegrityError), database.unit_of_work() as session:
        session.add(call("twilio", "CA1"))
    with database.unit_of_work() as session:
        rows = session.execute(select(Call.provider, Call.provider_call_id)).all()
    assert sorted(rows) == [("sip", "CA1"), ("twilio", "CA1")]


def test_usernames_are_unique_in_the_database(database: Database) -> None:
    with database.unit_of_work() as session:
        session.add(User(username="unique", role="agent", password_hash="x"))
    with pytest.raises(IntegrityError), database.unit_of_work() as session:
        session.add(User(username="unique", role="admin", password_hash="y"))
