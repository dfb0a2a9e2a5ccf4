"""`kokan serve` as a user runs it: a real process tree (supervisor, redis-server, gunicorn, rq).

Every process a test starts is killed in a fixture's `finally`, so a failing test leaves
nothing behind; the tests themselves prove that Kokan leaves nothing behind either.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import redis
import requests
from argon2 import PasswordHasher
from rq import Worker

from admin.services import find_user
from bench.local_sip import (
    RTP_PORTS,
    SIP_PORTS,
    free_listen_port,
    free_port_run,
    sip_options_answered,
)
from kokan.config import RTP_PORTS_PER_CALL, SIP_MAX_CALLS
from kokan.db import Database
from kokan.redis_conn import connect
from tests.conftest import DatabaseFactory, clean_environ, run_kokan, short_tmp_dir

pytestmark = pytest.mark.slow

START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0
"""The supervisor gives each child up to 20 s; a healthy stop takes about one second."""
GONE_DEADLINE_S = 30.0
POLL_S = 0.05
SERVING_LINE = "Kokan is serving on"
DEMO_ADMIN_LINE = "Demo admin created"
ONE_TIME_PASSWORD = re.compile(r"one-time password '([^']+)'")
SIP_READY_DEADLINE_S = 30.0
"""The SIP child imports Kokan and pjsua and speaks its apology prompt once before it
listens; on a busy machine that takes several seconds after the web server answers."""


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_all_gone(pids: list[int], deadline_s: float = GONE_DEADLINE_S) -> list[int]:
    """Poll until every pid is gone; return those still alive at the deadline."""
    deadline = time.monotonic() + deadline_s
    alive = [pid for pid in pids if not is_gone(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_S)
        alive = [pid for pid in alive if not is_gone(pid)]
    return alive


def processes_of(data_dir: Path) -> list[psutil.Process]:
    """Live processes that belong to the Kokan serving this data folder, found without
    knowing their pids: the supervisor and redis-server name the folder on their command
    line, and the supervisor hands KOKAN_DATA_DIR to every child (and so to grandchildren)."""
    found = []
    for process in psutil.process_iter(["cmdline", "environ", "status"]):
        if process.pid == os.getpid() or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = process.info["cmdline"] or []
        environ = process.info["environ"] or {}
        if environ.get("KOKAN_DATA_DIR") == str(data_dir) or any(
            str(data_dir) in part for part in cmdline
        ):
            found.append(process)
    return found


def describe(processes: list[psutil.Process]) -> list[str]:
    described = []
    for process in processes:
        try:
            described.append(f"{process.pid} {' '.join(process.cmdline())}")
        except psutil.Error:
            described.append(f"{process.pid} (gone)")
    return described


@dataclass
class Served:
    """One `kokan serve` started by a test."""

    process: subprocess.Popen[bytes]
    root: Path
    data_dir: Path
    port: int
    sip_port: int
    stdout_path: Path
    stderr_path: Path
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis" / "redis.sock"

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def _context(self) -> str:
        return f"\n--- stdout ---\n{self.stdout()}\n--- stderr (tail) ---\n{self.stderr()[-4000:]}"

    def wait_serving(self) -> str:
        """The supervisor prints the serving line once the web server answers."""
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            for line in self.stdout().splitlines():
                if line.startswith(SERVING_LINE):
                    return line
            if self.process.poll() is not None:
                pytest.fail(f"kokan serve exited with {self.process.returncode}{self._context()}")
            time.sleep(POLL_S)
        pytest.fail(f"no {SERVING_LINE!r} line within {START_DEADLINE_S:.0f} s{self._context()}")

    def wait_sip_answers(self) -> str:
        """Poll the SIP port with OPTIONS until the endpoint answers; its status line."""
        deadline = time.monotonic() + SIP_READY_DEADLINE_S
        while time.monotonic() < deadline:
            answer = sip_options_answered(self.sip_port)
            if answer is not None:
                return answer
            if self.process.poll() is not None:
                pytest.fail(f"kokan serve exited with {self.process.returncode}{self._context()}")
            time.sleep(POLL_S)  # a closed UDP port refuses at once
        pytest.fail(f"no SIP answer on port {self.sip_port}{self._context()}")

    def wait_ready(self) -> dict[str, object]:
        """The serving line, then /readyz 200: returns the readiness body."""
        self.wait_serving()
        deadline = time.monotonic() + START_DEADLINE_S
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                answer = requests.get(f"{self.base_url}/readyz", timeout=5)
            except requests.RequestException as exc:
                last = repr(exc)
            else:
                last = f"{answer.status_code} {answer.text}"
                if answer.status_code == 200:
                    body: dict[str, object] = answer.json()
                    return body
            time.sleep(POLL_S)
        pytest.fail(f"/readyz never answered 200 (last: {last}){self._context()}")

    def tree(self) -> list[psutil.Process]:
        """Every descendant of the supervisor, remembered for the fixture's clean-up."""
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.seen.update((child.pid, child) for child in children)
        return children

    def wait_exit(self) -> int:
        try:
            return self.process.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"kokan serve did not exit within {STOP_DEADLINE_S:.0f} s{self._context()}")

    def kill_everything(self) -> None:
        victims: dict[int, psutil.Process] = {}
        if self.process.poll() is None:
            try:
                for child in psutil.Process(self.process.pid).children(recursive=True):
                    victims[child.pid] = child
            except psutil.NoSuchProcess:
                pass
        for process in processes_of(self.data_dir):
            victims.setdefault(process.pid, process)
        for pid, process in self.seen.items():
            victims.setdefault(pid, process)
        if self.process.poll() is None:
            self.process.kill()
        for process in victims.values():
            with contextlib.suppress(psutil.Error):
                process.kill()  # psutil checks that the pid was not reused since it was seen
        self.process.wait()
        psutil.wait_procs(list(victims.values()), timeout=10)


