"""A pool of SIP media workers: `kokan sip --workers N` and the pool's registry in Redis.

One pjsua2 process holds at most 4 calls (the wheel's PJSUA_MAX_CALLS), so capacity comes
from processes: the supervisor starts N `kokan sip` workers, each on its own SIP port and
RTP range, restarts one that dies (with a growing pause, so a worker that cannot start
does not spin), and on SIGTERM asks every worker to hang up and stop (a worker stopped
any other way with calls up aborts in pjsua).

Each worker reports its SIP address, capacity and live calls under a key of its own with
a short TTL, so the SIP media processes of several machines form one pool that Kamailio's
configuration (ivr.kamailio) and an operator can read.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

import redis

from kokan.config import SipSettings
from kokan.embedded_redis import parent_death_signal

POOL_KEY = "kokan:sip:pool:{worker}"
"""One worker's report (JSON); the key expires when the worker stops reporting."""
POOL_PATTERN = "kokan:sip:pool:*"
"""Every worker's report, whichever machine it runs on."""
POOL_REPORT_S = 1.0
"""How often a worker refreshes its report: live calls are at most a second old."""
POOL_TTL_S = 5
"""A report not refreshed this long is a worker gone: five missed reports, longer than a
garbage collection or a slow Redis, short enough that a dead worker leaves the pool soon."""
SCAN_BATCH = 500
"""Keys per SCAN round trip: a whole pool of a few hundred workers in one or two."""

RESTART_FIRST_PAUSE_S = 0.5
"""A crashed worker comes back at once; its callers are lost anyway, new ones need it."""
RESTART_MAX_PAUSE_S = 30.0
"""The longest pause between restarts of a worker that keeps dying at start."""
STABLE_RUN_S = 60.0
"""A worker that ran this long had a one-off crash: its next restart is quick again."""
SUPERVISE_POLL_S = 0.2
"""How soon a dead worker is noticed: a fraction of its restart pause, at no measurable CPU."""
STOP_WAIT_S = 20.0
"""A worker hangs up its calls and pumps events for at most ~3 s; far past that it is wedged."""
EXIT_USAGE = 2
"""`kokan`'s status for a configuration or start-up mistake: restarting cannot fix it."""

log = logging.getLogger(__name__)


# -- the registry ---------------------------------------------------------------------


@dataclass(frozen=True)
class PoolMember:
    """What one worker reports: where Kamailio reaches it and how full it is."""

    worker: str
    host: str
    port: int
    capacity: int
    live_calls: int
    pid: int

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.live_calls)


class PoolRegistry:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def report(self, member: PoolMember) -> None:
        self.redis.set(
            POOL_KEY.format(worker=member.worker), json.dumps(asdict(member)), ex=POOL_TTL_S
        )

    def forget(self, worker: str) -> None:
        """A clean stop: the worker leaves the pool now rather than when its key expires."""
        self.redis.delete(POOL_KEY.format(worker=worker))

    def live(self) -> list[PoolMember]:
        """Every worker that reported within the TTL, ordered by SIP address."""
        keys = list(self.redis.scan_iter(match=POOL_PATTERN, count=SCAN_BATCH))
        if not keys:
            return []
        members = []
        for key, raw in zip(keys, self.redis.mget(keys), strict=True):
            if raw is None:
                continue  # expired between the scan and the read
            try:
                members.append(PoolMember(**json.loads(raw)))
            except (ValueError, TypeError):
                # another Kokan version's report: one bad key must not hide the pool
                log.warning("ignoring the unreadable SIP pool report %r", key)
        return sorted(members, key=lambda m: (m.host, m.port, m.worker))


class PoolReporter:
    """A worker's side thread that keeps its report fresh: Redis round trips stay off the
    pjsua loop, which carries every call's audio."""

    def __init__(
        self,
        registry: PoolRegistry,
        describe: Callable[[], PoolMember],
        interval_s: float = POOL_REPORT_S,
    ) -> None:
        self.registry = registry
        self.describe = describe
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sip-pool-report", daemon=True)
        self._worker = ""

    def start(self) -> None:
        self._send()  # in the pool before the first call can arrive through Kamailio
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if not self._worker:
            return  # never reported
        try:
            self.registry.forget(self._worker)
        except redis.RedisError:
            log.exception("could not leave the SIP pool; the report expires on its own")

    def _send(self) -> None:
        member = self.describe()
        self._worker = member.worker
        self.registry.report(member)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._send()
            except redis.RedisError:
                log.exception("could not report to the SIP pool; retrying")


