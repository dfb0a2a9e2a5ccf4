"""The http node's fetch against a real local server: whole-exchange deadline and size cap."""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from ivr.http_fetch import MAX_RESPONSE_BYTES, FetchError, fetch_json
from tests.local_http import serving


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "40")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)  # the server under test is slow on purpose
            return
        if self.path == "/huge":
            body = b'"' + b"x" * (MAX_RESPONSE_BYTES + 10) + b'"'
        else:
            body = b'{"status": "\\u767a\\u9001\\u6e08\\u307f"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serving(Handler) as url:
        yield url


def test_a_json_answer_is_parsed(server: str) -> None:
    assert fetch_json("GET", f"{server}/ok", 2.0) == {"status": "発送済み"}


def test_a_trickling_server_cannot_hold_the_caller_past_the_timeout(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"no complete answer within 0\.5 s"):
        fetch_json("GET", f"{server}/trickle", 0.5)
    # one more read (0.2 s apart) may land after the deadline; far less than the 8 s trickle
    assert time.monotonic() - started < 4.0


def test_an_answer_over_the_size_cap_is_refused(server: str) -> None:
    with pytest.raises(FetchError, match="larger than"):
        fetch_json("GET", f"{server}/huge", 5.0)
