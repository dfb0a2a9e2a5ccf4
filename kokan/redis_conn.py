"""The one place Redis clients are made, so every process talks to Redis the same way."""

from __future__ import annotations

import redis

REDIS_CONNECT_TIMEOUT_S = 2
"""Fail fast at start-up and in /readyz when Redis is gone instead of hanging a worker."""

REDIS_SOCKET_TIMEOUT_S = 10
"""Long enough for a busy server, short enough that a dead one is noticed; rq's blocking
reads set their own timeouts on top of this."""

REDIS_HEALTH_CHECK_INTERVAL_S = 30
"""Re-check idle pooled connections so a restarted Redis is reconnected transparently."""


def connect(url: str) -> redis.Redis:
    """A bytes client (rq needs raw bytes); decode at the edge where text is meant."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        health_check_interval=REDIS_HEALTH_CHECK_INTERVAL_S,
    )


def redis_text(value: bytes | str | None) -> str:
    """A Redis answer as text: the client answers bytes (rq needs a bytes client), and a
    missing field or key (None) is the empty string."""
    if isinstance(value, bytes):
        return value.decode()
    return value or ""
