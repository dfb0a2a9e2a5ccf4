"""Prometheus metrics; multi-process aware when gunicorn runs several workers."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter(
    "kokan_http_requests_total",
    "HTTP requests answered, by method, route and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "kokan_http_request_duration_seconds",
    "Time to answer an HTTP request, by route.",
    ["route"],
)

_RequestChildren = tuple[Any, Any]
_request_children: dict[tuple[str, str, int], _RequestChildren] = {}
"""Each (method, route, status)'s counter and latency children, looked up once per process:
`labels()` takes a lock and builds its key again on every call."""


def count_request(method: str, route: str, status: int, seconds: float) -> None:
    """One answered request in kokan_http_requests_total and its duration by route."""
    key = (method, route, status)
    children = _request_children.get(key)
    if children is None:
        children = (
            HTTP_REQUESTS.labels(method, route, str(status)),
            HTTP_LATENCY.labels(route),
        )
        _request_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def render() -> tuple[bytes, str]:
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
