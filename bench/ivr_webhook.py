"""Kokan's IVR webhook against a bare Flask endpoint returning the same TwiML, same run.

Both run under gunicorn with 2 workers on 127.0.0.1 and take the same load: new calls
(unique CallSids), signed as Twilio signs them, from 50 concurrent connections. Kokan does
its whole job per request: signature check, call-detail row, engine, TwiML, state in Redis.

    .venv/bin/python -m bench.ivr_webhook [--requests 4000] [--rounds 2]

Targets (issue 3): Kokan >= 0.5 x the bare endpoint's requests/s, and p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from bench.loadgen import Result, new_call_params, run, twilio_signature
from ivr.publishing import publish
from ivr.validator import CheckContext
from kokan.db import Database
from kokan.embedded_redis import EmbeddedRedis
from kokan.migrate import upgrade

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY = 50
WORKERS = 2
THROUGHPUT_RATIO_TARGET = 0.5
P99_TARGET_MS = 50.0
QUEUES = ("billing", "support", "sales")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback server
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bench: {url} did not come up")


def gunicorn(app: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "python:kokan.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(WORKERS),
            app,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )


def report(name: str, result: Result) -> None:
    print(
        f"{name:<18} {result.rps:>9.0f} req/s   p50 {result.p50:>6.1f} ms   "
        f"p99 {result.p99:>6.1f} ms   errors {result.errors}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kokan-bench-", dir="/tmp"))
    processes: list[subprocess.Popen[bytes]] = []
    redis = EmbeddedRedis(work / "var")
    try:
        redis.start()
        database_url = f"sqlite:///{work / 'var' / 'kokan.db'}"
        database = Database(database_url)
        upgrade(database)
        context = CheckContext.for_directory(REPO / "flows", QUEUES)
        with database.unit_of_work() as session:
            for name in ("main", "survey"):
                source = (REPO / "flows" / f"{name}.yaml").read_text(encoding="utf-8")
                publish(session, name, source, f"flows/{name}.yaml", context, by="bench")
        database.dispose()

        token, account = secrets.token_hex(16), "AC" + secrets.token_hex(16)
        kokan_port, bare_port = free_port(), free_port()
        public = f"http://127.0.0.1:{kokan_port}"
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("KOKAN_")}
        kokan_env = base_env | {
            "KOKAN_CONFIG": str(REPO / "config.yaml"),
            "KOKAN_DATA_DIR": str(work / "var"),
            "KOKAN_FLOWS_DIR": str(REPO / "flows"),
            "KOKAN_PUBLIC_URL": public,
            "KOKAN_PORT": str(kokan_port),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.url,
            "TWILIO_AUTH_TOKEN": token,
            "TWILIO_ACCOUNT_SID": account,
            "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
            "KOKAN_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        }
        (work / "metrics").mkdir()
        processes.append(gunicorn("kokan.app:create_app()", kokan_port, kokan_env))
        wait_until_up(f"{public}/healthz")

        voice = "/webhooks/twilio/voice"
        params = new_call_params(account)
        request = urllib.request.Request(  # noqa: S310 - loopback
            public + voice,
            data=urllib.parse.urlencode(params).encode(),
            headers={"X-Twilio-Signature": twilio_signature(token, public + voice, params)},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
            twiml = answer.read().decode()
        if "<Gather" not in twiml:
            raise SystemExit(f"bench: Kokan did not answer with the flow's TwiML: {twiml[:200]}")
        twiml_file = work / "first-step.xml"
        twiml_file.write_text(twiml, encoding="utf-8")
        processes.append(
            gunicorn(
                "bench.bare_twiml:create_app()",
                bare_port,
                base_env
                | {
                    "BENCH_TWIML_FILE": str(twiml_file),
                    "PYTHONPATH": str(REPO),
                },
            )
        )
        wait_until_up(f"http://127.0.0.1:{bare_port}/healthz")

        targets = {
            "bare Flask TwiML": f"http://127.0.0.1:{bare_port}{voice}",
            "Kokan IVR webhook": public + voice,
        }
        for url in targets.values():  # warm both up
            run(url, url, token, account, 300, CONCURRENCY)
        best: dict[str, Result] = {}
        for round_number in range(1, args.rounds + 1):
            print(
                f"round {round_number}: {args.requests} new calls each, {CONCURRENCY} connections"
            )
            for name, url in targets.items():
                result = run(url, url, token, account, args.requests, CONCURRENCY)
                report(name, result)
                if name not in best or result.rps > best[name].rps:
                    best[name] = result
        bare, kokan = best["bare Flask TwiML"], best["Kokan IVR webhook"]
        ratio = kokan.rps / bare.rps
        print()
        print(f"throughput ratio Kokan / bare: {ratio:.2f} (target >= {THROUGHPUT_RATIO_TARGET})")
        print(f"Kokan p99: {kokan.p99:.1f} ms (target < {P99_TARGET_MS:.0f} ms)")
        met = ratio >= THROUGHPUT_RATIO_TARGET and kokan.p99 < P99_TARGET_MS
        print("targets met" if met else "targets NOT met")
        return 0 if kokan.errors == 0 else 1
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
