"""Liveness, readiness and metrics for load balancers, orchestrators and Prometheus."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response

from kokan.metrics import render
from kokan.wiring import database, redis_client

blueprint = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@blueprint.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@blueprint.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    checks: dict[str, str] = {}
    try:
        database().ping()
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database check failed: %s", type(exc).__name__)
        checks["database"] = f"failed: {type(exc).__name__}"
    try:
        redis_client().ping()
        checks["redis"] = "ok"
    except Exception as exc:
        log.warning("readiness: redis check failed: %s", type(exc).__name__)
        checks["redis"] = f"failed: {type(exc).__name__}"
    ready = all(result == "ok" for result in checks.values())
    return {"status": "ready" if ready else "not-ready", "checks": checks}, 200 if ready else 503


@blueprint.get("/metrics")
def metrics() -> Response:
    body, content_type = render()
    return Response(body, content_type=content_type)
