"""Kamailio in front of the SIP worker pool: its configuration, written from the pool.

Kamailio's dispatcher sends each new call to the least loaded worker (call-load algorithm
10, `maxload` = the worker's capacity), fails over to the next worker on 486/503/408, and
answers 503 with Retry-After when every worker is full. Everything Kamailio writes at run
time (pid file, control socket, runtime folder) stays in one folder of ours, so it runs
without root and without touching /run or /etc. The template is ivr/kamailio.cfg.tmpl.
"""

from __future__ import annotations

import glob
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from ivr.sip_pool import PoolMember, WorkerSlot
from kokan.config import SipSettings
from kokan.startup import StartupError

TEMPLATE = Path(__file__).with_name("kamailio.cfg.tmpl")
"""Kamailio's configuration with ${placeholders}; `$$` is Kamailio's own `$`."""
# the files in the folder of ours that Kamailio reads and writes
CONFIG_NAME = "kamailio.cfg"
DISPATCHER_NAME = "dispatcher.list"
PID_NAME = "kamailio.pid"
CTL_NAME = "kamailio.ctl"
RUNTIME_NAME = "run"

DISPATCHER_SET = 1
"""Every worker is in one dispatcher set: they all run the same flows."""
DEFAULT_LISTEN_PORT = 5060
"""Callers and trunks reach Kamailio on the standard SIP port; the workers sit behind it."""
FR_TIMER_MS = 2000
"""No reply at all from a worker for 2 s: it is dead, try the next (pjsua answers at once)."""
FR_INV_TIMER_MS = 30000
"""A worker answers within milliseconds after 100 Trying; a caller never rings this long."""
PING_INTERVAL_S = 2
"""OPTIONS to every worker this often: a dead one leaves the rotation within ~2 s."""
RETRY_AFTER_S = 5
"""What a caller refused for overload is told to wait: about the length of a short call."""
CHILDREN = 4
"""UDP receiver processes: a proxy's work per message is microseconds, a few suffice."""
LOG_LEVEL = 1
"""Kamailio's `debug`: 1 = notices and errors only."""
MODULE_FOLDERS = (
    "/usr/lib/*/kamailio/modules",  # Debian's multiarch layout
    "/usr/lib/kamailio/modules",
    "/usr/lib64/kamailio/modules",
    "/usr/local/lib*/kamailio/modules",
)


@dataclass(frozen=True)
class Destination:
    """One worker in the dispatcher list."""

    uri: str
    duid: str
    max_load: int

    def line(self) -> str:
        # setid destination flags priority attributes
        return f"{DISPATCHER_SET} {self.uri} 0 0 duid={self.duid};maxload={self.max_load}"


def from_layout(slots: Sequence[WorkerSlot], settings: SipSettings) -> list[Destination]:
    """The configured pool: every worker the layout starts, whether running or not yet."""
    host = settings.public_address or settings.host
    return [
        Destination(f"sip:{host}:{slot.port}", f"{host}:{slot.port}", settings.max_calls)
        for slot in slots
    ]


def from_pool(members: Sequence[PoolMember]) -> list[Destination]:
    """The live pool in Redis: the workers of every machine that reported lately. Two
    processes on one address (a restart within the TTL) are one destination."""
    by_address: dict[str, Destination] = {}
    for member in members:
        address = f"{member.host}:{member.port}"
        by_address[address] = Destination(member.uri, address, member.capacity)
    return list(by_address.values())


def modules_folder() -> Path:
    """Kamailio's modules folder (Debian keeps it under the multiarch triplet)."""
    for pattern in MODULE_FOLDERS:
        for found in sorted(glob.glob(pattern)):
            if (Path(found) / "dispatcher.so").exists():
                return Path(found)
    raise StartupError(
        "kamailio: no modules folder with dispatcher.so found "
        f"(looked in {', '.join(MODULE_FOLDERS)}); install the Debian package kamailio"
    )


@dataclass(frozen=True)
class KamailioFiles:
    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / CONFIG_NAME

    @property
    def dispatcher_list(self) -> Path:
        return self.folder / DISPATCHER_NAME

    @property
    def pid_file(self) -> Path:
        return self.folder / PID_NAME

    @property
    def ctl_socket(self) -> Path:
        return self.folder / CTL_NAME

    @property
    def runtime_dir(self) -> Path:
        return self.folder / RUNTIME_NAME


def render_config(
    files: KamailioFiles,
    listen_host: str,
    listen_port: int,
    modules: Path,
) -> str:
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        log_level=LOG_LEVEL,
        children=CHILDREN,
        listen_host=listen_host,
        listen_port=listen_port,
        runtime_dir=files.runtime_dir,
        modules_dir=modules,
        fr_timer_ms=FR_TIMER_MS,
        fr_inv_timer_ms=FR_INV_TIMER_MS,
        ctl_socket=files.ctl_socket,
        dispatcher_list=files.dispatcher_list,
        ping_interval_s=PING_INTERVAL_S,
        set_id=DISPATCHER_SET,
        retry_after_s=RETRY_AFTER_S,
    )


def render_dispatcher_list(destinations: Sequence[Destination]) -> str:
    header = (
        "# setid destination flags priority attributes (written by kokan sip kamailio-config)\n"
    )
    return header + "".join(d.line() + "\n" for d in destinations)


def write(
    folder: Path,
    destinations: Sequence[Destination],
    listen_host: str,
    listen_port: int,
    *,
    modules: Path | None = None,
) -> KamailioFiles:
    """Write kamailio.cfg and dispatcher.list into `folder` (created, with its runtime
    folder). An empty pool is refused: Kamailio would answer every call 503."""
    if not destinations:
        raise StartupError(
            "kamailio: no SIP workers to dispatch to (none reported to Redis lately; "
            "start `kokan sip --workers N` first, or write the configured layout)"
        )
    files = KamailioFiles(folder.resolve())
    files.runtime_dir.mkdir(parents=True, exist_ok=True)
    files.dispatcher_list.write_text(render_dispatcher_list(destinations), encoding="utf-8")
    files.config.write_text(
        render_config(
            files,
            listen_host,
            listen_port,
            modules or modules_folder(),
        ),
        encoding="utf-8",
    )
    return files


def kamailio_program() -> str:
    found = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/sbin")
    if found is None:
        raise StartupError("kamailio is not installed (Debian package kamailio)")
    return found


def command(files: KamailioFiles) -> list[str]:
    """Kamailio in the foreground (-DD: no daemon, one process group with its children),
    logging to stderr (-E), everything it writes under `files.folder`."""
    return [
        kamailio_program(),
        "-f",
        str(files.config),
        "-P",
        str(files.pid_file),
        "-Y",
        str(files.runtime_dir),
        "-DD",
        "-E",
    ]
