"""The baseline: a bare Flask endpoint that returns fixed TwiML, served the same way as Kokan."""

from __future__ import annotations

import os
from pathlib import Path

import redis
from flask import Flask, Response

from kokan.redis_round_trip import RoundTrip

TWIML_FILE_ENV = "BENCH_TWIML_FILE"
REDIS_URL_ENV = "BENCH_REDIS_URL"
"""When set, each answer first waits for one PING to that Redis, as Kokan's webhook waits for
its one round trip: the floor any Redis-backed webhook stands on (bench.ivr_webhook
--redis-floor)."""


def create_app() -> Flask:
    app = Flask(__name__)
    body = Path(os.environ[TWIML_FILE_ENV]).read_text(encoding="utf-8")
    redis_url = os.environ.get(REDIS_URL_ENV)
    round_trip = RoundTrip(redis.Redis.from_url(redis_url)) if redis_url else None

    @app.post("/webhooks/twilio/voice")
    def voice() -> Response:
        if round_trip is not None:
            round_trip.send([("PING",)])
        return Response(body, content_type="application/xml")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
