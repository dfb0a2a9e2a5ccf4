"""`kokan sip` given bad SIP on 127.0.0.1: an offer with no common codec, a BYE for a call it
never had, garbage datagrams and a broken INVITE. Each gets the answer the SIP RFCs name (or
none, for garbage) and the worker goes on answering calls. The peer is a UDP socket of the
test that speaks SIP as text, so each message is exactly as bad as the test says."""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Callable, Iterator

import pytest

from kokan.config import Settings
from kokan.db import Database
from tests.test_sip_calls import (
    MENU_FLOW,
    Worker,
    publish_flow,
    rtp_sink,
    sip_settings,
    start_worker,
)

pytestmark = pytest.mark.media  # real SIP peers: the PostgreSQL pass leaves them out (./run)

__all__ = ["rtp_sink", "sip_settings", "start_worker"]  # fixtures, used by name

ANSWER_WAIT_S = 5.0
"""pjsua answers within milliseconds on loopback; far longer is a worker that is not there."""
STATUS_LINE = re.compile(r"^SIP/2\.0 (\d{3}) ", re.MULTILINE)


class SipPeer:
    """One UDP socket on 127.0.0.1 that sends SIP text to the worker and reads its answers."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(ANSWER_WAIT_S)
        self.port = int(self.sock.getsockname()[1])

    def send(self, message: str | bytes) -> None:
        data = message.encode() if isinstance(message, str) else message
        self.sock.sendto(data, ("127.0.0.1", self.worker.port))

    def final_status(self) -> tuple[int, str]:
        """The first final answer (>= 200): provisional ones (100 Trying) are skipped."""
        while True:
            data, _ = self.sock.recvfrom(65535)
            text = data.decode(errors="replace")
            found = STATUS_LINE.search(text)
            if found and int(found.group(1)) >= 200:
                return int(found.group(1)), text

    def request(
        self, method: str, call_id: str, *, body: str = "", cseq: int = 1, to_tag: str = ""
    ) -> str:
        uri = f"sip:kokan@127.0.0.1:{self.worker.port}"
        headers = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: <sip:0312345678@127.0.0.1:{self.port}>;tag={secrets.token_hex(4)}",
            f"To: <{uri}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:0312345678@127.0.0.1:{self.port}>",
        ]
        if body:
            headers.append("Content-Type: application/sdp")
        headers.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(headers) + "\r\n\r\n" + body

    def close(self) -> None:
        self.sock.close()


def sdp(port: int, payloads: str, rtpmaps: str) -> str:
    return (
        "v=0\r\n"
        "o=- 1 1 IN IP4 127.0.0.1\r\n"
        "s=-\r\n"
        "c=IN IP4 127.0.0.1\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP {payloads}\r\n"
        f"{rtpmaps}"
        "a=sendrecv\r\n"
    )


@pytest.fixture
def peer(
    start_worker: Callable[..., Worker], sip_settings: Settings, database: Database
) -> Iterator[SipPeer]:
    publish_flow(database, sip_settings, MENU_FLOW)
    worker = start_worker()
    made = SipPeer(worker)
    try:
        yield made
    finally:
        made.close()


def still_answers(peer: SipPeer) -> None:
    """The worker is alive and well: OPTIONS gets 200 (pjsua answers it itself)."""
    peer.send(peer.request("OPTIONS", f"alive-{secrets.token_hex(6)}"))
    status, text = peer.final_status()
    assert status == 200, text
    assert peer.worker.process.poll() is None, peer.worker.output()


def test_an_offer_with_no_common_codec_is_refused_with_488(peer: SipPeer) -> None:
    offer = sdp(peer.port + 2, "18", "a=rtpmap:18 G729/8000\r\n")
    peer.send(peer.request("INVITE", f"nocodec-{secrets.token_hex(6)}", body=offer))
    status, text = peer.final_status()
    assert status == 488, text
    still_answers(peer)


def test_a_bye_for_a_call_kokan_never_had_gets_481(peer: SipPeer) -> None:
    # as inside a dialog: the To tag a 200 OK would have given, for a call that never was
    bye = peer.request("BYE", f"nobody-{secrets.token_hex(6)}", cseq=2, to_tag="gone")
    peer.send(bye)
    status, text = peer.final_status()
    assert status == 481, text
    still_answers(peer)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00\xff" * 700,
        "これはSIPではありません\r\n\r\n".encode(),
        b"INVITE\r\n\r\n",
        b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n",  # an answer to nothing Kokan asked
        b"INVITE sip:kokan@127.0.0.1 SIP/2.0\r\nContent-Length: 99999\r\n\r\nv=0",
    ],
)
def test_garbage_datagrams_are_dropped_and_the_worker_goes_on(
    peer: SipPeer, garbage: bytes
) -> None:
    peer.send(garbage)
    still_answers(peer)


def test_an_invite_with_a_broken_body_is_refused_and_nothing_is_left_over(
    peer: SipPeer,
) -> None:
    call_id = f"broken-{secrets.token_hex(6)}"
    peer.send(peer.request("INVITE", call_id, body="v=0\r\nm=audio nope RTP/AVP x\r\n"))
    status, text = peer.final_status()
    assert 400 <= status < 500, text
    still_answers(peer)
    assert "Traceback" not in peer.worker.output()
