"""SIP over TLS with a configured certificate: `kokan sip` listens on `sip.tls_port` beside
UDP and TCP, and a real TLS peer (Python's ssl, verifying the worker's certificate) gets
OPTIONS answered and a call answered with the configured address in its SDP. A bad TLS
setup is refused with one clear line."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bench.local_sip import stop_process
from kokan.config import ConfigError, Settings, load
from kokan.db import Database
from tests.conftest import clean_environ
from tests.test_sip_calls import (
    KOKAN,
    MENU_FLOW,
    Worker,
    _require_espeak,
    free_port,
    free_rtp_base,
    publish_flow,
    sip_settings,
    wait_for,
)

pytestmark = pytest.mark.media  # real SIP peers: the PostgreSQL pass leaves them out (./run)

__all__ = ["sip_settings"]  # the fixture, used by name

STOP_WAIT_S = 10.0
"""A worker hangs up and stops within a second of SIGTERM; longer is killed."""
ANSWER_WAIT_S = 5.0
"""On 127.0.0.1 a TLS handshake and an answer take milliseconds."""
STATUS_LINE = re.compile(r"^SIP/2\.0 (\d{3}) ", re.MULTILINE)


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made by openssl for this test only."""
    program = shutil.which("openssl")
    if program is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is missing (Debian package openssl, in run's SYSTEM_PACKAGES)")
        pytest.skip("openssl is not installed")
    cert, key = folder / "sip.crt", folder / "sip.key"
    subprocess.run(
        [
            *(program, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
def tls_worker(
    sip_settings: Settings, database: Database, tmp_path: Path
) -> Iterator[tuple[Worker, int, Path]]:
    _require_espeak()
    publish_flow(database, sip_settings, MENU_FLOW)
    cert, key = certificate(tmp_path)
    port, tls_port = free_port(), free_port()
    config = {
        "data_dir": str(sip_settings.data_dir),
        "database_url": sip_settings.database_url,
        "redis_url": sip_settings.redis_url,
        "flows_dir": str(sip_settings.flows_dir),
        "sip": {
            "rtp_port": free_rtp_base(),
            "tls_port": tls_port,
            "tls_certificate": str(cert),
            "tls_private_key": str(key),
        },
    }
    config_file = tmp_path / "tls.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*KOKAN, "--config", str(config_file), "sip", "--sip-port", str(port)],
            env=clean_environ(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = Worker(process, port, log)
    try:
        wait_for(
            lambda: "SIP endpoint on" in worker.output() or process.poll() is not None,
            "the SIP worker to start",
        )
        assert process.poll() is None, worker.output()
        yield worker, tls_port, cert
    finally:
        stop_process(process, STOP_WAIT_S)


def tls_peer(port: int, cert: Path) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(cert))  # the worker's certificate is checked
    raw = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WAIT_S)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def request(peer: ssl.SSLSocket, method: str, call_id: str, port: int, body: str = "") -> None:
    local = peer.getsockname()[1]
    uri = f"sip:kokan@127.0.0.1:{port};transport=tls"
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/TLS 127.0.0.1:{local};branch=z9hG4bK{secrets.token_hex(8)}",
        "Max-Forwards: 70",
        f"From: <sip:0312345678@127.0.0.1:{local};transport=tls>;tag={secrets.token_hex(4)}",
        f"To: <{uri}>",
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
        f"Contact: <sip:0312345678@127.0.0.1:{local};transport=tls>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    peer.sendall(("\r\n".join(lines) + "\r\n\r\n" + body).encode())


def final_answer(peer: ssl.SSLSocket) -> tuple[int, str]:
    received = ""
    while True:
        received += peer.recv(65535).decode(errors="replace")
        for found in STATUS_LINE.finditer(received):
            if int(found.group(1)) >= 200:
                return int(found.group(1)), received[found.start() :]


def test_sip_over_tls_answers_options_and_a_call_with_the_configured_certificate(
    tls_worker: tuple[Worker, int, Path],
) -> None:
    worker, tls_port, cert = tls_worker
    assert f"TLS on 127.0.0.1:{tls_port}" in worker.output()
    with tls_peer(tls_port, cert) as peer:
        assert peer.version() in ("TLSv1.2", "TLSv1.3")
        request(peer, "OPTIONS", f"tls-options-{secrets.token_hex(4)}", tls_port)
        status, _text = final_answer(peer)
        assert status == 200
    offer = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 40998 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
    with tls_peer(tls_port, cert) as peer:
        request(peer, "INVITE", f"tls-call-{secrets.token_hex(4)}", tls_port, offer)
        status, answer = final_answer(peer)
        assert status == 200, answer
        assert "c=IN IP4 127.0.0.1" in answer
        contact = rf"Contact: <sip:[^>]*@127\.0\.0\.1:{tls_port};transport=tls>"
        assert re.search(contact, answer, re.IGNORECASE), answer
    assert worker.process.poll() is None, worker.output()


def test_tls_without_a_certificate_is_refused_by_the_configuration(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("sip:\n  tls_port: 5061\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sip\.tls_port needs sip\.tls_certificate"):
        load(config_file=config_file, environ={})


def test_a_missing_certificate_file_stops_the_worker_with_one_line(
    sip_settings: Settings, tmp_path: Path
) -> None:
    _require_espeak()
    config = {
        "data_dir": str(sip_settings.data_dir),
        "database_url": sip_settings.database_url,
        "redis_url": sip_settings.redis_url,
        "flows_dir": str(sip_settings.flows_dir),
        "sip": {
            "port": free_port(),
            "rtp_port": free_rtp_base(),
            "tls_port": free_port(),
            "tls_certificate": str(tmp_path / "nowhere.crt"),
            "tls_private_key": str(tmp_path / "nowhere.key"),
        },
    }
    config_file = tmp_path / "missing.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = subprocess.run(
        [*KOKAN, "--config", str(config_file), "sip"],
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "nowhere.crt is not a readable file" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("sip", "message"),
    [
        ({"port": 5060, "tls_port": 5060}, "TLS ports 5060-5060 overlap the SIP ports"),
        ({"rtp_port": 40000, "tls_port": 40002}, "overlap the RTP ports"),
        ({"workers": 3, "tls_port": 65534}, "TLS ports up to 65536 are above 65535"),
    ],
)
def test_tls_ports_that_collide_are_refused(
    tmp_path: Path, sip: dict[str, object], message: str
) -> None:
    paths = {"tls_certificate": "/etc/kokan/sip.crt", "tls_private_key": "/etc/kokan/sip.key"}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"sip": {**sip, **paths}}), encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(config_file=config_file, environ={})


def test_each_pool_worker_gets_its_own_tls_port() -> None:
    from ivr.sip_pool import layout, worker_command
    from kokan.config import SipSettings

    settings = SipSettings(
        workers=3,
        tls_port=5161,
        tls_certificate=Path("/etc/kokan/sip.crt"),
        tls_private_key=Path("/etc/kokan/sip.key"),
    )
    slots = layout(settings)
    assert [slot.tls_port for slot in slots] == [5161, 5162, 5163]
    command = worker_command(slots[2], None)
    assert command[command.index("--tls-port") + 1] == "5163"