StartServe = Callable[..., Served]


ONE_WEB_WORKER = {"KOKAN_WEB_WORKERS": "1"}
"""A start is CPU-bound (each process imports the app); one gunicorn worker instead of two
keeps this file's runtime down and still makes the tree three levels deep."""


def database_env(database_factory: DatabaseFactory) -> dict[str, str]:
    """On the PostgreSQL pass, an empty database of its own; on SQLite, the data folder's file."""
    if database_factory.is_postgresql:
        return {"DATABASE_URL": database_factory.new(), **ONE_WEB_WORKER}
    return dict(ONE_WEB_WORKER)


@pytest.fixture
def serve_env(database_factory: DatabaseFactory) -> dict[str, str]:
    return database_env(database_factory)


def _start_serve(
    root: Path,
    env: dict[str, str],
    started: list[Served],
    *,
    data_dir: Path | None = None,
    port: int | None = None,
) -> Served:
    data_dir = data_dir or root / "var"
    port = port or free_listen_port()
    sip_port = free_sip_port()
    run = len(started)
    stdout_path, stderr_path = root / f"serve-{run}.out", root / f"serve-{run}.err"
    full_env = clean_environ()
    full_env["KOKAN_LIVE_PORT"] = str(free_listen_port())  # not port + 1: that one may be taken
    # the SIP child's RTP range of its own, away from 40000 and from parallel tests
    full_env["KOKAN_SIP__RTP_PORT"] = str(
        free_port_run(RTP_PORTS_PER_CALL * SIP_MAX_CALLS, *RTP_PORTS, tcp=False)
    )
    full_env.update(env)
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "kokan", *serve_args(data_dir, port, sip_port)],
            cwd=root,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group: Ctrl-C is a killpg on it
        )
    served = Served(process, root, data_dir, port, sip_port, stdout_path, stderr_path)
    started.append(served)
    return served


@pytest.fixture
def start_serve() -> Iterator[Callable[..., Served]]:
    """start_serve(env, data_dir=None, port=None) -> Served, in one tmp root per test."""
    root = short_tmp_dir("kokan-serve-")
    started: list[Served] = []

    def start(
        env: dict[str, str], *, data_dir: Path | None = None, port: int | None = None
    ) -> Served:
        return _start_serve(root, env, started, data_dir=data_dir, port=port)

    try:
        yield start
    finally:
        for served in started:
            served.kill_everything()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def running(database_factory: DatabaseFactory) -> Iterator[Served]:
    """One `kokan serve` shared by the tests that only look at a running Kokan."""
    root = short_tmp_dir("kokan-serve-")
    started: list[Served] = []
    try:
        served = _start_serve(root, database_env(database_factory), started)
        served.wait_ready()
        yield served
    finally:
        for served in started:
            served.kill_everything()
        shutil.rmtree(root, ignore_errors=True)


