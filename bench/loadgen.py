"""A closed-loop HTTP load generator: N connections, each sending its next request when the
previous one is answered; every request signed as Twilio signs it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import aiohttp


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's documented scheme: URL + each sorted key and its value, HMAC-SHA1, base64."""
    payload = url + "".join(key + params[key] for key in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def new_call_params(account_sid: str) -> dict[str, str]:
    return {
        "CallSid": "CA" + secrets.token_hex(16),
        "AccountSid": account_sid,
        "From": "+8190" + str(secrets.randbelow(10**8)).zfill(8),
        "To": "+81312345678",
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }


@dataclass
class Result:
    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)


ParamsFactory = Callable[[str], dict[str, str]]
"""account sid -> one request's form: a new call by default, an SMS for bench.intake."""


async def _run(
    url: str,
    signed_url: str,
    auth_token: str,
    account_sid: str,
    total: int,
    concurrency: int,
    make_params: ParamsFactory = new_call_params,
) -> Result:
    bodies = []
    for _ in range(total):
        params = make_params(account_sid)
        bodies.append((urlencode(params), twilio_signature(auth_token, signed_url, params)))
    latencies: list[float] = []
    errors = 0
    cursor = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal cursor, errors
            while cursor < total:
                body, signature = bodies[cursor]
                cursor += 1
                started = time.perf_counter()
                async with session.post(
                    url,
                    data=body,
                    headers={
                        "Content-Type": "application/x-www-form-urlencoded",
                        "X-Twilio-Signature": signature,
                    },
                ) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return Result(total, elapsed, latencies, errors)


def run(
    url: str,
    signed_url: str,
    auth_token: str,
    account_sid: str,
    total: int,
    concurrency: int,
    make_params: ParamsFactory = new_call_params,
) -> Result:
    return asyncio.run(
        _run(url, signed_url, auth_token, account_sid, total, concurrency, make_params)
    )
