"""Signed SMS webhooks per second, end to end, on SQLite and PostgreSQL, beside the IVR
bench's bare-Flask baseline measured in the same run.

Kokan runs under gunicorn with 2 workers on 127.0.0.1 over a database holding 10 000
customers; each request is a new message (unique MessageSid) signed as Twilio signs it,
from an existing customer (4 in 5) or a new number, sent from 50 connections. A 200 from
Kokan means the customer, the ticket and the interaction are committed; the bench counts
the interactions afterwards to be sure. The baseline is `bench.bare_twiml` (fixed TwiML)
loaded with the IVR bench's own new-call webhooks.

    .venv/bin/python -m bench.intake [--requests 3000] [--rounds 2] [--no-postgres]

PostgreSQL: BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test) names a
server where a throwaway database is created and dropped; skipped when it does not answer.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import func, insert, select

from bench.ivr_webhook import (
    CONCURRENCY,
    REPO,
    gunicorn,
    kokan_environment,
    report,
    wait_until_up,
)
from bench.loadgen import Result, run
from bench.local_sip import free_listen_port
from kokan.db import Database, normalize_url, utcnow
from kokan.embedded_redis import EmbeddedRedis
from kokan.migrate import upgrade
from tickets.models import Customer, CustomerPhone, Interaction

CUSTOMERS = 10_000
EXISTING_SHARE = 0.8
"""Most messages come from people Kokan already knows."""
POSTGRES_ENV = "BENCH_POSTGRES_URL"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
MESSAGING = "/webhooks/twilio/messaging"
KOKAN_NUMBER = "+81345678901"


def customer_number(index: int) -> str:
    return f"+8190{index:08d}"


def seed(database: Database) -> None:
    now = utcnow()
    with database.unit_of_work() as session:
        session.execute(
            insert(Customer),
            [
                {"id": i, "display_name": f"customer {i}", "created_at": now, "updated_at": now}
                for i in range(1, CUSTOMERS + 1)
            ],
        )
        session.execute(
            insert(CustomerPhone),
            [
                {"customer_id": i, "e164": customer_number(i), "created_at": now}
                for i in range(1, CUSTOMERS + 1)
            ],
        )
    if database.engine.dialect.name == "postgresql":
        with database.engine.begin() as connection:
            connection.exec_driver_sql(
                "SELECT setval('customers_id_seq', (SELECT max(id) FROM customers))"
            )


def sms_params(account: str) -> dict[str, str]:
    sid = "SM" + secrets.token_hex(16)
    if secrets.randbelow(100) < EXISTING_SHARE * 100:
        sender = customer_number(1 + secrets.randbelow(CUSTOMERS))
    else:
        sender = "+8180" + str(secrets.randbelow(10**8)).zfill(8)
    return {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "AccountSid": account,
        "From": sender,
        "To": KOKAN_NUMBER,
        "Body": "注文した商品がまだ届きません。確認をお願いします。",
        "NumMedia": "0",
        "NumSegments": "1",
        "ApiVersion": "2010-04-01",
    }


def post_sms(url: str, token: str, account: str, total: int) -> Result:
    return run(url, url, token, account, total, CONCURRENCY, sms_params)


def interactions(database: Database) -> int:
    with database.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Interaction)) or 0)


@contextmanager
def postgres_database(server: str) -> Iterator[str | None]:
    """A throwaway database on the server, or None when the server does not answer."""
    import psycopg

    admin = normalize_url(server).set(drivername="postgresql")
    name = f"kokan_bench_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(
            admin.render_as_string(hide_password=False), autocommit=True, connect_timeout=3
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL at {admin.render_as_string()} does not answer ({exc}); skipped")
        yield None
        return
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure_kokan(
    label: str,
    database_url: str,
    work: Path,
    redis: EmbeddedRedis,
    requests: int,
    rounds: int,
) -> Result:
    database = Database(database_url)
    upgrade(database)
    seed(database)
    token, account = secrets.token_hex(16), "AC" + secrets.token_hex(16)
    port = free_listen_port()
    public = f"http://127.0.0.1:{port}"
    metrics = work / f"metrics-{label}"
    metrics.mkdir()
    env = kokan_environment(
        work, database_url, redis, public, token, account, metrics.name, log_level="WARNING"
    )
    process = gunicorn("kokan.app:create_app()", port, env)
    try:
        wait_until_up(f"{public}/healthz")
        url = public + MESSAGING
        post_sms(url, token, account, 200)  # warm up
        best: Result | None = None
        for _ in range(rounds):
            before = interactions(database)
            result = post_sms(url, token, account, requests)
            stored = interactions(database) - before
            if stored != requests - result.errors:
                raise SystemExit(
                    f"bench: {requests - result.errors} answered 200 but {stored} stored"
                )
            report(f"Kokan SMS, {label}", result)
            if best is None or result.rps > best.rps:
                best = result
        assert best is not None
        return best
    finally:
        process.terminate()
        process.wait(10)
        database.dispose()


def measure_bare(work: Path, requests: int, rounds: int) -> Result:
    port = free_listen_port()
    twiml = work / "empty.xml"
    twiml.write_text('<?xml version="1.0" encoding="UTF-8"?><Response />', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOKAN_")} | {
        "BENCH_TWIML_FILE": str(twiml),
        "PYTHONPATH": str(REPO),
    }
    process = gunicorn("bench.bare_twiml:create_app()", port, env)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz")
        url = f"http://127.0.0.1:{port}/webhooks/twilio/voice"
        token, account = secrets.token_hex(16), "AC" + secrets.token_hex(16)
        run(url, url, token, account, 300, CONCURRENCY)
        best: Result | None = None
        for _ in range(rounds):
            result = run(url, url, token, account, requests, CONCURRENCY)
            report("bare Flask TwiML", result)
            if best is None or result.rps > best.rps:
                best = result
        assert best is not None
        return best
    finally:
        process.terminate()
        process.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kokan-bench-intake-", dir="/tmp"))
    redis = EmbeddedRedis(work / "var")
    results: dict[str, Result] = {}
    try:
        redis.start()
        print(f"{args.requests} signed SMS webhooks per round, {CONCURRENCY} connections")
        results["bare Flask TwiML"] = measure_bare(work, args.requests, args.rounds)
        sqlite_url = f"sqlite:///{work / 'var' / 'kokan.db'}"
        results["SQLite"] = measure_kokan(
            "SQLite", sqlite_url, work, redis, args.requests, args.rounds
        )
        if not args.no_postgres:
            server = os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES)
            with postgres_database(server) as url:
                if url is not None:
                    results["PostgreSQL"] = measure_kokan(
                        "PostgreSQL", url, work, redis, args.requests, args.rounds
                    )
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    bare = results["bare Flask TwiML"]
    print()
    print(f"best of {args.rounds} rounds, with {CUSTOMERS} customers already stored:")
    for name, result in results.items():
        print(
            f"  {name:<17} {result.rps:>7.0f} req/s  p50 {result.p50:>6.1f} ms  "
            f"p99 {result.p99:>6.1f} ms  {result.rps / bare.rps:>5.2f} x bare"
        )
    return 0 if all(result.errors == 0 for result in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