def assert_one_clear_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, f"status {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("kokan: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert SERVING_LINE not in result.stdout
    assert DEMO_ADMIN_LINE not in result.stdout
    return line


def free_sip_port() -> int:
    return free_port_run(1, *SIP_PORTS, tcp=True)


def serve_args(data_dir: Path | str, port: int, sip_port: int | None = None) -> tuple[str, ...]:
    """A SIP port of its own too: the default 5060 may be in use on the machine, or by a
    parallel test, and the SIP pre-flight check would refuse the start."""
    sip_port = sip_port or free_sip_port()
    return ("serve", "--data-dir", str(data_dir), "--port", str(port), "--sip-port", str(sip_port))


# --- a running Kokan -----------------------------------------------------------------


def test_serve_answers_ready_with_both_checks_ok(running: Served) -> None:
    body = running.wait_ready()

    assert body["status"] == "ready"
    assert body["checks"] == {"database": "ok", "redis": "ok"}
    assert requests.get(f"{running.base_url}/healthz", timeout=5).json() == {"status": "ok"}
    line = running.wait_serving()
    assert line.startswith(f"{SERVING_LINE} {running.base_url} ")
    assert f"data folder {running.data_dir}" in line


def test_serve_runs_redis_server_on_a_unix_socket_in_the_data_folder(running: Served) -> None:
    assert f"Redis unix://{running.socket_path})" in running.wait_serving()
    assert running.socket_path.is_socket()
    redis_servers = [p for p in running.tree() if p.name().startswith("redis-server")]
    assert len(redis_servers) == 1, describe(running.tree())
    listening = [
        conn.laddr
        for conn in redis_servers[0].net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]
    assert listening == [], f"the embedded Redis must not listen on TCP: {listening}"
    client = connect(f"unix://{running.socket_path}")
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_serve_opens_the_sip_endpoint_on_its_sip_port(running: Served) -> None:
    assert f"(SIP on 127.0.0.1:{running.sip_port}, data folder" in running.wait_serving()

    assert running.wait_sip_answers() == "SIP/2.0 200 OK"
    commands = describe(running.tree())
    sip_children = [c for c in commands if " -m kokan sip " in c]
    assert len(sip_children) == 1, commands
    assert f"--sip-port {running.sip_port} " in sip_children[0]
    assert sip_children[0].endswith("--workers 1"), "the embedded default: one worker"


def test_serve_runs_a_worker_that_answers_the_self_check(running: Served) -> None:
    result = run_kokan(
        "worker",
        "--check",
        env={"REDIS_URL": f"unix://{running.socket_path}"},
        cwd=running.root,
    )

    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"worker ok: pid \d+ on \S+\n", result.stdout), result.stdout
    children = psutil.Process(running.process.pid).children()
    worker_pids = {p.pid for p in children if p.cmdline()[-2:] == ["kokan", "worker"]}
    assert len(worker_pids) == 1, describe(children)
    connection = connect(f"unix://{running.socket_path}")
    try:
        registered = {worker.pid for worker in Worker.all(connection=connection)}
    finally:
        connection.close()
    assert registered == worker_pids, "the worker that answered is the supervisor's child"


def test_second_serve_on_the_same_data_folder_is_refused_and_the_first_keeps_serving(
    running: Served,
) -> None:
    result = run_kokan(*serve_args(running.data_dir, free_listen_port()), cwd=running.root)

    assert_one_clear_error(
        result, str(running.data_dir), "already in use", f"pid {running.process.pid}"
    )
    assert running.process.poll() is None
    assert running.socket_path.is_socket()
    assert (running.data_dir / "kokan.lock").read_text().strip() == str(running.process.pid)
    assert requests.get(f"{running.base_url}/readyz", timeout=5).status_code == 200


# --- first start, restart, persistence ---------------------------------------------


