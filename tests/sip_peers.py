"""Real SIP peers for the tests: baresip as an agent's softphone on 127.0.0.1.

Each baresip runs in a config folder of its own (under the test's tmp folder), listens
on a free port, answers automatically (or not, to ring out), sends a WAV file as its
microphone and dumps the audio it receives (the `sndfile` module) so a test can check
what reached the agent. Stopping it is SIGTERM and a wait, killed only if it hangs.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MODULES = Path("/usr/lib/baresip/modules")
"""Where Debian's baresip keeps its modules (none is loaded unless the config names it)."""
RATE = 8000
"""baresip's aufile source must match the codec's rate: G.711 is 8 kHz mono."""
TONE_HZ = 1000
"""The agent's voice in the tests: one clean tone, easy to find in the caller's RTP."""
TONE_S = 30
"""Longer than any test call: aufile stops sending at the end of its file."""
TONE_AMPLITUDE = 8000
STOP_WAIT_S = 5.0
"""baresip hangs up its calls and exits within milliseconds of SIGTERM; a wedged one is
killed after this."""
READY_LINE = "baresip is ready."
READY_WAIT_S = 10.0
READY_POLL_S = 0.05
START_ATTEMPTS = 3


def require_baresip() -> str:
    found = shutil.which("baresip")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("baresip is missing (Debian package baresip, in run's SYSTEM_PACKAGES)")
        pytest.skip("baresip is not installed (Debian package baresip)")
    return found


def write_tone(path: Path, hz: int = TONE_HZ, seconds: int = TONE_S) -> Path:
    frames = b"".join(
        struct.pack("<h", int(TONE_AMPLITUDE * math.sin(2 * math.pi * hz * i / RATE)))
        for i in range(RATE * seconds)
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(frames)
    return path


def free_baresip_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 whose next port is free for TCP too:
    baresip listens on both there and opens SIP over TLS on the port after."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            if port >= 65535:
                continue
            try:
                with (
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tls,
                ):
                    udp.bind(("127.0.0.1", port))
                    tls.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


@dataclass
class Baresip:
    process: subprocess.Popen[bytes]
    user: str
    port: int
    folder: Path
    log: Path

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def received(self) -> list[Path]:
        """The WAV files of decoded audio baresip received (one per call)."""
        return sorted((self.folder / "received").glob("*dec*.wav"))

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_baresip(
    folder: Path,
    user: str,
    *,
    auto_answer: bool = True,
    hz: int = TONE_HZ,
    dial: str | None = None,
) -> Baresip:
    """A softphone at sip:<user>@127.0.0.1:<free port>, in `folder` (created), speaking a
    tone of `hz`; with `dial`, it calls that URI once started (a caller). A port taken by
    another test between our check and baresip's bind is retried on another."""
    folder.mkdir(parents=True)
    (folder / "received").mkdir()
    tone = write_tone(folder / "voice.wav", hz)
    for _attempt in range(START_ATTEMPTS - 1):
        try:
            return _start(folder, user, tone, auto_answer, dial)
        except PortTaken:
            continue
    return _start(folder, user, tone, auto_answer, dial)


class PortTaken(Exception):
    pass


def _start(folder: Path, user: str, tone: Path, auto_answer: bool, dial: str | None) -> Baresip:
    program = require_baresip()
    port = free_baresip_port()
    config = {
        "poll_method": "epoll",
        "sip_listen": f"127.0.0.1:{port}",
        "audio_source": f"aufile,{tone}",
        # no sound card: what is heard goes into an unread bridge device, and sndfile
        # (an audio filter) keeps a copy of it as WAV
        "audio_player": "aubridge,heard",
        "audio_alert": "aubridge,heard",
        "module_path": str(MODULES),
        "snd_path": str(folder / "received"),
    }
    lines = [f"{key}\t{value}" for key, value in config.items()]
    lines += [f"module\t{name}" for name in ("g711.so", "aufile.so", "aubridge.so", "sndfile.so")]
    lines += ["module_app\taccount.so", "module_app\tmenu.so"]
    (folder / "config").write_text("\n".join(lines) + "\n", encoding="utf-8")
    answer = "auto" if auto_answer else "manual"
    (folder / "accounts").write_text(
        f"<sip:{user}@127.0.0.1>;regint=0;answermode={answer}\n", encoding="utf-8"
    )
    log = folder / "baresip.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            # -e: menu commands run once the user agent is up
            [program, "-f", str(folder), *(["-e", f"/dial {dial}"] if dial else [])],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    phone = Baresip(process, user, port, folder, log)
    deadline = time.monotonic() + READY_WAIT_S
    while READY_LINE not in phone.output():
        if process.poll() is not None or time.monotonic() > deadline:
            phone.stop()
            if "Address already in use" in phone.output():
                raise PortTaken(phone.output())
            raise AssertionError(f"baresip did not start:\n{phone.output()}")
        time.sleep(READY_POLL_S)
    return phone


class Peers:
    """The baresips a test started, all stopped at its end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Baresip] = []

    def agent(self, user: str, *, auto_answer: bool = True) -> Baresip:
        phone = start_baresip(self.tmp_path / f"baresip-{user}", user, auto_answer=auto_answer)
        self.started.append(phone)
        return phone

    def caller(self, user: str, dial: str, hz: int) -> Baresip:
        """A softphone that calls `dial` as soon as it is up, speaking a tone of `hz`."""
        phone = start_baresip(self.tmp_path / f"baresip-{user}", user, hz=hz, dial=dial)
        self.started.append(phone)
        return phone

    def stop(self) -> None:
        for phone in self.started:
            phone.stop()


@pytest.fixture
def baresip_agents(tmp_path: Path) -> Iterator[Peers]:
    peers = Peers(tmp_path)
    yield peers
    peers.stop()
