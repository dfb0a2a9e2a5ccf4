"""Instructions per new-call webhook, Kokan against the bare Flask endpoint, counted by
valgrind's callgrind in the same run.

    .venv/bin/python -m bench.ivr_instructions [--requests 300]

bench.ivr_webhook measures what the issue asks (requests/s under gunicorn); on a shared
2-core machine its rounds move by a fifth with the neighbours' load. An instruction count
repeats whatever else the machine does, so a change to the hot path can be judged here
first. Both apps are called in process through WSGI with the same kind of pre-signed
new-call webhooks; gunicorn, the sockets and the load generator are left out (the same for
both), and only the measured requests are counted, after warm-up ones. Kokan's Redis round
trip counts on the client side; redis-server itself is not under valgrind. Needs valgrind
(Debian's package).
"""

from __future__ import annotations

import argparse
import functools
import gc
import io
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.ivr_webhook import REPO, prepare_kokan
from bench.loadgen import signed_bodies
from kokan.embedded_redis import EmbeddedRedis

WARM_UP_REQUESTS = 100
"""Enough for every cache on the path (flow versions, rendered TwiML, prompt files)."""
VOICE_PATH = "/webhooks/twilio/voice"
TWIML_FILE_ENV = "BENCH_TWIML_FILE"
"""The Kokan child writes its first answer there; the bare child serves it."""
COUNTED_FUNCTION = "functools_reduce"
"""callgrind counts only inside this C function: the measured requests run under it."""

Environ = dict[str, Any]
WsgiApp = Callable[[Environ, Callable[..., Any]], Iterable[bytes]]


def signed_environs(public: str, token: str, account: str, total: int) -> list[Environ]:
    """`total` new calls' webhooks (bench.loadgen's bodies and signatures) as the WSGI
    server would hand them over."""
    host = urllib.parse.urlsplit(public).netloc
    environs = []
    for body, signature in signed_bodies(public + VOICE_PATH, token, account, total):
        encoded = body.encode()
        environs.append(
            {
                "REQUEST_METHOD": "POST",
                "PATH_INFO": VOICE_PATH,
                "QUERY_STRING": "",
                "SERVER_NAME": host.partition(":")[0],
                "SERVER_PORT": host.partition(":")[2] or "80",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(encoded),
                "wsgi.errors": sys.stderr,
                "wsgi.multithread": False,
                "wsgi.multiprocess": True,
                "wsgi.run_once": False,
                "CONTENT_TYPE": "application/x-www-form-urlencoded",
                "CONTENT_LENGTH": str(len(encoded)),
                "HTTP_HOST": host,
                "HTTP_X_TWILIO_SIGNATURE": signature,
            }
        )
    return environs


def answer(app: WsgiApp, environ: Environ) -> bytes:
    statuses: list[str] = []

    def start_response(status: str, _headers: Any, _exc_info: Any = None) -> None:
        statuses.append(status)

    body = b"".join(app(environ, start_response))
    if not statuses or not statuses[0].startswith("200"):
        raise SystemExit(f"bench: {statuses} {body[:200]!r}")
    return body


def child(which: str, total: int) -> None:
    """Runs under valgrind: make the app, warm it up, answer `total` counted requests."""
    public = os.environ["BENCH_PUBLIC_URL"]
    token, account = os.environ["BENCH_AUTH_TOKEN"], os.environ["BENCH_ACCOUNT_SID"]
    app: WsgiApp
    if which == "kokan":
        from kokan.app import create_app

        app = create_app()
    else:
        from bench.bare_twiml import create_app as create_bare_app

        app = create_bare_app()
    warm_up = signed_environs(public, token, account, WARM_UP_REQUESTS)
    counted = signed_environs(public, token, account, total)
    first = answer(app, warm_up[0])
    if which == "kokan":
        if b"<Gather" not in first:
            raise SystemExit(f"bench: Kokan did not answer with the flow's TwiML: {first[:200]!r}")
        Path(os.environ[TWIML_FILE_ENV]).write_bytes(first)
    for environ in warm_up[1:]:
        answer(app, environ)
    gc.freeze()  # as kokan.gunicorn_conf does in each worker
    functools.reduce(lambda _previous, environ: answer(app, environ), counted, b"")


def count(which: str, env: dict[str, str], total: int, work: Path) -> int:
    """Instructions inside the counted requests of one child under callgrind."""
    out = work / f"{which}.callgrind"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        f"--toggle-collect={COUNTED_FUNCTION}",
        f"--log-file={work / f'{which}.valgrind.log'}",
        sys.executable,
        "-m",
        "bench.ivr_instructions",
        "--child",
        which,
        "--requests",
        str(total),
    ]
    finished = subprocess.run(
        command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    if finished.returncode != 0:
        raise SystemExit(f"bench: the {which} child failed: {finished.stderr.decode()[-800:]}")
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"bench: no totals in {out}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--child", choices=("kokan", "bare"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.requests)
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("bench: needs valgrind on PATH (apt-get install valgrind)")

    work = Path(tempfile.mkdtemp(prefix="kokan-bench-", dir="/tmp"))
    redis = EmbeddedRedis(work / "var")
    try:
        public = "http://127.0.0.1:8000"  # never listened on: requests go in through WSGI
        prepared = prepare_kokan(work, redis, public)
        shared = {
            "BENCH_PUBLIC_URL": public,
            "BENCH_AUTH_TOKEN": prepared.token,
            "BENCH_ACCOUNT_SID": prepared.account,
            TWIML_FILE_ENV: str(work / "first-step.xml"),
            "PYTHONPATH": str(REPO),
        }
        kokan = count("kokan", prepared.env | shared, args.requests, work)
        bare = count("bare", prepared.base_env | shared, args.requests, work)
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    per_kokan, per_bare = kokan / args.requests, bare / args.requests
    print(f"instructions per new-call webhook ({args.requests} counted requests each)")
    print(f"bare Flask TwiML   {per_bare:>12,.0f}")
    print(f"Kokan IVR webhook  {per_kokan:>12,.0f}")
    print(f"Kokan / bare: {per_kokan / per_bare:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