# -- the layout and the supervisor ------------------------------------------------------


@dataclass(frozen=True)
class WorkerSlot:
    """One worker's place in the pool: its SIP port and the first of its RTP ports."""

    index: int
    host: str
    port: int
    rtp_port: int
    tls_port: int | None = None


def layout(settings: SipSettings) -> list[WorkerSlot]:
    """Worker i: SIP port + i, RTP from rtp_port + i x 4 x max_calls (no two overlap; the
    settings refuse a layout that leaves the port space or crosses the SIP ports)."""
    return [
        WorkerSlot(
            index=i,
            host=settings.host,
            port=settings.port + i,
            rtp_port=settings.rtp_port + i * settings.rtp_ports_per_worker,
            tls_port=None if settings.tls_port is None else settings.tls_port + i,
        )
        for i in range(settings.workers)
    ]


def worker_command(slot: WorkerSlot, config_file: Path | None) -> list[str]:
    """One worker: `kokan sip` with its slot's ports and `--workers 1`, so a pool size in
    the config file does not make every worker a supervisor too."""
    command = [sys.executable, "-m", "kokan"]
    if config_file is not None:
        command += ["--config", str(config_file)]
    command += [
        "sip",
        "--workers",
        "1",
        "--sip-host",
        slot.host,
        "--sip-port",
        str(slot.port),
        "--rtp-port",
        str(slot.rtp_port),
    ]
    if slot.tls_port is not None:
        command += ["--tls-port", str(slot.tls_port)]
    return command


@dataclass
class _Running:
    slot: WorkerSlot
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    pause_s: float = RESTART_FIRST_PAUSE_S
    restart_at: float | None = None
    restarts: int = 0

    def start(self, now: float) -> None:
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            preexec_fn=parent_death_signal(),  # only prctl and getppid, no locks taken
            start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only
        )
        self.started_at = now
        self.restart_at = None
        log.info(
            "SIP worker %d started on port %d (pid %d)",
            self.slot.index,
            self.slot.port,
            self.process.pid,
        )


@dataclass
class PoolSupervisor:
    slots: Sequence[WorkerSlot]
    config_file: Path | None
    clock: Callable[[], float] = time.monotonic
    stop_requested: threading.Event = field(default_factory=threading.Event)
    workers: list[_Running] = field(default_factory=list)

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping the SIP pool", signal.Signals(signum).name)
        self.stop_requested.set()

    def run(self) -> int:
        """Start every worker and keep them running until SIGTERM/SIGINT; 0 after a clean
        stop, EXIT_USAGE when a worker refuses its configuration (the whole pool stops)."""
        now = self.clock()
        self.workers = [_Running(s, worker_command(s, self.config_file)) for s in self.slots]
        try:
            for worker in self.workers:
                worker.start(now)
            return self._supervise()
        finally:
            self._stop_all()

    def _supervise(self) -> int:
        while not self.stop_requested.wait(SUPERVISE_POLL_S):
            now = self.clock()
            for worker in self.workers:
                if worker.restart_at is not None:
                    if now >= worker.restart_at:
                        worker.restarts += 1
                        worker.start(now)
                    continue
                status = worker.process.poll() if worker.process is not None else None
                if status is None:
                    continue
                if status == EXIT_USAGE:
                    log.error(
                        "SIP worker %d (port %d) refused its configuration; stopping the pool",
                        worker.slot.index,
                        worker.slot.port,
                    )
                    return EXIT_USAGE
                if now - worker.started_at >= STABLE_RUN_S:
                    worker.pause_s = RESTART_FIRST_PAUSE_S
                log.error(
                    "SIP worker %d (port %d) exited with status %s; restarting in %.1f s "
                    "(its calls are lost)",
                    worker.slot.index,
                    worker.slot.port,
                    status,
                    worker.pause_s,
                )
                worker.restart_at = now + worker.pause_s
                worker.pause_s = min(worker.pause_s * 2, RESTART_MAX_PAUSE_S)
        return 0

    def _stop_all(self) -> None:
        """SIGTERM to all at once (each hangs up its own calls), then wait for each."""
        running = [w.process for w in self.workers if w.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = self.clock() + STOP_WAIT_S
        for process in running:
            try:
                process.wait(max(0.0, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                log.warning("SIP worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()


def run_pool_until_signalled(settings: SipSettings, config_file: Path | None) -> int:
    """`kokan sip --workers N`: supervise the pool until SIGTERM or Ctrl-C."""
    supervisor = PoolSupervisor(layout(settings), config_file)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, supervisor.request_stop)
    return supervisor.run()