def test_demo_admin_printed_once_and_redis_data_persists_across_a_restart(
    start_serve: StartServe, serve_env: dict[str, str]
) -> None:
    first = start_serve(serve_env)
    first.wait_ready()
    printed = [line for line in first.stdout().splitlines() if DEMO_ADMIN_LINE in line]
    assert len(printed) == 1, first.stdout()
    match = ONE_TIME_PASSWORD.search(printed[0])
    assert match, printed[0]
    password = match.group(1)
    assert password not in first.stderr(), "the one-time password must not reach the logs"

    database = Database(serve_env.get("DATABASE_URL", f"sqlite:///{first.data_dir / 'kokan.db'}"))
    try:
        with database.unit_of_work() as session:
            admin = find_user(session, "admin")
            assert admin is not None
            assert admin.role == "admin"
            assert PasswordHasher().verify(admin.password_hash, password)
    finally:
        database.dispose()

    client = connect(f"unix://{first.socket_path}")
    client.set("kokan:test:persist", "across restarts")
    client.close()
    first.process.send_signal(signal.SIGTERM)
    assert first.wait_exit() == 0

    second = start_serve(serve_env, data_dir=first.data_dir, port=first.port)
    second.wait_ready()
    assert DEMO_ADMIN_LINE not in second.stdout()
    assert "one-time password" not in second.stdout() + second.stderr()
    client = connect(f"unix://{second.socket_path}")
    try:
        assert client.get("kokan:test:persist") == b"across restarts"
    finally:
        client.close()


# --- stopping ------------------------------------------------------------------------


def _send_sigterm(served: Served) -> None:
    served.process.send_signal(signal.SIGTERM)


def _press_ctrl_c(served: Served) -> None:
    """A terminal's Ctrl-C is SIGINT to the foreground process group."""
    os.killpg(served.process.pid, signal.SIGINT)


