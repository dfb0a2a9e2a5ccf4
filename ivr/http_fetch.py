"""The `http` node's JSON fetch, bounded in time and size so a slow API cannot hold a caller."""

from __future__ import annotations

import json
import time
from typing import Any

import requests

MAX_RESPONSE_BYTES = 256 * 1024
"""An order-status answer is a few hundred bytes; anything this large is not meant for a call."""
READ_CHUNK = 16 * 1024
USER_AGENT = "Kokan-IVR"


class FetchError(Exception):
    pass


def fetch_json(method: str, url: str, timeout: float) -> Any:
    """The timeout bounds the whole exchange, not each socket read: a server trickling bytes
    cannot keep a caller waiting past the node's timeout."""
    deadline = time.monotonic() + timeout
    with requests.request(
        method,
        url,
        timeout=timeout,
        stream=True,
        headers={"Accept": "application/json", "User-Agent": USER_AGENT},
        allow_redirects=False,
    ) as response:
        if response.status_code != 200:
            raise FetchError(f"{method} {url}: HTTP {response.status_code}")
        body = bytearray()
        while True:
            if time.monotonic() > deadline:
                raise FetchError(f"{method} {url}: no complete answer within {timeout:g} s")
            chunk = response.raw.read1(READ_CHUNK, decode_content=True)
            if not chunk:
                break
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                raise FetchError(f"{method} {url}: answer larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise FetchError(f"{method} {url}: not JSON ({exc})") from None
