"""Checks made before anything starts, each failing with one line that says what and where."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import uuid
from pathlib import Path
from typing import IO

import redis

from kokan import migrate
from kokan.config import LoadedConfig, mask_url
from kokan.db import Database
from kokan.redis_conn import connect

LOCK_FILE = "kokan.lock"


class StartupError(Exception):
    """Kokan cannot start as configured; the CLI prints the message and exits with 2."""


def prepare_data_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        # mkdir(exist_ok=True) would report a regular file as "File exists"
        raise StartupError(f"data folder {path}: exists but is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"data folder {path}: cannot create it ({exc.strerror})") from None
    probe = path / f".write-test-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(f"data folder {path}: not writable ({exc.strerror})") from None


class DataDirLock:
    """An exclusive lock on the data folder, so a second `kokan serve` cannot corrupt the first."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self.handle: IO[str] | None = None

    def acquire(self) -> None:
        handle = open(self.path, "a+", encoding="ascii")  # noqa: SIM115 - held for the process life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StartupError(
                f"data folder {self.path.parent}: already in use by another kokan serve "
                f"(pid {holder}); stop it first or choose another --data-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def check_port_free(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise StartupError(f"host {host!r}: cannot resolve it ({exc.strerror})") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"port {port} on {host} is already in use") from None
            raise StartupError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def check_redis(url: str, loaded: LoadedConfig) -> None:
    client = connect(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        source = loaded.source_of(("redis_url",))
        raise StartupError(
            f"cannot reach Redis at {mask_url(url)} (redis_url from {source}): {exc}"
        ) from None
    finally:
        client.close()


def check_database(database: Database, loaded: LoadedConfig) -> None:
    try:
        database.ping()
    except Exception as exc:
        source = loaded.source_of(("database_url",))
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()
        raise StartupError(
            f"cannot reach the database at {mask_url(database.url)} "
            f"(database_url from {source}): {reason[0] if reason else type(exc).__name__}"
        ) from None


def require_migrated(database: Database) -> None:
    current, head = migrate.current_revision(database), migrate.head_revision(database)
    if current != head:
        raise StartupError(
            f"the database at {mask_url(database.url)} is at revision {current or 'none'}, "
            f"not {head}: run `kokan db upgrade`"
        )
