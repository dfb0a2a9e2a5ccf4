"""A closed-loop HTTP load generator: N connections, each sending its next request when the
previous one is answered; every request signed as Twilio signs it, and signed before the
clock starts.

Two engines send the same requests: `run` (Python, aiohttp, always available) and `run_wrk`
(Debian's `wrk`, C, one thread, when it is installed). The Python one spends about as much
CPU per request as the server it measures (~0.4 ms, next to ~0.3 ms for a bare Flask
endpoint under gunicorn), so on a small machine it takes a large share of the cores from
the servers; wrk spends a tenth of that.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

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
    quantiles_ms: dict[float, float] = field(default_factory=dict)
    """Latency quantiles from a load generator that keeps only those (wrk), by fraction."""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, fraction: float) -> float:
        if fraction in self.quantiles_ms:
            return self.quantiles_ms[fraction]
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def p50(self) -> float:
        if 0.5 in self.quantiles_ms:
            return self.quantiles_ms[0.5]
        return statistics.median(self.latencies_ms)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)


ParamsFactory = Callable[[str], dict[str, str]]
"""account sid -> one request's form: a new call by default, an SMS for bench.intake."""


def signed_bodies(
    signed_url: str,
    auth_token: str,
    account_sid: str,
    total: int,
    make_params: ParamsFactory = new_call_params,
) -> list[tuple[str, str]]:
    """`total` distinct request bodies and their X-Twilio-Signature."""
    bodies = []
    for _ in range(total):
        params = make_params(account_sid)
        bodies.append((urlencode(params), twilio_signature(auth_token, signed_url, params)))
    return bodies


async def _run(url: str, bodies: list[tuple[str, str]], concurrency: int) -> Result:
    total = len(bodies)
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
    bodies = signed_bodies(signed_url, auth_token, account_sid, total, make_params)
    return asyncio.run(_run(url, bodies, concurrency))


WRK_SCRIPT = """
-- bench.loadgen: `total` pre-signed requests, each sent once, over wrk's connections; the
-- thread stops wrk when the last is answered and reports its own wall-clock time.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } kokan_bench_timespec;
int clock_gettime(int clk_id, kokan_bench_timespec *tp);
int getpid(void);
int kill(int pid, int sig);
]]
local clock = ffi.new("kokan_bench_timespec")
local function now()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end

local threads = {}
function setup(thread) threads[#threads + 1] = thread end

local bodies, signatures = {}, {}
local total, sent, answered, failed = 0, 0, 0, 0
started, finished, answered_total, failed_total, reused = 0, 0, 0, 0, 0

function init(args)
  total = tonumber(args[2])
  for line in io.lines(args[1]) do
    local signature, body = line:match("^(%S+) (.*)$")
    signatures[#signatures + 1] = signature
    bodies[#bodies + 1] = body
  end
end

function request()
  sent = sent + 1
  if sent == 1 then started = now() end
  local i = sent
  if i > #bodies then i = #bodies; reused = reused + 1 end
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["X-Twilio-Signature"] = signatures[i],
  }, bodies[i])
end

function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 then failed = failed + 1 end
  if answered == total then
    finished, answered_total, failed_total = now(), answered, failed
    wrk.thread:stop()
    ffi.C.kill(ffi.C.getpid(), 2)  -- SIGINT ends wrk's timed wait at once
  end
end

function done(summary, latency, requests)
  local t = threads[1]
  local e = summary.errors
  io.write(string.format("KOKAN-BENCH %d %d %.6f %d %d %d %d\\n",
    t:get("answered_total"), t:get("failed_total"), t:get("finished") - t:get("started"),
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, t:get("reused")))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    signed_url: str,
    auth_token: str,
    account_sid: str,
    total: int,
    concurrency: int,
    make_params: ParamsFactory = new_call_params,
    timeout_s: float = 600.0,
) -> Result:
    """The same closed loop as `run`, driven by wrk: one thread, `concurrency` connections,
    `total` distinct requests (a few more are signed for the requests still in flight when
    the last answer arrives, so none is ever sent twice)."""
    bodies = signed_bodies(signed_url, auth_token, account_sid, total + concurrency, make_params)
    with tempfile.TemporaryDirectory(prefix="kokan-wrk-") as folder:
        script, data = Path(folder) / "bench.lua", Path(folder) / "requests.txt"
        script.write_text(WRK_SCRIPT, encoding="utf-8")
        data.write_text(
            "".join(f"{signature} {body}\n" for body, signature in bodies), encoding="utf-8"
        )
        parts = urlsplit(url)
        completed = subprocess.run(
            [
                "wrk",
                "--threads", "1",
                "--connections", str(concurrency),
                "--duration", f"{int(timeout_s)}s",
                "--timeout", "30s",
                "--script", str(script),
                f"{parts.scheme}://{parts.netloc}{parts.path}",
                "--",
                str(data),
                str(total),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout_s + 30,
        )  # fmt: skip
    line = next(
        (row for row in completed.stdout.splitlines() if row.startswith("KOKAN-BENCH ")), None
    )
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed: {completed.stdout[-500:]} {completed.stderr[-500:]}")
    answered, failed, seconds, p50_us, p99_us, socket_errors, reused = line.split()[1:]
    if int(answered) != total or int(reused):
        raise RuntimeError(f"wrk sent {reused} requests twice or stopped early: {line}")
    return Result(
        requests=total,
        seconds=float(seconds),
        latencies_ms=[],
        errors=int(failed) + int(socket_errors),
        quantiles_ms={0.5: int(p50_us) / 1000, 0.99: int(p99_us) / 1000},
    )
