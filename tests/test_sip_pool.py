"""`kokan sip --workers 3` behind a real Kamailio, driven by sipp on 127.0.0.1.

One pjsua2 worker holds 4 calls; the pool holds 12. Through the generated Kamailio
configuration: more calls than one worker holds all succeed and spread over the workers,
calls beyond the pool get 503 with Retry-After, and a worker killed with -9 loses its own
calls only while new calls go to the others and the supervisor starts it again.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import yaml
from sqlalchemy import func, select

from bench.local_sip import free_port_run, sip_options_answered, stop_process
from ivr import kamailio
from ivr.sip_pool import POOL_KEY, POOL_TTL_S, PoolMember, PoolRegistry, layout, worker_command
from kokan.config import RTP_PORTS_PER_CALL, SIP_MAX_CALLS, Settings, SipSettings
from kokan.db import Database
from kokan.startup import StartupError
from tests.conftest import clean_environ, run_kokan, short_tmp_dir
from tests.test_sip_calls import (
    KOKAN,
    MENU_FLOW,
    SCENARIOS,
    RtpSink,
    _require_espeak,
    _require_sipp,
    fill,
    publish_flow,
    rtp_sink,
    sip_settings,
    wait_for,
)
from tickets.cdr import CdrProjector
from tickets.models import Call

pytestmark = pytest.mark.media  # real SIP peers: the PostgreSQL pass leaves them out (./run)

__all__ = ["rtp_sink", "sip_settings"]  # the fixtures, used by name

WORKERS = 3
POOL_CAPACITY = WORKERS * SIP_MAX_CALLS
START_DEADLINE_S = 30.0
"""Three workers import Kokan, start pjsua and speak their apology prompt side by side."""
STOP_WAIT_S = 25.0
SIPP_WAIT_S = 40.0
CALL_RATE = 50
"""Calls per second sipp starts: every call of a batch is up within a fraction of a second."""
SIP_SEARCH_LOW, SIP_SEARCH_HIGH = 20000, 29000
RTP_SEARCH_LOW, RTP_SEARCH_HIGH = 30000, 60000
SAMPLE = Path(__file__).parent.parent / "docs" / "kamailio.cfg.sample"
SAMPLE_FOLDER = "/var/lib/kokan/kamailio"
"""Where the guide puts Kamailio's files; the sample names it."""
SAMPLE_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"
"""Debian's modules folder on amd64, as in the guide."""


KAMCMD = shutil.which("kamcmd", path=os.environ.get("PATH", "") + ":/usr/sbin") or "kamcmd"
"""Kamailio's control client (same Debian package), in /usr/sbin outside root's PATH."""


def _require_kamailio() -> None:
    try:
        kamailio.kamailio_program()
    except StartupError:
        if os.environ.get("CI") == "true":
            pytest.fail("kamailio is missing (Debian package kamailio, in run's SYSTEM_PACKAGES)")
        pytest.skip("kamailio is not installed (Debian package kamailio)")


@dataclass
class Pool:
    process: subprocess.Popen[bytes]
    config_file: Path
    sip_port: int
    log: Path
    registry: PoolRegistry

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def members(self) -> list[PoolMember]:
        return self.registry.live()

    def live_calls(self) -> dict[int, int]:
        """Live calls per worker pid, as the workers report them."""
        return {m.pid: m.live_calls for m in self.members()}