@pytest.mark.parametrize("stop", [_send_sigterm, _press_ctrl_c], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_ends_every_process(
    start_serve: StartServe, serve_env: dict[str, str], stop: Callable[[Served], None]
) -> None:
    served = start_serve(serve_env)
    served.wait_ready()
    tree = served.tree()
    commands = describe(tree)
    assert any("redis-server" in c for c in commands), commands
    assert any("gunicorn" in c for c in commands), commands
    assert any(c.endswith("-m kokan worker") for c in commands), commands
    assert any(c.endswith("-m kokan router") for c in commands), commands
    assert any(c.endswith("-m kokan cron") for c in commands), commands
    assert any("gthread" in c for c in commands), "the live updates' threaded gunicorn"
    served.wait_sip_answers()
    assert any(" -m kokan sip " in c for c in describe(served.tree())), commands
    pids = [p.pid for p in served.tree()]

    stop(served)

    assert served.wait_exit() == 0, served.stderr()[-4000:]
    assert "SIP endpoint stopped" in served.stderr(), "pjsua hung up and shut down in order"
    assert sip_options_answered(served.sip_port) is None
    alive = wait_all_gone(pids)
    assert alive == [], describe([psutil.Process(pid) for pid in alive if psutil.pid_exists(pid)])
    assert processes_of(served.data_dir) == []
    assert not served.socket_path.exists()


def test_children_die_when_the_supervisor_is_killed_and_the_folder_serves_again(
    start_serve: StartServe, serve_env: dict[str, str]
) -> None:
    served = start_serve(serve_env)
    served.wait_ready()
    tree = served.tree()
    assert any(p.name().startswith("redis-server") for p in tree), describe(tree)
    client = connect(f"unix://{served.socket_path}")
    client.set("kokan:test:before-crash", "kept")
    client.close()

    served.process.kill()
    served.process.wait(STOP_DEADLINE_S)

    alive = wait_all_gone([p.pid for p in tree])
    assert alive == [], describe([psutil.Process(pid) for pid in alive if psutil.pid_exists(pid)])
    assert processes_of(served.data_dir) == []

    again = start_serve(serve_env, data_dir=served.data_dir)
    again.wait_ready()
    client = connect(f"unix://{again.socket_path}")
    try:
        assert client.get("kokan:test:before-crash") == b"kept"
    finally:
        client.close()


def test_serve_with_redis_url_uses_it_and_leaves_it_running(
    start_serve: StartServe,
    serve_env: dict[str, str],
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    served = start_serve({**serve_env, "REDIS_URL": redis_url, "KOKAN_SIP__ENABLED": "false"})
    served.wait_ready()
    assert f"Redis {redis_url})" in served.wait_serving()
    assert "SIP on" not in served.wait_serving()
    commands = describe(served.tree())
    assert not any("redis-server" in c for c in commands), commands
    assert not any(" -m kokan sip " in c for c in commands), "sip.enabled: false starts none"
    assert not (served.data_dir / "redis").exists()

    served.process.send_signal(signal.SIGTERM)

    assert served.wait_exit() == 0
    assert redis_client.ping() is True, "Kokan must never stop a Redis it did not start"


# --- bad input ---------------------------------------------------------------------


@pytest.fixture
def workdir() -> Iterator[Path]:
    root = short_tmp_dir("kokan-bad-")
    try:
        yield root
    finally:
        for process in processes_of(root):
            process.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_a_port_already_taken_is_refused(workdir: Path, serve_env: dict[str, str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = run_kokan(*serve_args(workdir / "var", port), env=serve_env, cwd=workdir)

    assert_one_clear_error(result, f"port {port}", "127.0.0.1", "already in use")
    assert processes_of(workdir) == []


def test_a_sip_port_already_taken_is_refused(workdir: Path, serve_env: dict[str, str]) -> None:
    sip_port = free_sip_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", sip_port))

        result = run_kokan(
            *serve_args(workdir / "var", free_listen_port(), sip_port), env=serve_env, cwd=workdir
        )

    assert_one_clear_error(
        result, f"SIP port {sip_port} (UDP)", "127.0.0.1", "already in use", "--sip-port"
    )
    assert processes_of(workdir) == []
    assert not (workdir / "var" / "redis").exists(), "Redis must not start before the checks"


def test_an_unreachable_redis_url_is_refused(workdir: Path, serve_env: dict[str, str]) -> None:
    env = {**serve_env, "REDIS_URL": "redis://127.0.0.1:1/0"}

    result = run_kokan(*serve_args(workdir / "var", free_listen_port()), env=env, cwd=workdir)

    assert_one_clear_error(result, "Redis", "redis://127.0.0.1:1/0", "REDIS_URL")


def test_an_unreachable_database_url_is_refused(workdir: Path) -> None:
    env = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}

    result = run_kokan(*serve_args(workdir / "var", free_listen_port()), env=env, cwd=workdir)

    assert_one_clear_error(result, "database", "127.0.0.1:1", "DATABASE_URL")
    assert processes_of(workdir) == [], "nothing may keep running after a refused start"
    assert not (workdir / "var" / "redis").exists(), "Redis must not start before the checks"


@pytest.mark.parametrize(
    ("data_dir", "reason"),
    [
        ("{workdir}/plain-file/var", "Not a directory"),
        ("/proc/kokan-test-{unique}/var", "cannot create it"),
        ("/proc/sys", "not writable"),
    ],
    ids=["under-a-regular-file", "under-proc", "proc-itself"],
)
def test_a_data_folder_that_cannot_be_written_is_refused(
    workdir: Path, serve_env: dict[str, str], data_dir: str, reason: str
) -> None:
    (workdir / "plain-file").write_text("a file, not a folder\n", encoding="utf-8")
    folder = data_dir.format(workdir=workdir, unique=uuid.uuid4().hex[:8])

    result = run_kokan(*serve_args(folder, free_listen_port()), env=serve_env, cwd=workdir)

    assert_one_clear_error(result, f"data folder {folder}", reason)


def test_a_data_folder_that_is_a_regular_file_is_refused(
    workdir: Path, serve_env: dict[str, str]
) -> None:
    plain_file = workdir / "plain-file"
    plain_file.write_text("a file, not a folder\n", encoding="utf-8")
    env = {**serve_env, "KOKAN_DATA_DIR": str(plain_file)}

    result = run_kokan("serve", "--port", str(free_listen_port()), env=env, cwd=workdir)

    assert_one_clear_error(result, f"data folder {plain_file}", "exists but is not a folder")
    assert plain_file.read_text(encoding="utf-8") == "a file, not a folder\n"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("port: [1\nhost: 127.0.0.1\n", ("config.yaml:2:", "YAML syntax error")),
        ("log_level: INFO\nweb_wokers: 2\n", ("web_wokers", "unknown setting", "config.yaml:2")),
    ],
    ids=["yaml-syntax", "unknown-key"],
)
def test_a_broken_config_yaml_is_refused(
    workdir: Path, serve_env: dict[str, str], text: str, fragments: tuple[str, ...]
) -> None:
    (workdir / "config.yaml").write_text(text, encoding="utf-8")

    result = run_kokan(*serve_args(workdir / "var", free_listen_port()), env=serve_env, cwd=workdir)

    assert_one_clear_error(result, *fragments)
    assert not (workdir / "var").exists(), "nothing is created before the config is valid"
