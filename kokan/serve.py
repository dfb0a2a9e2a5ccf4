"""`kokan serve`: one supervisor that owns the embedded Redis, the web server, the workers
and the SIP endpoint.

Children run in their own sessions (a terminal's Ctrl-C reaches only the supervisor,
which stops them in order: web, workers and the SIP endpoint side by side, then Redis)
and with a parent-death signal, so even a SIGKILLed supervisor leaves no orphan behind.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from admin.models import Role
from admin.services import count_users, create_user
from kokan import migrate
from kokan.config import CONFIG_ENV, LoadedConfig, SipSettings, mask_url
from kokan.db import Database
from kokan.embedded_redis import EmbeddedRedis, EmbeddedRedisError, parent_death_signal
from kokan.metrics import MULTIPROC_ENV
from kokan.secret_key import ensure_secret_key
from kokan.startup import (
    DataDirLock,
    StartupError,
    check_database,
    check_port_free,
    check_redis,
    prepare_data_dir,
)

DEMO_ADMIN = "admin"
CHILD_STOP_TIMEOUT_S = 20.0
"""rq finishes the job in hand on SIGTERM; gunicorn drains requests within its graceful timeout."""
GROUP_GRACE_S = 3.0
"""How long a child's leftover processes get to finish on their own, then after SIGTERM."""
GROUP_POLL_S = 0.05
WEB_READY_TIMEOUT_S = 30.0
SUPERVISE_INTERVAL_S = 0.5
METRICS_SUBDIR = "metrics"

log = logging.getLogger("kokan.serve")


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    asked: bool = False

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            self.command,
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=parent_death_signal(),  # only prctl and getppid, no locks taken
            start_new_session=True,
        )

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def ask_to_stop(self) -> None:
        """One SIGTERM only: a second one makes rq abandon the job in hand (cold shutdown)."""
        if self.process is not None and self.process.poll() is None and not self.asked:
            self.process.send_signal(signal.SIGTERM)
            self.asked = True

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.ask_to_stop()
            try:
                self.process.wait(CHILD_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s did not stop within %.0f s; killing it", self.name, CHILD_STOP_TIMEOUT_S
                )
                self.process.kill()
                self.process.wait()
        self._stop_group(self.process.pid)

    def _stop_group(self, group: int) -> None:
        """The child's own children (rq's scheduler and work horse, gunicorn's workers) share
        its process group; none of them may outlive it."""
        for stop_signal, grace in ((None, GROUP_GRACE_S), (signal.SIGTERM, GROUP_GRACE_S)):
            if stop_signal is not None and not _signal_group(group, stop_signal):
                return
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if not _signal_group(group, 0):
                    return
                time.sleep(GROUP_POLL_S)
        log.warning("%s left processes behind; killing them", self.name)
        _signal_group(group, signal.SIGKILL)


