"""The embedded redis-server: a real process under the data folder, persistent, never on 6379."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from rq.job import Job, JobStatus

from kokan import embedded_redis
from kokan.embedded_redis import (
    FORBIDDEN_PORT,
    MAX_UNIX_SOCKET_PATH,
    EmbeddedRedis,
    EmbeddedRedisError,
    free_loopback_port,
    redis_server_binary,
)
from kokan.redis_conn import connect
from kokan.work_queues import queue
from tests.conftest import clean_environ, short_tmp_dir

pytestmark = pytest.mark.slow

GONE_DEADLINE_S = 15.0
TCP_URL = re.compile(r"^redis://127\.0\.0\.1:(\d+)/0$")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    directory = short_tmp_dir("kokan-er-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def servers() -> Iterator[list[EmbeddedRedis]]:
    """Every EmbeddedRedis a test registers here is stopped, even when the test fails."""
    started: list[EmbeddedRedis] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, deadline_s: float = GONE_DEADLINE_S) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if is_gone(pid):
            return True
        time.sleep(0.05)
    return is_gone(pid)


def listening_ports(pid: int) -> list[tuple[str, int]]:
    return [
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]


def started(servers: list[EmbeddedRedis], data_dir: Path) -> EmbeddedRedis:
    server = EmbeddedRedis(data_dir)
    servers.append(server)
    server.start()
    return server


def test_starts_on_a_unix_socket_under_the_data_folder_and_answers_ping(
    data_dir: Path, servers: list[EmbeddedRedis]
) -> None:
    server = started(servers, data_dir)
    socket_path = data_dir / "redis" / "redis.sock"

    assert server.url == f"unix://{socket_path}"
    assert socket_path.is_socket()
    client = connect(server.url)
    try:
        assert client.ping() is True
        assert client.info("server")["redis_version"].startswith("6.")
    finally:
        client.close()
    assert server.pid is not None
    process = psutil.Process(server.pid)
    assert process.exe() == os.path.realpath(redis_server_binary())
    assert listening_ports(server.pid) == [], "a unix-socket Redis must open no TCP port"


def test_stop_ends_the_process_and_removes_the_socket(
    data_dir: Path, servers: list[EmbeddedRedis]
) -> None:
    server = started(servers, data_dir)
    pid = server.pid
    assert pid is not None
    assert psutil.pid_exists(pid)

    server.stop()

    assert not psutil.pid_exists(pid), "stop() must end and reap redis-server"
    assert server.pid is None
    assert not (data_dir / "redis" / "redis.sock").exists()
    server.stop()  # a second stop is harmless


def test_a_socket_path_too_long_falls_back_to_a_free_loopback_port(
    data_dir: Path, servers: list[EmbeddedRedis]
) -> None:
    deep = data_dir / ("d" * (MAX_UNIX_SOCKET_PATH - len(str(data_dir))))
    assert len(str(deep / "redis" / "redis.sock")) > MAX_UNIX_SOCKET_PATH

    server = started(servers, deep)

    match = TCP_URL.match(server.url)
    assert match, server.url
    port = int(match.group(1))
    assert port != FORBIDDEN_PORT
    assert server.pid is not None
    assert listening_ports(server.pid) == [("127.0.0.1", port)]
    assert not (deep / "redis" / "redis.sock").exists()
    client = connect(server.url)
    try:
        client.set("kokan:test", "over tcp")
        assert client.get("kokan:test") == b"over tcp"
    finally:
        client.close()


def test_free_loopback_port_never_hands_out_6379(monkeypatch: pytest.MonkeyPatch) -> None:
    offered = [FORBIDDEN_PORT, FORBIDDEN_PORT, 40123]

    class KernelOffering6379:
        """The kernel chooses port-0 binds; make it choose 6379 twice before anything else."""

        def __init__(self, *_args: object) -> None:
            self.port = offered.pop(0)

        def __enter__(self) -> KernelOffering6379:
            return self

        def __exit__(self, *_exc: object) -> None:
            return None

        def bind(self, address: tuple[str, int]) -> None:
            assert address == ("127.0.0.1", 0)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    fake_socket_module = SimpleNamespace(
        socket=KernelOffering6379, AF_INET=socket.AF_INET, SOCK_STREAM=socket.SOCK_STREAM
    )
    monkeypatch.setattr(embedded_redis, "socket", fake_socket_module)

    assert free_loopback_port() == 40123
    assert offered == []


def test_a_data_folder_that_is_a_regular_file_is_a_clear_start_error(
    data_dir: Path, servers: list[EmbeddedRedis]
) -> None:
    not_a_folder = data_dir / "plain-file"
    not_a_folder.write_text("not a folder\n", encoding="utf-8")
    server = EmbeddedRedis(not_a_folder)
    servers.append(server)

    with pytest.raises(EmbeddedRedisError) as caught:
        server.start()

    message = str(caught.value)
    assert str(not_a_folder) in message
    assert "Not a directory" in message
    assert server.pid is None


def test_a_corrupt_append_only_file_is_a_start_error_with_the_reason(
    data_dir: Path, servers: list[EmbeddedRedis]
) -> None:
    redis_dir = data_dir / "redis"
    redis_dir.mkdir()
    (redis_dir / "appendonly.aof").write_bytes(b"this is not an append-only file\r\n*3\r\n")
    server = EmbeddedRedis(data_dir)
    servers.append(server)

    with pytest.raises(EmbeddedRedisError) as caught:
        server.start()

    message = str(caught.value)
    assert message.startswith("redis-server exited with status 1:"), message
    assert "append only file" in message
    assert server.pid is None

    (redis_dir / "appendonly.aof").unlink()
    server.start()  # once the operator moved the bad file away, the same object starts
    assert server.pid is not None


def test_starting_twice_is_refused(data_dir: Path, servers: list[EmbeddedRedis]) -> None:
    server = started(servers, data_dir)
    first_pid = server.pid

    with pytest.raises(EmbeddedRedisError, match="already started"):
        server.start()

    assert server.pid == first_pid


def test_data_persists_across_a_restart(data_dir: Path, servers: list[EmbeddedRedis]) -> None:
    first = started(servers, data_dir)
    client = connect(first.url)
    client.set("kokan:persist", "survives")
    client.hset("kokan:agent:1", mapping={"status": "available", "load": "2"})
    client.close()
    first.stop()

    second = started(servers, data_dir)
    client = connect(second.url)
    try:
        assert client.get("kokan:persist") == b"survives"
        assert client.hgetall("kokan:agent:1") == {b"status": b"available", b"load": b"2"}
    finally:
        client.close()


def test_queued_rq_work_survives_a_restart(data_dir: Path, servers: list[EmbeddedRedis]) -> None:
    first = started(servers, data_dir)
    connection = connect(first.url)
    job = queue(connection).enqueue("kokan.selfcheck.selfcheck", "token-123")
    job_id = job.id
    connection.close()
    first.stop()

    second = started(servers, data_dir)
    connection = connect(second.url)
    try:
        assert queue(connection).job_ids == [job_id]
        again = Job.fetch(job_id, connection=connection)
        assert again.get_status() == JobStatus.QUEUED
        assert again.func_name == "kokan.selfcheck.selfcheck"
        assert again.args == ("token-123",)
    finally:
        connection.close()


def test_a_server_killed_hard_leaves_a_folder_that_starts_again(
    data_dir: Path, servers: list[EmbeddedRedis]
) -> None:
    first = started(servers, data_dir)
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    assert wait_gone(first.pid)
    assert (data_dir / "redis" / "redis.sock").exists(), "the stale socket is left behind"
    first.stop()

    second = started(servers, data_dir)
    client = connect(second.url)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_redis_server_dies_with_the_process_that_started_it(data_dir: Path) -> None:
    """A SIGKILLed owner cannot run stop(); the parent-death signal ends redis-server anyway."""
    owner_script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from kokan.embedded_redis import EmbeddedRedis
        server = EmbeddedRedis(Path({str(data_dir)!r}))
        server.start()
        print(server.pid, flush=True)
        time.sleep(120)
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", owner_script],
        stdout=subprocess.PIPE,
        text=True,
        env=clean_environ(),
        start_new_session=True,
    )
    redis_pid: int | None = None
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()  # returns at the print, or at EOF if the owner dies
        assert line.strip().isdigit(), f"owner printed {line!r}, exit status {owner.poll()}"
        redis_pid = int(line)
        assert psutil.Process(redis_pid).ppid() == owner.pid

        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(GONE_DEADLINE_S)

        assert wait_gone(redis_pid), "redis-server outlived the process that started it"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
        if redis_pid is not None and not is_gone(redis_pid):
            os.kill(redis_pid, signal.SIGKILL)
