"""The `http` node's JSON fetch, bounded in time and size so a slow API cannot hold a caller."""

from __future__ import annotations

import json
from typing import Any

import requests

MAX_RESPONSE_BYTES = 256 * 1024
"""An order-status answer is a few hundred bytes; anything this large is not meant for a call."""
USER_AGENT = "Kokan-IVR"


class FetchError(Exception):
    pass


def fetch_json(method: str, url: str, timeout: float) -> Any:
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
        body = response.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
        if len(body) > MAX_RESPONSE_BYTES:
            raise FetchError(f"{method} {url}: answer larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise FetchError(f"{method} {url}: not JSON ({exc})") from None