@dataclass
class Kamailio:
    process: subprocess.Popen[bytes]
    port: int
    files: kamailio.KamailioFiles
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def pool(
    sip_settings: Settings, database: Database, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[Pool]:
    """`kokan sip --workers 3` on three consecutive free ports, each with its RTP range."""
    _require_espeak()
    publish_flow(database, sip_settings, MENU_FLOW)
    sip_port = free_port_run(WORKERS, SIP_SEARCH_LOW, SIP_SEARCH_HIGH, tcp=True)
    rtp_port = free_port_run(
        WORKERS * RTP_PORTS_PER_CALL * SIP_MAX_CALLS, RTP_SEARCH_LOW, RTP_SEARCH_HIGH, tcp=False
    )
    config = {
        "data_dir": str(sip_settings.data_dir),
        "database_url": sip_settings.database_url,
        "redis_url": sip_settings.redis_url,
        "flows_dir": str(sip_settings.flows_dir),
        "sip": {"host": "127.0.0.1", "port": sip_port, "rtp_port": rtp_port},
    }
    config_file = tmp_path / "pool.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = tmp_path / "pool.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*KOKAN, "--config", str(config_file), "sip", "--workers", str(WORKERS)],
            env=clean_environ(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Pool(process, config_file, sip_port, log, PoolRegistry(redis_client))
    try:
        wait_for(
            lambda: len(running.members()) == WORKERS or process.poll() is not None,
            "three workers in the pool",
            START_DEADLINE_S,
        )
        assert process.poll() is None, running.output()
        yield running
    finally:
        stop_process(process, STOP_WAIT_S)
    assert process.returncode == 0, running.output()


@pytest.fixture
def proxy(pool: Pool) -> Iterator[Kamailio]:
    """A real Kamailio with the configuration `kokan sip kamailio-config --from-pool` writes."""
    _require_kamailio()
    folder = short_tmp_dir("kokan-kamailio-")  # its control socket's path must stay short
    port = free_port_run(1, SIP_SEARCH_LOW, SIP_SEARCH_HIGH, tcp=False)
    written = run_kokan(
        "--config",
        str(pool.config_file),
        "sip",
        "kamailio-config",
        "--out",
        str(folder),
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--from-pool",
    )
    assert written.returncode == 0, written.stderr
    files = kamailio.KamailioFiles(folder)
    listed = files.dispatcher_list.read_text()
    for i in range(WORKERS):
        assert f"sip:127.0.0.1:{pool.sip_port + i} " in listed
        assert f"maxload={SIP_MAX_CALLS}" in listed
    log = folder / "kamailio.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            kamailio.command(files), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = Kamailio(process, port, files, log)
    try:
        wait_for(
            lambda: (
                process.poll() is not None
                or (sip_options_answered(port) or "").startswith("SIP/2.0 200")
            ),
            "Kamailio to answer",
        )
        assert process.poll() is None, running.output()
        assert files.pid_file.exists(), running.output()
        # the control socket in our folder answers: the dispatcher knows every worker
        state = subprocess.run(
            [KAMCMD, "-s", f"unix:{files.ctl_socket}", "dispatcher.list"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert state.returncode == 0, state.stderr + running.output()
        for i in range(WORKERS):
            assert f"sip:127.0.0.1:{pool.sip_port + i}" in state.stdout
        yield running
    finally:
        stop_process(process, STOP_WAIT_S)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Batch:
    process: subprocess.Popen[bytes]
    log: Path

    def wait(self) -> str:
        self.process.wait(SIPP_WAIT_S)
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_calls(proxy: Kamailio, tmp_path: Path, sink: RtpSink, calls: int, hold_ms: int) -> Batch:
    """`calls` callers at once through Kamailio, each hanging up after `hold_ms`."""
    program = _require_sipp()
    local = free_port_run(1, SIP_SEARCH_LOW, SIP_SEARCH_HIGH, tcp=False)
    scenario = tmp_path / f"pool-{local}.xml"
    scenario.write_text(fill((SCENARIOS / "pool_call.xml").read_text(), hold_ms=hold_ms))
    log = tmp_path / f"sipp-pool-{local}.log"
    command = [
        program,
        f"127.0.0.1:{proxy.port}",
        "-sf",
        str(scenario),
        "-m",
        str(calls),
        "-l",
        str(calls),
        "-r",
        str(CALL_RATE),
        "-i",
        "127.0.0.1",
        "-p",
        str(local),
        "-s",
        "kokan",
        "-timeout",
        f"{SIPP_WAIT_S - 5:.0f}s",
        "-timeout_error",
        "-nostdin",
        "-trace_logs",
        "-log_file",
        str(log),
        "-trace_err",
        "-error_file",
        str(tmp_path / f"sipp-pool-{local}-errors.log"),
        "-key",
        "caller",
        "0312345678",
        "-key",
        "rtp_sink",
        str(sink.port),
    ]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return Batch(process, log)


def answered_by(log: str) -> list[int]:
    """The worker port of every answered call (one per call)."""
    return [int(port) for port in re.findall(r"^WORKER (\d+) ", log, re.MULTILINE)]


def ended(log: str) -> int:
    return len(re.findall(r"^ENDED ", log, re.MULTILINE))


def rejected(log: str) -> list[str]:
    """The Retry-After of every call refused with 503."""
    return re.findall(r"^REJECTED \S+ retry-after=(\d*)", log, re.MULTILINE)


def calls_recorded(database: Database, redis_client: redis.Redis) -> int:
    CdrProjector(redis_client, database).drain()
    with database.unit_of_work() as session:
        return int(session.scalar(select(func.count()).select_from(Call)) or 0)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    wait_for(condition, what, START_DEADLINE_S)


# ---- the tests ----


def test_more_calls_than_one_worker_holds_spread_over_the_pool_and_overload_gets_503(
    pool: Pool,
    proxy: Kamailio,
    database: Database,
    redis_client: redis.Redis,
    rtp_sink: RtpSink,
    tmp_path: Path,
) -> None:
    overload = 2
    batch = start_calls(proxy, tmp_path, rtp_sink, POOL_CAPACITY + overload, hold_ms=4000)
    # every worker full at once, as each reports it to Redis
    wait_until(
        lambda: sorted(pool.live_calls().values()) == [SIP_MAX_CALLS] * WORKERS,
        f"{SIP_MAX_CALLS} live calls on each of the {WORKERS} workers",
    )
    log = batch.wait()
    assert batch.process.returncode == 0, log + proxy.output()

    ports = answered_by(log)
    assert len(ports) == POOL_CAPACITY, log
    assert ended(log) == POOL_CAPACITY, log
    assert {port: ports.count(port) for port in set(ports)} == {
        pool.sip_port + i: SIP_MAX_CALLS for i in range(WORKERS)
    }
    assert rejected(log) == [str(kamailio.RETRY_AFTER_S)] * overload, log
    wait_until(
        lambda: calls_recorded(database, redis_client) == POOL_CAPACITY,
        "a call-detail record for every answered call",
    )
    wait_until(lambda: set(pool.live_calls().values()) == {0}, "every worker idle again")

    # the BYEs passed Kamailio (Record-Route) and freed its call-load slots: a full pool again
    again = start_calls(proxy, tmp_path, rtp_sink, POOL_CAPACITY, hold_ms=500)
    again_log = again.wait()
    assert again.process.returncode == 0, again_log + proxy.output()
    assert (len(answered_by(again_log)), ended(again_log)) == (POOL_CAPACITY, POOL_CAPACITY)
    assert rejected(again_log) == []


def test_a_worker_killed_with_9_loses_only_its_calls_and_new_calls_go_to_the_others(
    pool: Pool,
    proxy: Kamailio,
    rtp_sink: RtpSink,
    tmp_path: Path,
) -> None:
    first = start_calls(proxy, tmp_path, rtp_sink, 2 * WORKERS, hold_ms=6000)
    wait_until(
        lambda: sorted(pool.live_calls().values()) == [2] * WORKERS,
        "two calls on each worker",
    )
    victim = next(m for m in pool.members() if m.port == pool.sip_port)
    os.kill(victim.pid, signal.SIGKILL)

    second = start_calls(proxy, tmp_path, rtp_sink, WORKERS, hold_ms=500)
    second_log = second.wait()
    assert second.process.returncode == 0, second_log + proxy.output()
    assert ended(second_log) == WORKERS, second_log
    # the calls placed while it was dead went to the others (or to its restart, a new process)
    assert len(answered_by(second_log)) == WORKERS

    first_log = first.wait()
    assert ended(first_log) == 2 * WORKERS - 2, first_log
    assert answered_by(first_log).count(victim.port) == 2
    assert first.process.returncode != 0, "the killed worker's calls failed in sipp"

    wait_until(
        lambda: any(m.port == victim.port and m.pid != victim.pid for m in pool.members()),
        "the supervisor to start the killed worker again",
    )
    assert "exited with status -9" in pool.output()


# ---- layout, configuration and bad input ----


def test_each_worker_gets_its_own_sip_port_and_rtp_range() -> None:
    settings = SipSettings(port=5070, rtp_port=40000, workers=3)
    slots = layout(settings)
    assert [(s.port, s.rtp_port) for s in slots] == [(5070, 40000), (5071, 40016), (5072, 40032)]
    ranges = [set(range(s.rtp_port, s.rtp_port + settings.rtp_ports_per_worker)) for s in slots]
    assert all(a.isdisjoint(b) for i, a in enumerate(ranges) for b in ranges[i + 1 :])
    command = worker_command(slots[1], Path("/etc/kokan.yaml"))
    assert command[-8:] == [
        "--workers",
        "1",
        "--sip-host",
        "127.0.0.1",
        "--sip-port",
        "5071",
        "--rtp-port",
        "40016",
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "3", "--sip-port", "65534"], "need ports up to 65536"),
        (["--workers", "300"], "less than or equal to 256"),
        (["--workers", "3", "--rtp-port", "5060"], "overlap the RTP ports"),
    ],
)
def test_a_pool_that_does_not_fit_is_refused_with_the_reason(
    options: list[str], message: str, tmp_path: Path
) -> None:
    done = run_kokan("sip", *options, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_kamailio_config_needs_workers_and_a_port_of_its_own(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    config_file = tmp_path / "kokan.yaml"
    config_file.write_text(
        yaml.safe_dump({"redis_url": settings.redis_url, "sip": {"port": 5070, "workers": 2}})
    )
    out = tmp_path / "kamailio"
    base = ("--config", str(config_file), "sip", "kamailio-config", "--out", str(out))

    empty = run_kokan(*base, "--from-pool")
    assert empty.returncode == 2, empty.stderr
    assert "no SIP workers to dispatch to" in empty.stderr

    clash = run_kokan(*base, "--listen-port", "5071")
    assert clash.returncode == 2, clash.stderr
    assert "5071 is a worker's SIP port" in clash.stderr

    written = run_kokan(*base, "--listen-port", "5060")
    assert written.returncode == 0, written.stderr
    assert (out / "dispatcher.list").read_text().splitlines()[1:] == [
        "1 sip:127.0.0.1:5070 0 0 duid=127.0.0.1:5070;maxload=4",
        "1 sip:127.0.0.1:5071 0 0 duid=127.0.0.1:5071;maxload=4",
    ]
    assert "listen=udp:127.0.0.1:5060" in (out / "kamailio.cfg").read_text()


def test_the_documented_sample_is_what_kokan_writes() -> None:
    """docs/kamailio.cfg.sample is the generator's output for the layout the guide shows,
    and the running Kamailio of the tests above uses the same template."""
    files = kamailio.KamailioFiles(Path(SAMPLE_FOLDER))
    rendered = kamailio.render_config(files, "127.0.0.1", 5060, Path(SAMPLE_MODULES))
    assert SAMPLE.read_text(encoding="utf-8") == rendered, (
        "regenerate docs/kamailio.cfg.sample (see docs/kamailio.md)"
    )


def test_a_worker_that_cannot_start_stops_the_pool_with_its_reason(
    sip_settings: Settings, database: Database, redis_client: redis.Redis, tmp_path: Path
) -> None:
    _require_espeak()
    sip_port = free_port_run(2, SIP_SEARCH_LOW, SIP_SEARCH_HIGH, tcp=True)
    rtp_port = free_port_run(
        2 * RTP_PORTS_PER_CALL * SIP_MAX_CALLS, RTP_SEARCH_LOW, RTP_SEARCH_HIGH, tcp=False
    )
    config_file = tmp_path / "pool.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(sip_settings.data_dir),
                "database_url": sip_settings.database_url,
                "redis_url": sip_settings.redis_url,
                "flows_dir": str(sip_settings.flows_dir),
                "sip": {"port": sip_port, "rtp_port": rtp_port, "workers": 2},
            }
        )
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", sip_port + 1))  # the second worker's SIP port
        done = subprocess.run(
            [*KOKAN, "--config", str(config_file), "sip"],
            env=clean_environ(),
            capture_output=True,
            text=True,
            timeout=START_DEADLINE_S,
            check=False,
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"cannot listen on 127.0.0.1:{sip_port + 1}" in done.stderr
    assert "refused its configuration; stopping the pool" in done.stderr
    assert PoolRegistry(redis_client).live() == []


def test_the_registry_lists_fresh_reports_and_skips_unreadable_ones(
    redis_client: redis.Redis,
) -> None:
    registry = PoolRegistry(redis_client)
    there = PoolMember("host-b-5071", "10.0.0.2", 5071, 4, 3, 42)
    registry.report(there)
    registry.report(PoolMember("host-a-5070", "10.0.0.1", 5070, 4, 0, 41))
    redis_client.set(POOL_KEY.format(worker="from-another-version"), '{"worker": 1}')

    assert [(m.host, m.free) for m in registry.live()] == [("10.0.0.1", 4), ("10.0.0.2", 1)]
    assert 0 < redis_client.ttl(POOL_KEY.format(worker=there.worker)) <= POOL_TTL_S
    registry.forget(there.worker)
    assert [m.worker for m in registry.live()] == ["host-a-5070"]
    assert kamailio.from_pool(registry.live()) == [
        kamailio.Destination("sip:10.0.0.1:5070", "10.0.0.1:5070", 4)
    ]


def test_sigterm_with_calls_up_hangs_them_up_and_stops_every_worker_cleanly(
    pool: Pool,
    proxy: Kamailio,
    rtp_sink: RtpSink,
    tmp_path: Path,
) -> None:
    batch = start_calls(proxy, tmp_path, rtp_sink, WORKERS, hold_ms=20000)
    wait_until(lambda: sorted(pool.live_calls().values()) == [1] * WORKERS, "a call on each")

    pool.process.send_signal(signal.SIGTERM)
    assert pool.process.wait(STOP_WAIT_S) == 0, pool.output()
    # each worker hung up its call and destroyed pjsua in order: no abort, a clean exit
    assert pool.output().count("SIP endpoint stopped") == WORKERS, pool.output()
    assert "did not end in time" not in pool.output()
    assert pool.members() == [], "every worker left the pool"
    batch.process.terminate()
    batch.process.wait(SIPP_WAIT_S)