def _signal_group(group: int, signum: int) -> bool:
    """False when no process of the group is left."""
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Supervisor:
    loaded: LoadedConfig
    config_file: Path | None
    stop_requested: threading.Event = field(default_factory=threading.Event)
    children: list[Child] = field(default_factory=list)

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        self.stop_requested.set()

    def run(self) -> int:
        settings = self.loaded.settings
        data_dir = settings.resolved_data_dir
        prepare_data_dir(data_dir)
        lock = DataDirLock(data_dir)
        lock.acquire()
        embedded: EmbeddedRedis | None = None
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        try:
            check_port_free(settings.host, settings.port)
            check_port_free(settings.host, settings.effective_live_port)
            if settings.sip.enabled:
                check_sip_ports_free(settings.sip)
            database = Database(settings.effective_database_url)
            check_database(database, self.loaded)
            if settings.redis_url:
                check_redis(settings.redis_url, self.loaded)
                redis_url = settings.redis_url
            else:
                embedded = EmbeddedRedis(data_dir)
                try:
                    embedded.start()
                except EmbeddedRedisError as exc:
                    raise StartupError(f"embedded Redis in {embedded.directory}: {exc}") from None
                redis_url = embedded.url
            migrate.upgrade(database)
            ensure_secret_key(settings)
            self._ensure_demo_admin(database)
            self._publish_flows_on_first_start(database)
            database.dispose()
            self._start_children(data_dir, redis_url)
            base = f"http://{_url_host(settings.host)}:{settings.port}"
            if self._wait_for_web(base):
                print(
                    f"Kokan is serving on {base} ({self._sip_part()}data folder {data_dir}, "
                    f"Redis {mask_url(redis_url)}); Ctrl-C stops it",
                    flush=True,
                )
            return self._supervise()
        finally:
            # web and worker stop side by side; Redis only after both have let go of it
            for child in self.children:
                child.ask_to_stop()
            for child in self.children:
                child.stop()
            if embedded is not None:
                embedded.stop()
            lock.release()

    def _ensure_demo_admin(self, database: Database) -> None:
        with database.unit_of_work() as session:
            if count_users(session) > 0:
                return
            created = create_user(session, DEMO_ADMIN, Role.ADMIN.value)
        print(
            f"Demo admin created: username {DEMO_ADMIN!r}, one-time password "
            f"{created.password!r} (shown only this once; change it after signing in)",
            flush=True,
        )

    def _publish_flows_on_first_start(self, database: Database) -> None:
        """A new installation answers calls at once: publish the flows folder if nothing is."""
        from ivr.loader import FlowInvalid, read_flow_text
        from ivr.publishing import count_published, publish
        from ivr.validator import CheckContext

        settings = self.loaded.settings
        flows_dir = settings.flows_dir
        with database.unit_of_work() as session:
            if count_published(session) > 0:
                return
        context = CheckContext.for_directory(flows_dir, frozenset(settings.queues))
        for path in sorted(flows_dir.glob("*.yaml")):
            try:
                with database.unit_of_work() as session:
                    published = publish(
                        session,
                        path.stem,
                        read_flow_text(path),
                        str(path),
                        context,
                        by="kokan-serve",
                    )
            except FlowInvalid as exc:
                print(f"kokan: {path} not published:\n{exc}", file=sys.stderr, flush=True)
                continue
            print(f"Published flow {published.flow} version {published.version}", flush=True)

    def _child_env(self, data_dir: Path, redis_url: str) -> dict[str, str]:
        settings = self.loaded.settings
        env = dict(os.environ)
        env.update(
            {
                "KOKAN_DATA_DIR": str(data_dir),
                "KOKAN_HOST": settings.host,
                "KOKAN_PORT": str(settings.port),
                "REDIS_URL": redis_url,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.config_file is not None:
            env[CONFIG_ENV] = str(self.config_file.resolve())
        elif Path("config.yaml").exists():
            env[CONFIG_ENV] = str(Path("config.yaml").resolve())
        metrics_dir = data_dir / METRICS_SUBDIR
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir()
        env[MULTIPROC_ENV] = str(metrics_dir)
        return env

    def _start_children(self, data_dir: Path, redis_url: str) -> None:
        settings = self.loaded.settings
        env = self._child_env(data_dir, redis_url)
        self.children = [
            Child("worker", [sys.executable, "-m", "kokan", "worker"]),
            Child("router", [sys.executable, "-m", "kokan", "router"]),
            Child("cron", [sys.executable, "-m", "kokan", "cron"]),
            Child("web", web_command(settings.host, settings.port, settings.web_workers)),
            Child(
                "live",
                live_command(settings.host, settings.effective_live_port, settings.live_threads),
            ),
        ]
        if settings.sip.enabled:
            self.children.append(Child("sip", sip_command(settings.sip)))
        for child in self.children:
            child.start(env)
            log.info("started %s (pid %s)", child.name, child.process.pid if child.process else "?")

    def _sip_part(self) -> str:
        """Where callers dial in, for the serving line (the SIP child may still be starting:
        pjsua answers within a second or two of the web server)."""
        sip = self.loaded.settings.sip
        if not sip.enabled:
            return ""
        last = sip.port + sip.workers - 1
        ports = str(sip.port) if last == sip.port else f"{sip.port}-{last}"
        return f"SIP on {sip.host}:{ports}, "

    def _wait_for_web(self, base: str) -> bool:
        deadline = time.monotonic() + WEB_READY_TIMEOUT_S
        while time.monotonic() < deadline and not self.stop_requested.is_set():
            if any(child.exited() is not None for child in self.children):
                return False
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1) as answer:  # noqa: S310
                    if answer.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            self.stop_requested.wait(0.1)
        return False

    def _supervise(self) -> int:
        while not self.stop_requested.wait(SUPERVISE_INTERVAL_S):
            for child in self.children:
                status = child.exited()
                if status is not None:
                    log.error("%s exited with status %s; stopping Kokan", child.name, status)
                    print(f"kokan: {child.name} exited with status {status}", file=sys.stderr)
                    return 1
        return 0


LIVE_WORKER_TIMEOUT_S = 60
"""gthread workers heartbeat from their main thread, so a stream held open longer than this
is fine; the timeout only catches a worker that stopped altogether."""


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _gunicorn(host: str, port: int, *options: str) -> list[str]:
    """gunicorn serving Kokan's app with Kokan's settings on host:port."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:kokan.gunicorn_conf",
        "--bind",
        f"{_url_host(host)}:{port}",
        *options,
        "kokan.app:create_app()",
    ]


def web_command(host: str, port: int, workers: int) -> list[str]:
    """Sync workers: every request is short, and a process per request in flight is the
    fastest way gunicorn serves them (webhooks, the API, the pages)."""
    return _gunicorn(host, port, "--workers", str(workers))


def live_command(host: str, port: int, threads: int) -> list[str]:
    """The same app for the pages' live updates (Server-Sent Events): each open page holds
    a thread while it waits, so one threaded process serves them apart from the sync web
    workers, which a held connection would take out of service."""
    return _gunicorn(
        host,
        port,
        "--workers",
        "1",
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--timeout",
        str(LIVE_WORKER_TIMEOUT_S),
    )


def sip_command(sip: SipSettings) -> list[str]:
    """`kokan sip` with the effective SIP settings as options: the child reads the same
    config file, but `kokan serve --sip-host/--sip-port` exist only on this command line.
    One worker (the default) holds 4 calls; `sip.workers` above 1 makes it a pool."""
    return [
        sys.executable,
        "-m",
        "kokan",
        "sip",
        "--sip-host",
        sip.host,
        "--sip-port",
        str(sip.port),
        "--rtp-port",
        str(sip.rtp_port),
        "--workers",
        str(sip.workers),
    ]


def check_sip_ports_free(sip: SipSettings) -> None:
    """Before anything starts: every SIP port of the endpoint (one per worker) free for UDP
    and TCP, as pjsua listens on both. A taken port is named with the settings that move
    it; otherwise the SIP child would refuse to start after everything else had."""
    for port in range(sip.port, sip.port + sip.workers):
        for kind, transport in ((socket.SOCK_DGRAM, "UDP"), (socket.SOCK_STREAM, "TCP")):
            try:
                infos = socket.getaddrinfo(sip.host, port, type=kind)
            except socket.gaierror as exc:
                raise StartupError(
                    f"sip.host {sip.host!r}: cannot resolve it ({exc.strerror})"
                ) from None
            family, _kind, proto, _name, address = infos[0]
            with socket.socket(family, kind, proto) as probe:
                if kind == socket.SOCK_STREAM:  # a closing connection's TIME_WAIT is no owner
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(address)
                except OSError as exc:
                    taken = exc.errno == errno.EADDRINUSE
                    reason = "is already in use" if taken else f"cannot be used ({exc.strerror})"
                    raise StartupError(
                        f"SIP port {port} ({transport}) on {sip.host} {reason}; choose another "
                        "with --sip-port (sip.port) or start without SIP (--no-sip)"
                    ) from None
