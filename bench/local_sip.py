"""Small tools for SIP processes on 127.0.0.1, shared by the SIP bench and the tests: a run
of free ports for a pool, an OPTIONS probe that says whether an endpoint listens, and a
stop that asks first and kills only a process that hangs."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import uuid

PORT_RUN_TRIES = 200
"""Random bases tried for a run of free ports; on a quiet machine the first one fits."""
SIP_PORTS = (20000, 29000)
"""Where SIP ports are sought: below the usual ephemeral range (32768+), so a client
socket of another process does not take one between the search and the bind."""
RTP_PORTS = (30000, 60000)
"""Where RTP ranges are sought: wide, so parallel runs rarely meet."""
LISTEN_PORTS = (10000, 20000)
"""Where a local server's port (web, SMTP, Redis) is sought: below the ephemeral range, like
SIP_PORTS, so no client socket takes it between the search and the child's bind."""
OPTIONS_WAIT_S = 0.2
"""One probe's wait for the answer: on 127.0.0.1 a live SIP endpoint answers in a
millisecond; the caller polls again until its own deadline."""


def free_listen_port() -> int:
    """One port free for TCP and UDP on 127.0.0.1, for a server a test or bench starts."""
    return free_port_run(1, *LISTEN_PORTS, tcp=True)


def free_port_run(count: int, low: int, high: int, *, tcp: bool) -> int:
    """The first of `count` consecutive ports free for UDP (and TCP) on 127.0.0.1, from a
    random even base: a SIP pool's ports (UDP and TCP) or a worker's RTP range (UDP)."""
    for _attempt in range(PORT_RUN_TRIES):
        base = random.randrange(low, high - count, 2)  # noqa: S311 - a port, not a secret
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM) if tcp else (socket.SOCK_DGRAM,)
                for kind in kinds:
                    sock = socket.socket(socket.AF_INET, kind)
                    sockets.append(sock)
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} free consecutive ports between {low} and {high}")


def sip_options_answered(port: int, host: str = "127.0.0.1") -> str | None:
    """One SIP OPTIONS over UDP to host:port; the status line of the answer, None if none
    came (the endpoint not listening yet). pjsua and Kamailio both answer OPTIONS."""
    branch = "z9hG4bK" + uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        local = sock.getsockname()[1]
        message = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{local};branch={branch}\r\n"
            f"From: <sip:probe@{host}:{local}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.settimeout(OPTIONS_WAIT_S)
        sock.sendto(message.encode(), (host, port))
        try:
            answer = sock.recv(4096)
        except (TimeoutError, ConnectionRefusedError):
            return None
    return answer.split(b"\r\n", 1)[0].decode(errors="replace")


def answers_ok(port: int) -> bool:
    return (sip_options_answered(port) or "").startswith("SIP/2.0 200")


def stop_process(process: subprocess.Popen[bytes], wait_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `wait_s`; always reaped."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
